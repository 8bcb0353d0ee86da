"""The Loopline page of the Airflow UI: an ASGI app built on its first request (see :mod:`loopline_ui.app`)."""

from __future__ import annotations

URL_PREFIX = "/loopline"


class LazyApp:
    """An ASGI app that builds :func:`loopline_ui.app.create_app` when the first request comes.

    Every Airflow process loads the plugin; only the api-server serves requests, so only it imports FastAPI
    and, inside the request handlers, MLflow and the rest.
    """

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            from loopline_ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)
