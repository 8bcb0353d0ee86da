"""A second use case unlike churn, built in code: daily air quality per monitoring station.

Where it differs from churn, on purpose (issue 18): the entity key is a string (``"007"`` and ``"0042"`` stay
text), the landing is CSV in partitions named by the bare day (``2024-01-01/``) with file names other than the
table names, the target is a number (tomorrow's daily mean PM2.5: a regression), the training window is over a
year, and there is no ``tenure_days`` or any other churn column.

Each day ``D`` lands two files under ``<root>/<D>/`` (then ``_SUCCESS``):

- ``sensor_readings.csv`` (table ``readings``): ``station_id, read_ts, pm25, wind_ms, wind_forecast_ms``, four
  readings a station a day (00, 06, 12, 18 UTC). ``wind_forecast_ms`` is the forecast of the next day's wind;
- ``daily_outcomes.csv`` (table ``outcomes``): ``station_id, observed_at, pm25_daily``, the day's official mean,
  stamped at 20:00 UTC of the day (before 23:59:59: the label of day D reads day D-1's features).

The signal is learnable and beats "today's value": ``pm25_daily(D) = base + season(D) + a(D) - 2.5 (wind(D) - 3)``
with ``a`` an AR(1) anomaly; yesterday's features hold yesterday's level and the forecast of today's wind, which
the previous-value baseline ignores. From ``episode_start`` on, a haze episode raises the level by 35 and makes the
anomaly five times as noisy: the model's predictions shift and its error on late labels grows.

:func:`expected_features` is the fixture's mart (``tests/fixtures/usecases/airquality/dbt``) computed in pandas, so
the history before the days the features DAG runs can be published without running dbt once per day; the test
checks that dbt gives exactly these rows on the days it does run.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from pipelines.core.settings import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "usecases" / "airquality"
CONFIGS = FIXTURE / "configs"
STATIONS = ["007", "ST-12", "B3", "N-40", "X9", "0042"]
BASE = [20.0, 35.0, 15.0, 45.0, 25.0, 30.0]
HOURS = (0, 6, 12, 18)
LOOKBACK_DAYS = 7  # vars.loopline_lookback_days of the fixture's dbt project
READINGS_FILE, OUTCOMES_FILE = "sensor_readings", "daily_outcomes"
SEED = 18


def _truth(first: date, days: int, episode_start: date | None):
    """Per day and station: the daily mean PM2.5 and the wind, for ``days + 1`` days (the last day's wind is
    the forecast target of the day before)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    n = len(STATIONS)
    wind = np.clip(3.0 + 2.0 * rng.standard_normal((days + 1, n)), 0.3, None)
    anomaly = np.zeros(n)
    pm25 = np.zeros((days + 1, n))
    for i in range(days + 1):
        day = first + timedelta(days=i)
        hazy = episode_start is not None and day >= episode_start
        anomaly = 0.8 * anomaly + (15.0 if hazy else 3.0) * rng.standard_normal(n)
        season = 8.0 * math.cos(2 * math.pi * day.timetuple().tm_yday / 365.25)
        pm25[i] = np.clip(np.asarray(BASE) + season + anomaly - 2.5 * (wind[i] - 3.0) + (35.0 if hazy else 0.0),
                          1.0, None)
    return pm25, wind, rng


def land_days(root: Path, first: date, days: int, *, episode_start: date | None = None) -> list[date]:
    """Land ``days`` days from ``first`` under ``root`` (CSV, partitions ``<day>/``, ``_SUCCESS`` last)."""
    pm25, wind, rng = _truth(first, days, episode_start)
    landed = []
    for i in range(days):
        day = first + timedelta(days=i)
        partition = root / day.isoformat()
        partition.mkdir(parents=True, exist_ok=True)
        readings = ["station_id,read_ts,pm25,wind_ms,wind_forecast_ms"]
        outcomes = ["station_id,observed_at,pm25_daily"]
        for s, station in enumerate(STATIONS):
            for hour in HOURS:
                readings.append(f"{station},{day}T{hour:02d}:00:00Z,{pm25[i, s] + rng.normal(0, 2.0):.2f},"
                                f"{max(0.0, wind[i, s] + rng.normal(0, 0.3)):.2f},"
                                f"{max(0.0, wind[i + 1, s] + rng.normal(0, 0.5)):.2f}")
            outcomes.append(f"{station},{day}T20:00:00Z,{pm25[i, s]:.2f}")
        (partition / f"{READINGS_FILE}.csv").write_text("\n".join(readings) + "\n")
        (partition / f"{OUTCOMES_FILE}.csv").write_text("\n".join(outcomes) + "\n")
        (partition / "_SUCCESS").write_text("")
        landed.append(day)
    return landed


def _readings(root: Path, day: date):
    import pandas as pd

    path = root / day.isoformat() / f"{READINGS_FILE}.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"station_id": str}).assign(ds=day)


def expected_features(root: Path, day: date):
    """The fixture's mart for ``day`` in pandas: one row per station seen on ``day``.

    Returns:
        Columns ``station_id``, ``ds`` (date), ``feature_timestamp`` (``ds`` 23:59:59 UTC), ``readings_rows``,
        ``readings_rows_7d``, then ``<column>_mean`` and ``<column>_max`` of ``pm25``, ``wind_ms`` and
        ``wind_forecast_ms``: the mart's columns in its order, sorted by station.
    """
    import pandas as pd

    frames = [f for offset in range(LOOKBACK_DAYS) if (f := _readings(root, day - timedelta(days=offset))) is not None]
    window = pd.concat(frames, ignore_index=True)
    today = window[window["ds"] == day]
    out = today.groupby("station_id", sort=True).agg(
        readings_rows=("pm25", "size"),
        pm25_mean=("pm25", "mean"), pm25_max=("pm25", "max"),
        wind_ms_mean=("wind_ms", "mean"), wind_ms_max=("wind_ms", "max"),
        wind_forecast_ms_mean=("wind_forecast_ms", "mean"), wind_forecast_ms_max=("wind_forecast_ms", "max"))
    out.insert(1, "readings_rows_7d", window.groupby("station_id").size())
    out = out.reset_index()
    out.insert(1, "ds", day)
    out.insert(2, "feature_timestamp", pd.Timestamp(datetime.combine(day, time(23, 59, 59), tzinfo=UTC)))
    return out.astype({"readings_rows": "int64", "readings_rows_7d": "int64"})


def publish_history(settings, features_config, days: list[date]) -> None:
    """Publish the mart of ``days`` where the features DAG publishes it, without dbt (the history before the DAG
    runs); what the features DAG would do for them, minus Great Expectations and the online store."""
    from pipelines.features.feast_store import publish_offline_day
    from pipelines.features.steps import FeaturePaths

    landing = settings.resolve(features_config.landing.path)
    offline = FeaturePaths(features_config, settings).offline
    for day in days:
        publish_offline_day(expected_features(landing, day), offline, day)
