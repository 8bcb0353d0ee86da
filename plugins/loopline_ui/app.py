"""The FastAPI app of the Loopline page, behind Airflow's login.

Authentication is Airflow's own: the UI's login sets the JWT cookie ``_token`` (an API client sends
``Authorization: Bearer <token>`` instead), and :func:`airflow.api_fastapi.core_api.security.get_user` has
the configured auth manager validate it, exactly as for Airflow's own routes. Plugin apps are not protected
by Airflow by themselves, so every route here depends on :func:`viewer`:

- no token, an expired or a forged one: a browser asking for the page is redirected to Airflow's login page
  (which comes back here afterwards); anything else gets ``401`` as JSON (Airflow's own routes answer a forged
  token with ``403``; here ``403`` means only "logged in, but not allowed", so a client knows to log in again);
- a valid token: the auth manager must allow the custom view ``Loopline`` (``is_authorized_custom_view``),
  else ``403``. What the page shows is limited to the DAGs the user may read (``get_authorized_dag_ids``, see
  :func:`pipelines.cockpit.gather`); asking the assistant and giving feedback need read access to the
  assistant's DAG, a report read access to a DAG that writes it; else ``403``.

Routes: ``/`` the page, ``/api/summary`` its data as JSON, ``/reports/<path>`` an Evidently report from the
data home's ``reports/`` folder, ``POST /api/ask`` a question to the docs assistant, ``POST /api/feedback`` a
thumb on an answer's trace, ``/icon.svg`` the navigation icon.

A report is served with ``Content-Security-Policy: sandbox allow-scripts``: Evidently's report runs its
scripts, but in an opaque origin, so they cannot call Airflow's API with the viewer's login cookie or read
this app's pages. Every response carries ``X-Content-Type-Options: nosniff``.

The two POST routes take JSON only: a form on another site cannot send it without CORS, and the login cookie
is not sent on cross-site requests (``SameSite=Lax``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StrictBool

from loopline_ui.page import ASK_ASSISTANT

log = logging.getLogger(__name__)

RESOURCE_NAME = "Loopline"
REPORT_HEADERS = {
    # Scripts run (Evidently draws its plots with them) but in an opaque origin: no cookie, no same-origin access.
    "Content-Security-Policy": "sandbox allow-scripts",
    "Cache-Control": "private, no-store",  # a report is served only after a permission check: never from a cache
    "Referrer-Policy": "no-referrer",
}
# The page runs only its own inline script and is framed only by Airflow's UI (same origin).
PAGE_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": "frame-ancestors 'self'"}
ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#0d9488"
stroke-width="2.2" stroke-linecap="round"><path d="M4 12a8 8 0 0 1 14-5.3M20 12a8 8 0 0 1-14 5.3"/>
<path d="M18 2.5v4.2h-4.2M6 21.5v-4.2h4.2"/></svg>"""

_bearer = HTTPBearer(auto_error=False)


class LoginRequired(Exception):
    """No valid Airflow session: a browser is sent to the login page, an API client gets the status."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail


async def viewer(request: Request, bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Any:
    """The logged-in Airflow user, validated by Airflow's auth manager and allowed to see this page."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    try:
        user = await get_user(request, None, bearer)
    except HTTPException as exc:
        # Airflow answers a forged or unreadable token with 403 ("Invalid JWT token"): for this app it is no
        # login at all (401, or the login page for a browser); 403 is kept for a user who lacks a permission.
        raise LoginRequired(status.HTTP_401_UNAUTHORIZED, str(exc.detail)) from None
    allowed = await run_in_threadpool(get_auth_manager().is_authorized_custom_view, method="GET",
                                      resource_name=RESOURCE_NAME, user=user)
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"user {user.get_name()} may not see the Loopline page")
    return user


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _login_required(request: Request, exc: LoginRequired) -> Response:
    if _wants_html(request) and request.method == "GET":
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)),
                                status_code=status.HTTP_302_FOUND)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers={"WWW-Authenticate": "Bearer"})


