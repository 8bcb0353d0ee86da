"""Point-in-time correctness: a label never sees a feature value stamped after its own time.

Runs the real Feast join (file offline store) on a two-row fixture in its own project.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core.settings import LooplineSettings
from pipelines.demo.simulator import MART_COLUMNS
from pipelines.features import feast_store
from pipelines.training.dataset import join_features

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def feature_row(day: date, sessions: int) -> dict:
    return {"customer_id": 1, "ds": day,
            "feature_timestamp": pd.Timestamp(day).tz_localize("UTC") + pd.Timedelta("23:59:59"),
            "tenure_days": 100, "plan": "monthly", "region": "north", "monthly_charges": 50.0, "sessions_7d": sessions,
            "sessions_30d": sessions, "purchases_30d": 0, "spend_30d": 0.0, "support_tickets_30d": 0,
            "days_since_last_session": 1}


def test_a_feature_value_stamped_after_the_label_is_never_used(tmp_path):
    settings = LooplineSettings(home=tmp_path)
    offline = settings.path("offline", "leak", "customer_daily_features")
    # Day 1's values are stamped 11-01 23:59:59; day 2's (the "future") 11-02 23:59:59.
    for day, sessions in ((date(2026, 11, 1), 1), (date(2026, 11, 2), 99)):
        frame = pd.DataFrame([feature_row(day, sessions)])[list(MART_COLUMNS)]
        frame["feature_timestamp"] = frame["feature_timestamp"].astype("datetime64[us, UTC]")
        feast_store.publish_offline_day(frame, offline, day)
    feast_store.apply_if_changed("leak", REPO / "feature_repo", settings)

    labels = pd.DataFrame({
        "customer_id": [1, 1, 1],
        # during day 2 (before its features exist), just after day 2's stamp, and before any feature at all
        "event_timestamp": pd.to_datetime(["2026-11-02 12:00:00", "2026-11-03 00:00:01", "2026-10-31 12:00:00"],
                                          utc=True),
        "label": [0, 1, 0],
        "label_day": [date(2026, 11, 2), date(2026, 11, 3), date(2026, 10, 31)],
    })
    joined = join_features(labels, "leak", "churn_model_v1", settings).sort_values("event_timestamp")

    by_time = dict(zip(joined["event_timestamp"].dt.strftime("%m-%d %H:%M:%S"), joined["sessions_30d"]))
    assert by_time == {"11-02 12:00:00": 1, "11-03 00:00:01": 99}
    # the label before any feature value existed is left out rather than filled from the future
    assert datetime(2026, 10, 31, 12, tzinfo=UTC) not in set(joined["event_timestamp"])
