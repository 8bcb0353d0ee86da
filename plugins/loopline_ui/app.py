"""The FastAPI app of the Loopline page, behind Airflow's login.

Authentication is Airflow's own: the UI's login sets the JWT cookie ``_token`` (an API client sends
``Authorization: Bearer <token>`` instead), and :func:`airflow.api_fastapi.core_api.security.get_user` has
the configured auth manager validate it, exactly as for Airflow's own routes. Plugin apps are not protected
by Airflow by themselves, so every route here depends on :func:`viewer`:

- no token, an expired or a forged one: a browser asking for the page is redirected to Airflow's login page
  (which comes back here afterwards); anything else gets ``401``/``403`` as JSON;
- a valid token: the auth manager must allow the custom view ``Loopline`` (``is_authorized_custom_view``),
  else ``403``; the runs shown are limited to the DAGs the user may read.

Routes: ``/`` the page, ``/api/summary`` its data as JSON, ``/reports/<path>`` an Evidently report from the
data home's ``reports/`` folder, ``POST /api/ask`` a question to the docs assistant, ``POST /api/feedback`` a
thumb on an answer's trace, ``/icon.svg`` the navigation icon.

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
        raise LoginRequired(exc.status_code, str(exc.detail)) from None
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
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def _summary(user: Any) -> dict[str, Any]:
    """The page's data for ``user`` (runs only of the DAGs the user may read), in one metadata DB session."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.utils.session import create_session

    from pipelines import cockpit

    with create_session() as session:
        allowed = get_auth_manager().get_authorized_dag_ids(user=user, session=session)
        return cockpit.gather(allowed_dag_ids=set(allowed), session=session)


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

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, user: Any = Depends(viewer)) -> HTMLResponse:
        from loopline_ui.page import render

        summary = await run_in_threadpool(_summary, user)
        base = request.scope.get("root_path", "").rstrip("/")
        html = render(summary, base=base, airflow_base=base.removesuffix("/loopline"), user=user.get_name())
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/api/summary")
    async def summary(user: Any = Depends(viewer)) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(_summary, user), headers={"Cache-Control": "no-store"})

    @app.get("/reports/{path:path}")
    async def report(path: str, user: Any = Depends(viewer)) -> FileResponse:
        from pipelines.core.home import DataHome

        root = DataHome().reports.resolve()
        target = (root / path).resolve()
        if target.suffix != ".html" or not target.is_relative_to(root) or not target.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no report {path!r} under the data home's reports/")
        return FileResponse(target, media_type="text/html")

    @app.post("/api/ask")
    async def ask(body: AskRequest, user: Any = Depends(viewer)) -> JSONResponse:
        """The docs assistant's answer, as ``python -m pipelines.assistant ask --json`` prints it."""
        result = await _run_assistant(_ask, body.question)
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.post("/api/feedback")
    async def feedback(body: FeedbackRequest, user: Any = Depends(viewer)) -> JSONResponse:
        """Record the logged-in user's thumb (``user_thumbs``) on the answer's trace."""
        result = await _run_assistant(_feedback, body, user.get_name())
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.get("/icon.svg")
    async def icon() -> Response:  # the navigation shows it before any login
        return Response(ICON, media_type="image/svg+xml")

    return app