def readable_dag_ids(user: Any, session=None) -> set[str]:
    """The DAGs ``user`` may read, as Airflow's auth manager says (teams, FAB roles, …)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.utils.session import create_session

    if session is not None:
        return set(get_auth_manager().get_authorized_dag_ids(user=user, session=session))
    with create_session() as own:
        return set(get_auth_manager().get_authorized_dag_ids(user=user, session=own))


def _ask_dag_id() -> str:
    """The DAG of the Ask tab's assistant (the config :data:`loopline_ui.page.ASK_ASSISTANT`)."""
    from pipelines.templates import load_named

    return load_named(ASK_ASSISTANT, "assistant").dag_id


def _summary(user: Any) -> dict[str, Any]:
    """The page's data for ``user`` (only what the DAGs the user may read show), in one metadata DB session,
    and ``ask``: whether the user may ask the assistant (``{"dag_id", "allowed"}``)."""
    from airflow.utils.session import create_session

    from pipelines import cockpit

    with create_session() as session:
        allowed = readable_dag_ids(user, session)
        summary = cockpit.gather(allowed_dag_ids=allowed, session=session)
    try:
        dag_id = _ask_dag_id()
    except Exception:  # a broken config: the page lists its error, and asking answers 503 with it
        dag_id = None
    summary["ask"] = {"dag_id": dag_id, "allowed": dag_id is None or dag_id in allowed}
    return summary


def _assistant_dag_id(user: Any) -> str:
    """The DAG of the Ask tab's assistant, when ``user`` may read it; raises 403 (or 503: no such config)."""
    try:
        dag_id = _ask_dag_id()
    except Exception as exc:
        raise _http_error(exc) from None
    if dag_id not in readable_dag_ids(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"user {user.get_name()} may not read the DAG {dag_id}, so may not ask its assistant or "
                            f"give feedback on its answers: ask an Airflow admin for read access to {dag_id}")
    return dag_id


async def asker(user: Any = Depends(viewer)) -> Any:
    """A logged-in user who may also read the assistant's DAG (``POST /api/ask`` and ``/api/feedback``)."""
    await run_in_threadpool(_assistant_dag_id, user)
    return user


def _report_file(path: str, user: Any):
    """The report at ``path`` below ``reports/``, when it lies there and ``user`` may read a DAG that writes it.

    ``..`` (also percent-encoded: the route sees it decoded), an absolute path, a symlink that leads out of
    ``reports/``, a file that is not ``.html`` and a folder no pipeline writes to: 404. A report of a DAG the
    user may not read: 403, whether the file exists or not.
    """
    from pipelines import cockpit
    from pipelines.core.home import DataHome

    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"no report {path[:300]!r} under the data home's reports/")
    root = DataHome().reports.resolve()
    try:
        target = (root / path).resolve()  # follows symlinks: where the file really is decides
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        raise missing from None
    if target.suffix != ".html" or not target.is_relative_to(root):
        raise missing
    cases, _ = cockpit.use_cases()
    owners = cockpit.report_owners(target.relative_to(root).as_posix(), cases)
    if not owners:
        raise missing
    if not owners & readable_dag_ids(user):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"user {user.get_name()} may not read {' or '.join(sorted(owners))}, which writes this "
                            "report: ask an Airflow admin for read access to that DAG")
    if not target.is_file():
        raise missing
    return target


class AskRequest(BaseModel):
    """``POST /api/ask``: the question (checked by the assistant: empty or too long is refused with a 400)."""

    question: str


class FeedbackRequest(BaseModel):
    """``POST /api/feedback``: thumbs up (``up: true``) or down on the trace an answer returned."""

    trace_id: str = Field(min_length=1, max_length=200)
    up: StrictBool
    comment: str | None = None


# One answer at a time per api-server process: the model decodes on one CPU thread, and two answers at once
# would only both be slower (and could both pass a nearly spent daily budget).
_ANSWERING = threading.Lock()


