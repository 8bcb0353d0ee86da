"""tracking.apply_decision: the compare-and-set against the champion judged, and the order of tags and alias."""

from __future__ import annotations

import pytest

from pipelines.core import tracking
from pipelines.core.settings import LooplineSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def registry(tmp_path):
    """A model ``m`` with versions 1, 2, 3 (no artifacts needed: only the registry is touched), v1 champion."""
    settings = LooplineSettings(home=tmp_path)
    client = tracking.client(settings)
    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("m", tracking.CHAMPION, "1")
    return settings


def test_a_decision_is_applied_when_the_champion_is_the_one_judged(registry):
    now = tracking.apply_decision("m", "2", tracking.Decision(True, "better"), registry, expected_champion="1")
    assert str(now.version) == "2" and now.tags["loopline.promotion"] == "promoted"
    assert now.tags["loopline.promotion_reason"] == "better"


def test_a_moved_alias_refuses_the_decision_and_records_nothing(registry):
    tracking.client(registry).set_registered_model_alias("m", tracking.CHAMPION, "3")  # by hand
    for decision in (tracking.Decision(True, "better"), tracking.Decision(False, "worse")):
        with pytest.raises(tracking.ChampionMoved, match=r"moved from v1 to v3 while version 2 was being judged"):
            tracking.apply_decision("m", "2", decision, registry, expected_champion="1")
    assert str(tracking.champion("m", registry).version) == "3"
    assert "loopline.promotion" not in tracking.client(registry).get_model_version("m", "2").tags


def test_no_champion_expected_but_one_appeared_is_a_move_too(registry):
    with pytest.raises(tracking.ChampionMoved, match=r"moved from no version to v1"):
        tracking.apply_decision("m", "2", tracking.Decision(True, "first"), registry, expected_champion=None)


def test_without_an_expected_champion_the_decision_is_applied_as_before(registry):
    # pipelines.lora calls apply_decision without expected_champion: no comparison, same behaviour as before.
    tracking.client(registry).set_registered_model_alias("m", tracking.CHAMPION, "3")
    assert str(tracking.apply_decision("m", "2", tracking.Decision(True, "better"), registry).version) == "2"


def test_a_crash_point_does_nothing_unless_named(monkeypatch):
    from pipelines.core import faults

    monkeypatch.delenv(faults.CRASH_AT_ENV, raising=False)
    faults.crash_point("promotion:after_tags")
    monkeypatch.setenv(faults.CRASH_AT_ENV, "some:other_point")
    faults.crash_point("promotion:after_tags")
