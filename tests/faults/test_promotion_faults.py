"""Faults around the champion alias of ``churn``: a worker killed between the tags and the alias, the alias
moved by hand during an evaluation, the champion's model artifact gone during an evaluation.

Each test names the fault, where it is injected, and the invariant checked afterwards. The world: simulated
customers (``support.churn_world``), a champion v1 and two challengers v2 and v3 registered in an MLflow store
of its own (one data home for the module). Every test starts from v1 holding the alias and untagged
challengers. The kill runs ``evaluate_and_promote`` in a child process that dies (``os._exit``, what SIGKILL
leaves) at the point ``LOOPLINE_FAULT_CRASH_AT`` names; only this test sets it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipelines.core import tracking
from support.churn_world import configs, land, own_data_home, train_champion

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
T0 = date(2026, 11, 1)
TRAIN_END = T0 + timedelta(days=30)
PROMOTION, REASON = "loopline.promotion", "loopline.promotion_reason"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data home of its own with champion v1 and challengers v2, v3 (other seeds, same training set)."""
    from pipelines.training.steps import train_and_register

    home = tmp_path_factory.mktemp("promotion-home")
    with own_data_home(home) as settings:
        land(settings, T0, 31)
        champion = train_champion(settings, TRAIN_END, 21)
        _, training = configs()
        info = {k: champion[k] for k in ("path", "window_start", "window_end", "rows", "train_rows", "holdout_rows",
                                         "digest", "feature_service", "feast_project", "numeric", "categorical")}
        challengers = []
        for seed in (1, 2):
            config = training.model_copy(update={
                "seed": seed, "hyperparameters": training.hyperparameters.model_copy(update={"max_iter": 40})})
            challengers.append(train_and_register(config, info, settings=settings))
        assert [champion["version"], *(c["version"] for c in challengers)] == ["1", "2", "3"]
        yield {"settings": settings, "home": home, "training": training, "info": info,
               "v2": challengers[0], "v3": challengers[1]}


@pytest.fixture
def fresh(world):
    """v1 holds the alias; v2 and v3 carry no verdict."""
    client = tracking.client(world["settings"])
    client.set_registered_model_alias("churn", tracking.CHAMPION, "1")
    for version in ("2", "3"):
        for key in set(client.get_model_version("churn", version).tags) & {PROMOTION, REASON}:
            client.delete_model_version_tag("churn", version, key)
    return world


def registry(settings) -> dict:
    """Who holds the alias, and every version's verdict tag."""
    client = tracking.client(settings)
    holder = tracking.champion("churn", settings)
    return {"champion": str(holder.version) if holder else None,
            "tags": {str(v.version): v.tags.get(PROMOTION) for v in client.search_model_versions("name = 'churn'")}}


def assert_consistent(settings) -> None:
    """The invariant after any crash: the alias points at a version whose tags say it was promoted."""
    state = registry(settings)
    assert state["champion"] is not None and state["tags"][state["champion"]] == "promoted", state


def test_killed_between_the_tags_and_the_alias_leaves_the_alias_put_and_the_retry_completes(fresh, tmp_path):
    """Fault: the worker dies (os._exit 137) after the challenger's tags, before the alias moves.
    Where: ``tracking.promote``, crash point ``promotion:after_tags``, in a child running ``evaluate_and_promote``.
    Invariant: after the crash the alias has not moved (v1, tagged promoted); after the retry it points at v2,
    whose tags say promoted with the retry's reason. Never an alias on a version without its verdict."""
    settings, world = fresh["settings"], fresh
    payload = tmp_path / "step.json"
    payload.write_text(json.dumps({"info": world["info"], "trained": world["v2"]}))
    code = textwrap.dedent(f"""
        import json
        from pipelines.training import steps
        from support.churn_world import configs
        args = json.load(open({str(payload)!r}))
        steps.evaluate_and_promote(configs()[1], args["info"], args["trained"], force=True)
    """)
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LOOPLINE_HOME": str(world["home"]), "LOOPLINE_FAULT_CRASH_AT": "promotion:after_tags",
             "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    assert child.returncode == 137, child.stderr[-3000:]

    crashed = registry(settings)
    assert crashed["champion"] == "1", "the alias moves last: a crash before it leaves the champion in place"
    assert crashed["tags"]["2"] == "promoted"  # the verdict the retry carries out
    assert_consistent(settings)

    from pipelines.training import steps
    result = steps.evaluate_and_promote(world["training"], world["info"], world["v2"], force=True, settings=settings)
    assert result["promoted"] and result["champion"] == "2"
    assert registry(settings)["champion"] == "2"
    version = tracking.client(settings).get_model_version("churn", "2")
    assert version.tags[REASON] == result["reason"] and result["reason"].startswith("forced by the force_promote")
    assert_consistent(settings)


