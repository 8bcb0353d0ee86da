"""On Postgres, build_mart stages the dbt project's window (var loopline_lookback_days) of landing, not 30 days.

A tiny string-keyed CSV landing of 50 days; a dbt project whose var says 45. The staged table holds exactly the
45 days ending on ds, so a model reading 45 days sees all of them.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest

from pipelines.features.config import LandingConfig
from pipelines.features.dbt import staging_window_days
from pipelines.features.warehouse import PostgresWarehouse
from support import services

pytestmark = pytest.mark.integration

DS = date(2025, 6, 30)


@pytest.fixture
def database():
    name = f"llwindow{uuid.uuid4().hex[:8]}"
    admin = services.postgres_admin()
    admin.execute(f'create database "{name}"')
    try:
        yield f"{services.POSTGRES}/{name}"
    finally:
        admin.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def test_a_window_var_of_45_stages_45_days(tmp_path, database):
    import psycopg

    landing = LandingConfig(path=str(tmp_path / "landing"), format="csv", partition="day_{ds}", ready_marker=None,
                            tables={"readings": {"file": "readings", "columns": {"station_id": "string",
                                                                                "level": "float64"}}})
    for offset in range(50):
        partition = tmp_path / "landing" / f"day_{DS - timedelta(days=offset)}"
        partition.mkdir(parents=True)
        (partition / "readings.csv").write_text(f"station_id,level\n007,{offset}.5\n")
    (tmp_path / "dbt").mkdir()
    (tmp_path / "dbt" / "dbt_project.yml").write_text("name: levels\nvars:\n  loopline_lookback_days: 45\n")

    window = staging_window_days(tmp_path / "dbt")
    PostgresWarehouse(database, schema="levels").stage_landing(landing, tmp_path / "landing", DS, window_days=window)

    with psycopg.connect(database) as connection:
        days = connection.execute("select min(ds), max(ds), count(distinct ds) from levels_landing.readings").fetchone()
        keys = {row[0] for row in connection.execute("select station_id from levels_landing.readings")}
    assert window == 45
    assert days == (DS - timedelta(days=44), DS, 45)
    assert keys == {"007"}  # a string key staged as text
