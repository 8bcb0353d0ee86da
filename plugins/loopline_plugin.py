"""The Loopline plugin: a page in the Airflow UI with each use case's champion model, drift verdicts, index
versions and asset-triggered runs (``plugins/loopline_ui``; data from ``pipelines.cockpit``).

Airflow's api-server mounts the page's FastAPI app at ``/loopline`` and shows it in its navigation under
*Loopline*. The scheduler, dag-processor and triggerer load this file too, so it imports nothing heavy: the
app itself is built on its first request.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from loopline_ui import URL_PREFIX, LazyApp


class LooplinePlugin(AirflowPlugin):
    name = "loopline"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Loopline"}]
    external_views = [{
        "name": "Loopline",
        "href": f"{URL_PREFIX}/",
        "url_route": "loopline",  # the UI shows the page at /plugin/loopline, in a frame of its own layout
        "destination": "nav",
        "nav_top_level": True,
        "icon": f"{URL_PREFIX}/icon.svg",
    }]
