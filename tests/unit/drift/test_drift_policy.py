"""Drift policy: thresholds, and the guard rails (dedupe, daily cap, cooldown) as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.drift.config import GuardRails, RagDrift, TabularDrift
from pipelines.drift.policy import Emission, guard, judge_rag, judge_tabular

pytestmark = pytest.mark.unit

T = datetime(2026, 11, 20, 3, tzinfo=UTC)
ASSET = "churn_retrain"


def evidence(**changes):
    base = {"drift_share": 0.1, "drifted_columns": ["monthly_charges"], "columns": 10, "prediction_drift": 0.03,
            "prediction_drifted": False, "roc_auc": None, "champion_roc_auc": 0.8, "labelled_rows": 0}
    return {**base, **changes}


def test_no_signal_means_no_drift_and_says_so():
    verdict = judge_tabular(evidence(), TabularDrift())
    assert not verdict.drifted and verdict.signals == []
    assert verdict.reasons == ["data drift below the bar: share 0.10 < 0.30 (monthly_charges)"]


def test_each_tabular_signal_fires_with_a_reason():
    verdict = judge_tabular(evidence(drift_share=0.4, drifted_columns=["a", "b", "c", "d"], prediction_drifted=True,
                                     prediction_drift=0.2, roc_auc=0.65, labelled_rows=400), TabularDrift())
    assert verdict.drifted and verdict.signals == ["data_drift", "prediction_drift", "performance"]
    assert verdict.reasons[0] == "data drift: 4 of 10 feature columns drifted (share 0.40 >= 0.30): a, b, c, d"
    assert verdict.reasons[2].startswith("performance: ROC AUC 0.6500 on 400 late labels is 0.1500 below")


def test_a_drift_share_exactly_at_the_threshold_fires():
    assert judge_tabular(evidence(drift_share=0.3), TabularDrift()).signals == ["data_drift"]


def test_a_small_performance_dip_does_not_fire():
    assert not judge_tabular(evidence(roc_auc=0.75, labelled_rows=400), TabularDrift()).drifted


def regression(**changes):
    return evidence(**{"champion_roc_auc": None, "performance_metric": "rmse", "champion_performance": 4.0,
                       "labelled_rows": 42, **changes})


def test_a_regression_fires_on_late_label_rmse_relative_to_the_champion():
    verdict = judge_tabular(regression(performance=6.6), TabularDrift(performance_drop=0.5))
    assert verdict.signals == ["performance"]
    assert verdict.reasons[1] == ("performance: rmse 6.6000 on 42 late labels is 65% above the champion's 4.0000 "
                                  "(lower is better; allowed +50%)")
    assert not judge_tabular(regression(performance=5.9), TabularDrift(performance_drop=0.5)).drifted
    assert not judge_tabular(regression(performance=3.0), TabularDrift(performance_drop=0.0)).drifted  # better
    assert not judge_tabular(regression(performance=None), TabularDrift()).drifted  # too few labels yet


def test_a_regression_judged_by_r2_fires_on_an_absolute_drop():
    r2 = regression(performance_metric="r2", champion_performance=0.8)
    assert judge_tabular({**r2, "performance": 0.6}, TabularDrift(performance_drop=0.1)).signals == ["performance"]
    assert not judge_tabular({**r2, "performance": 0.75}, TabularDrift(performance_drop=0.1)).drifted


def test_late_label_regression_metrics():
    from pipelines.drift.tabular import regression_metric

    assert regression_metric("rmse", [1.0, 3.0], [2.0, 2.0]) == pytest.approx(1.0)
    assert regression_metric("mae", [1.0, 5.0], [2.0, 2.0]) == pytest.approx(2.0)
    assert regression_metric("r2", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no late-label measure for metric 'roc_auc'"):
        regression_metric("roc_auc", [1.0], [1.0])


def test_rag_signals():
    quiet = judge_rag({"hit_rate": {"vector": 0.9}, "baseline_hit_rate": {"vector": 0.92}, "k": 5,
                       "corpus_change_share": 0.05, "corpus_drift": 0.01, "query_drift": None}, RagDrift())
    assert not quiet.drifted
    loud = judge_rag({"hit_rate": {"vector": 0.7}, "baseline_hit_rate": {"vector": 0.9}, "k": 5,
                      "corpus_change_share": 0.5, "corpus_drift": 0.3, "query_drift": 0.4}, RagDrift())
    assert loud.signals == ["hit_rate", "corpus_change", "corpus_drift", "query_drift"]
    assert loud.reasons[0] == "retrieval: vector hit@5 fell 0.900 → 0.700 (-0.200, allowed -0.050)"


def emitted(*hours_and_runs):
    return [Emission(ASSET, run, T + timedelta(hours=h)) for h, run in hours_and_runs]


def decide(run_id="r_now", at=T, history=(), rails=None):
    rails = rails or GuardRails()
    return guard(ASSET, run_id, at, list(history), cooldown_hours=rails.cooldown_hours,
                 max_triggers_per_day=rails.max_triggers_per_day)


def test_first_emission_is_allowed():
    assert decide().emit


def test_dedupe_a_run_never_emits_twice():
    decision = decide(run_id="r1", history=emitted((0, "r1")))
    assert not decision.emit and decision.reason.startswith("dedupe: this run (r1) already emitted churn_retrain")


def test_cooldown_blocks_a_second_trigger_within_the_window_on_either_side():
    rails = GuardRails(cooldown_hours=24, max_triggers_per_day=5)
    blocked = decide(at=T + timedelta(hours=23), history=emitted((0, "r1")), rails=rails)
    assert not blocked.emit
    assert blocked.reason == "cooldown: churn_retrain was emitted 23.0 h earlier by r1 (cooldown 24 h)"
    assert decide(at=T + timedelta(hours=24), history=emitted((0, "r1")), rails=rails).emit
    assert not decide(at=T - timedelta(hours=2), history=emitted((0, "r1")), rails=rails).emit  # a re-run of an old day


def test_the_daily_cap_counts_emissions_of_the_same_utc_day():
    rails = GuardRails(cooldown_hours=0, max_triggers_per_day=2)
    history = emitted((0, "r1"), (1, "r2"))
    capped = decide(at=T + timedelta(hours=2), history=history, rails=rails)
    assert not capped.emit and capped.reason.startswith("cap: churn_retrain was emitted 2 time(s) on 2026-11-20 (max 2")
    assert decide(at=T + timedelta(days=1), history=history, rails=rails).emit


def test_a_cap_of_zero_is_report_only_and_other_assets_do_not_count():
    assert not decide(rails=GuardRails(max_triggers_per_day=0)).emit
    other = [Emission("docs_reindex", "r1", T)]
    assert decide(history=other).emit