def _http_error(exc: Exception) -> HTTPException:
    """An assistant's error as an HTTP error whose ``detail`` is its message, scrubbed of the environment's
    secrets: 400 for what the person asking can fix (the question, the feedback), 429 for a spent daily
    budget, 503 for what an operator must fix (no live index, prompt, model or config), 500 for the rest."""
    from pipelines import cockpit
    from pipelines.assistant.model import GeneratorUnavailable
    from pipelines.assistant.prompts import PromptUnavailable
    from pipelines.assistant.query_log import BudgetExceeded
    from pipelines.assistant.retrieval import AssistantConfigError, IndexUnavailable
    from pipelines.core.errors import NotRetryable
    from pipelines.templates import PipelineConfigError

    message = str(exc)
    if isinstance(exc, BudgetExceeded):
        code = status.HTTP_429_TOO_MANY_REQUESTS
    elif isinstance(exc, (IndexUnavailable, PromptUnavailable, GeneratorUnavailable, AssistantConfigError,
                          PipelineConfigError, FileNotFoundError)):
        code = status.HTTP_503_SERVICE_UNAVAILABLE
    elif isinstance(exc, NotRetryable):  # QuestionRejected, FeedbackRejected (no such trace, a long comment)
        code = status.HTTP_400_BAD_REQUEST
    else:
        log.error("Loopline page: the assistant failed", exc_info=exc)
        first_line = (message.strip().splitlines() or [""])[0][:300]
        code = status.HTTP_500_INTERNAL_SERVER_ERROR
        message = f"the assistant failed: {type(exc).__name__}: {first_line}"
    return HTTPException(code, cockpit.scrub(message, cockpit.secrets_of()))


def _ask(question: str) -> dict[str, Any]:
    from pipelines.assistant.answer import answer
    from pipelines.templates import load_named

    config = load_named(ASK_ASSISTANT, "assistant")
    with _ANSWERING:
        return answer(question, config, origin="user").to_json()


def _feedback(body: FeedbackRequest, user_name: str) -> dict[str, Any]:
    from pipelines.assistant.feedback import record_feedback

    assessment = record_feedback(body.trace_id, body.up, body.comment, source_id=user_name)
    return {"trace_id": body.trace_id, "up": body.up, "assessment_id": getattr(assessment, "assessment_id", None),
            "source_id": user_name}


async def _run_assistant(call, *args) -> dict[str, Any]:
    """``call(*args)`` in the threadpool (it blocks: a model, MLflow, files); its errors as HTTP errors."""
    try:
        return await run_in_threadpool(call, *args)
    except Exception as exc:
        raise _http_error(exc) from None


def create_app() -> FastAPI:
    app = FastAPI(title="Loopline", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(LoginRequired, _login_required)

    @app.middleware("http")
    async def no_sniffing(request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"  # a report or JSON is never run as something else
        return response

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, user: Any = Depends(viewer)) -> HTMLResponse:
        from loopline_ui.page import render

        summary = await run_in_threadpool(_summary, user)
        base = request.scope.get("root_path", "").rstrip("/")
        html = render(summary, base=base, airflow_base=base.removesuffix("/loopline"), user=user.get_name())
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @app.get("/api/summary")
    async def summary(user: Any = Depends(viewer)) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(_summary, user), headers={"Cache-Control": "no-store"})

    @app.get("/reports/{path:path}")
    async def report(path: str, user: Any = Depends(viewer)) -> FileResponse:
        target = await run_in_threadpool(_report_file, path, user)
        return FileResponse(target, media_type="text/html", headers=REPORT_HEADERS)

    @app.post("/api/ask")
    async def ask(body: AskRequest, user: Any = Depends(asker)) -> JSONResponse:
        """The docs assistant's answer, as ``python -m pipelines.assistant ask --json`` prints it."""
        result = await _run_assistant(_ask, body.question)
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.post("/api/feedback")
    async def feedback(body: FeedbackRequest, user: Any = Depends(asker)) -> JSONResponse:
        """Record the logged-in user's thumb (``user_thumbs``) on the answer's trace."""
        result = await _run_assistant(_feedback, body, user.get_name())
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.get("/icon.svg")
    async def icon() -> Response:  # the navigation shows it before any login
        return Response(ICON, media_type="image/svg+xml")

    return app