def test_an_alias_moved_by_hand_during_the_evaluation_is_not_overwritten(fresh, monkeypatch):
    """Fault: a person moves ``@champion`` to v2 (MlflowClient) after v3 was scored against v1, before the alias
    is set. Where: between the evaluation and ``tracking.apply_decision``, inside ``evaluate_and_promote``.
    Invariant: the gate raises ChampionMoved (retryable), the alias stays on v2, v3 gets no verdict; the retry
    judges v3 against v2 and names it."""
    from pipelines.training import promotion, steps

    settings, world = fresh["settings"], fresh
    real_decide = promotion.decide

    def decide_while_a_person_moves_the_alias(*args, **kwargs):
        tracking.client(settings).set_registered_model_alias("churn", tracking.CHAMPION, "2")
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(promotion, "decide", decide_while_a_person_moves_the_alias)
    with pytest.raises(tracking.ChampionMoved, match=r"moved from v1 to v2 while version 3 was being judged: "
                                                     r"nothing was recorded"):
        steps.evaluate_and_promote(world["training"], world["info"], world["v3"], force=True, settings=settings)
    state = registry(settings)
    assert state["champion"] == "2" and state["tags"]["3"] is None

    monkeypatch.setattr(promotion, "decide", real_decide)
    retry = steps.evaluate_and_promote(world["training"], world["info"], world["v3"], force=True, settings=settings)
    assert "champion v2" in retry["reason"] and retry["champion"] == "3"
    assert_consistent(settings)


def test_a_champion_that_cannot_be_scored_blocks_the_promotion(fresh):
    """Fault: the champion's model artifact is unavailable (its folder moved away) during the evaluation.
    Where: the artifact store, before ``evaluate_and_promote`` of challenger v2 loads champion v1.
    Invariant: nothing is promoted (the alias stays on v1), v2 is tagged rejected with the reason, the task
    fails with a retryable ChampionUnscorable; once the artifact is back, the retry judges v2 against v1."""
    from pipelines.training import steps

    settings, world = fresh["settings"], fresh
    artifacts = Path(urlparse(tracking.client(settings).get_model_version_download_uri("churn", "1")).path)
    assert artifacts.is_dir()
    hidden = artifacts.with_name(artifacts.name + ".unavailable")
    artifacts.rename(hidden)
    try:
        with pytest.raises(steps.ChampionUnscorable, match=r"champion v1 could not be scored on this holdout .*"
                                                           r"version 2 was not compared and is not promoted"):
            steps.evaluate_and_promote(world["training"], world["info"], world["v2"], settings=settings)
        state = registry(settings)
        assert state["champion"] == "1" and state["tags"]["2"] == "rejected"
        reason = tracking.client(settings).get_model_version("churn", "2").tags[REASON]
        assert "could not be scored" in reason
    finally:
        if hidden.exists():
            shutil.rmtree(artifacts, ignore_errors=True)
            hidden.rename(artifacts)

    retry = steps.evaluate_and_promote(world["training"], world["info"], world["v2"], settings=settings)
    assert retry["champion_roc_auc"] is not None and "could not be scored" not in retry["reason"]
    assert "champion v1" in retry["reason"] or "below the floor" in retry["reason"]
    assert_consistent(settings)
