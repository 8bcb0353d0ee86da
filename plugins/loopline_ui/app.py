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
data home's ``reports/`` folder, ``/icon.svg`` the navigation icon.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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

    @app.get("/icon.svg")
    async def icon() -> Response:  # the navigation shows it before any login
        return Response(ICON, media_type="image/svg+xml")

    return app
