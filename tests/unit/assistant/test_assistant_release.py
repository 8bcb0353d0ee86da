"""Shadow and canary releases: the ``release:`` block is validated, the canary router is deterministic and honours
its share within binomial bounds, and live answers are scored without a reference answer."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.assistant import release
from pipelines.assistant.config import AssistantConfig
from pipelines.llm_eval.candidates import Candidate
from pipelines.templates import load_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
MINIMAL = {"template": "assistant", "instance": "docs"}
IDS = [f"req-{n:05d}" for n in range(2000)]


def config(**changes) -> AssistantConfig:
    return AssistantConfig.model_validate({**MINIMAL, **changes})


# --- the config -------------------------------------------------------------------------------------------------

def test_release_is_off_by_default_and_in_the_docs_instance():
    assert config().release is None
    assert load_config(REPO / "dags" / "configs" / "docs_assistant.yaml", "assistant").release is None


def test_a_canary_and_a_shadow_release_validate():
    canary = config(release={"mode": "canary", "share": 0.25}).release
    assert (canary.mode, canary.share, canary.challenger, canary.alias) == ("canary", 0.25, "prompt", "challenger")
    shadow = config(release={"mode": "shadow"}).release
    assert (shadow.mode, shadow.challenger) == ("shadow", "prompt")


@pytest.mark.parametrize(("release_block", "message"), [
    ({"mode": "shadow", "share": 0.2}, "release.share 0.2 is for mode canary"),
    ({"mode": "canary", "share": 0}, "greater than 0"),
    ({"mode": "canary", "share": 1.5}, "less than or equal to 1"),
    ({"mode": "blue_green"}, "'shadow' or 'canary'"),
    ({"share": 0.1}, "mode"),
    ({"mode": "canary", "challenger": "index"}, "'prompt' or 'adapter'"),
    ({"mode": "canary", "alias": "chal lenger"}, "alias"),
    ({"mode": "canary", "sahre": 0.1}, "sahre"),
    ({"mode": "canary", "challenger": "adapter"}, "release.challenger adapter needs generator.adapter"),
])
def test_a_bad_release_block_is_refused_with_the_field(release_block, message):
    with pytest.raises(ValidationError, match=message):
        config(release=release_block)


def test_an_adapter_release_needs_the_adapter_the_generator_loads():
    adapter = config(generator={"backend": "transformers", "adapter": {"model_name": "docs_lora"}},
                     release={"mode": "canary", "challenger": "adapter"})
    assert adapter.release.challenger == "adapter"


# --- the router -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("share", [0.05, 0.1, 0.5, 0.9])
def test_the_canary_share_is_honoured_within_binomial_bounds(share):
    taken = sum(release.routes_to_challenger(request, share, "prompt docs v2") for request in IDS)
    mean, sd = share * len(IDS), math.sqrt(len(IDS) * share * (1 - share))
    assert abs(taken - mean) <= 4 * sd, (taken, mean, sd)  # 4 sigma: a fair router fails 1 in 15,000 runs


def test_routing_is_deterministic_per_request_and_fresh_per_challenger():
    first = [release.routes_to_challenger(r, 0.3, "prompt docs v2") for r in IDS]
    assert first == [release.routes_to_challenger(r, 0.3, "prompt docs v2") for r in IDS]  # a retry: the same arm
    other = [release.routes_to_challenger(r, 0.3, "prompt docs v3") for r in IDS]
    assert first != other  # a new challenger version gets another sample of the traffic
    assert all(release.routes_to_challenger(r, 1.0) for r in IDS[:50])
    buckets = [release.bucket(r) for r in IDS]
    assert 0 <= min(buckets) and max(buckets) < 1
    # a larger share takes every request a smaller one took (raising the share only adds users)
    small = {r for r in IDS if release.routes_to_challenger(r, 0.1, "s")}
    assert small <= {r for r in IDS if release.routes_to_challenger(r, 0.2, "s")}


def test_the_default_request_id_is_stable_for_the_same_question_on_the_same_day():
    one = release.request_id_for("docs_assistant", date(2026, 12, 1), "How do I roll back?")
    assert one == release.request_id_for("docs_assistant", date(2026, 12, 1), "How do I roll back? ")
    assert one != release.request_id_for("docs_assistant", date(2026, 12, 2), "How do I roll back?")
    assert one != release.request_id_for("docs_assistant", date(2026, 12, 1), "How do I roll forward?")


def test_shadow_shows_the_champion_always_and_canary_by_the_hash():
    challenger = Candidate("prompt", "docs_answer", "challenger", 3, 1)
    shadow = release.LiveRelease("shadow", 0.1, challenger)
    assert {shadow.arm_for(r) for r in IDS[:200]} == {"champion"}
    canary = release.LiveRelease("canary", 0.5, challenger)
    arms = [canary.arm_for(r) for r in IDS[:200]]
    assert set(arms) == {"champion", "challenger"}
    assert arms == [("challenger" if release.routes_to_challenger(r, 0.5, "prompt docs_answer v3") else "champion")
                    for r in IDS[:200]]
    assert (canary.challenger_label, canary.champion_label) == ("prompt docs_answer v3", "prompt docs_answer v1")


def test_only_user_questions_are_released():
    assistant = config(release={"mode": "shadow"})
    assert release.active_release(assistant, "check") is None  # no registry lookup for the DAG's own check
    assert release.active_release(assistant, "eval") is None
    assert release.active_release(config(), "user") is None


# --- live scores ------------------------------------------------------------------------------------------------

def bag_of_words(texts):
    """A stand-in embedding: normalised word counts hashed into 256 dimensions (same words, similarity 1)."""
    import zlib

    rows = []
    for text in texts:
        vector = np.zeros(256, dtype="float32")
        for word in text.lower().replace(".", " ").split():
            vector[zlib.crc32(word.encode()) % 256] += 1
        rows.append(vector / (np.linalg.norm(vector) or 1))
    return np.stack(rows)


PASSAGES = ["Green tea brews at 80 degrees for two minutes; black tea wants boiling water and four minutes."]


def test_a_supported_answer_is_grounded_and_an_invented_one_is_not():
    good = release.live_scores("Green tea brews at 80 degrees for two minutes [1].", False, PASSAGES, bag_of_words,
                               0.6, latency_ms=1200.0, tokens=700)
    assert good["groundedness"] == 1.0 and good["hallucinated"] is False
    assert (good["refused"], good["latency_ms"], good["tokens"]) == (False, 1200.0, 700)
    bad = release.live_scores("Yo ho, the sea is wide and the wind is free!", False, PASSAGES, bag_of_words, 0.6,
                              latency_ms=900.0, tokens=650)
    assert bad["groundedness"] == 0.0 and bad["hallucinated"] is True
    assert bad["unsupported"] == ["Yo ho, the sea is wide and the wind is free!"]


def test_a_declined_answer_has_no_groundedness():
    declined = release.live_scores("I don't know based on the documentation.", True, PASSAGES, bag_of_words, 0.6,
                                   latency_ms=300.0, tokens=0)
    assert declined["refused"] is True and declined["groundedness"] is None and declined["hallucinated"] is None
