"""Airflow's own API app with the Loopline plugin, driven in-process, and the real ways to be someone in it.

Shared by the page's integration tests and its fault tests (``tests/faults/test_page_security.py``): nothing
here is a stand-in. Tokens are signed by the configured auth manager (SimpleAuthManager) with Airflow's own
JWT generator and key; a DAG is hidden from a user by putting it in a DAG bundle owned by a team the user is not
in, which is how Airflow 3 itself restricts DAGs (``get_authorized_dag_ids`` reads the bundle's team).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.core.settings import get_settings


@contextmanager
def airflow_client(data_home: Path, environ: dict[str, str] | None = None) -> Iterator:
    """A TestClient of Airflow's API app (plugins included) whose Loopline page reads ``data_home``, logged in
    as ``admin`` through ``POST /auth/token``; the environment is restored afterwards."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    saved = dict(os.environ)
    os.environ.update({"LOOPLINE_HOME": str(data_home), **(environ or {})})
    get_settings.cache_clear()
    try:
        with TestClient(create_app("core"), follow_redirects=False) as client:
            passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
            password = json.loads(passwords.read_text())["admin"]
            token = client.post("/auth/token", json={"username": "admin", "password": password}).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        purge_cached_app()


def token_for(username: str, role: str | None, teams: Iterable[str] = (), expires_in_s: int = 3600) -> str:
    """A JWT for a SimpleAuthManager user, signed by the running app's auth manager with the real key, as
    ``/auth/token`` issues it. ``expires_in_s`` below zero gives a token that expired that long ago."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username=username, role=role, teams=list(teams))
    return get_auth_manager().generate_jwt(user, expiration_time_in_seconds=expires_in_s)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_loopline_dags() -> list[str]:
    """Every DAG of ``dags/configs/`` written to the metadata database, as the dag-processor would: the page
    shows only what the auth manager lets a user read, and it grants only DAGs that are there."""
    from pipelines.templates import config_files, load_config
    from support.airflow_helpers import build_and_register

    return [build_and_register(load_config(path)).dag_id for path in config_files()]


@contextmanager
def dags_of_team(team: str, dag_ids: Iterable[str]) -> Iterator[None]:
    """Move ``dag_ids`` into a DAG bundle owned by ``team`` for the duration: a user outside the team no longer
    may read them (admins still may). Their bundles are put back afterwards."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.team import Team, dag_bundle_team_association_table
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select, update

    bundle_name = f"loopline-test-{team}"
    dag_ids = list(dag_ids)
    with create_session() as session:
        before = dict(session.execute(select(DagModel.dag_id, DagModel.bundle_name)
                                      .where(DagModel.dag_id.in_(dag_ids))).all())
        assert sorted(before) == sorted(dag_ids), f"not in the metadata database: {set(dag_ids) - set(before)}"
        owner = Team(name=team)
        bundle = DagBundleModel(name=bundle_name)
        bundle.teams.append(owner)
        session.add_all([owner, bundle])
        session.flush()
        session.execute(update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(bundle_name=bundle_name))
    try:
        yield
    finally:
        with create_session() as session:
            for dag_id, name in before.items():
                session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(bundle_name=name))
            session.flush()
            # SQLite does not enforce the foreign keys' ON DELETE CASCADE: the association goes first.
            session.execute(delete(dag_bundle_team_association_table)
                            .where(dag_bundle_team_association_table.c.dag_bundle_name == bundle_name))
            session.execute(delete(DagBundleModel).where(DagBundleModel.name == bundle_name))
            session.execute(delete(Team).where(Team.name == team))
