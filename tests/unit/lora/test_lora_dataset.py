"""The instruction dataset: pairs from sections, a stable split, validation of every bad input it names."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines.lora import dataset
from pipelines.lora.config import DatasetSpec
from pipelines.lora.dataset import DatasetError, Pair, build_pairs, validate_pairs
from pipelines.rag.corpus import load_corpus

pytestmark = pytest.mark.unit

DOCS = {
    "kites.md": "# Kites\n\n## Flying\n\nA kite needs steady wind of 10 to 30 km/h; launch it with your back to "
                "the wind.\n\nLet the line out slowly.\n\n## Building\n\nA diamond kite is a paper sail on two "
                "crossed sticks with a tail for stability.\n\n## Tiny\n\nToo short.",
    "tea.md": "# Tea\n\n## Brewing\n\nGreen tea brews at 80 degrees for two minutes; black tea wants boiling "
              "water and four minutes.\n\n## Growing\n\nTea bushes grow on misty hillsides and are plucked by hand.",
    "copy.md": "# Copy\n\n## Same text\n\nTea bushes grow on misty hillsides and are plucked by hand.",
}
SPEC = DatasetSpec(min_answer_chars=30, max_answer_chars=200, min_train_pairs=1, min_eval_pairs=1, eval_fraction=0.4)


@pytest.fixture
def documents(tmp_path):
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    return load_corpus(tmp_path, ["*.md"]).documents


def test_one_pair_per_section_that_cites_its_source(documents):
    pairs = build_pairs(documents, SPEC)
    by_section = {p.section: p for p in pairs}
    assert set(by_section) == {"Copy > Same text", "Kites > Flying", "Kites > Building", "Tea > Brewing"}
    flying = by_section["Kites > Flying"]
    assert flying.instruction == 'What does the section "Kites > Flying" of kites.md say?'
    assert flying.answer.startswith("From kites.md, Kites > Flying:\n\nA kite needs steady wind")
    assert flying.answer.endswith("Let the line out slowly.")
    assert dataset.format_prompt(flying.instruction).endswith("### Answer:\n")


def test_short_sections_and_repeated_answers_make_no_pair(documents):
    pairs = build_pairs(documents, SPEC)
    assert not any("Too short" in p.answer for p in pairs)
    assert [p.doc_id for p in pairs if "misty hillsides" in p.answer] == ["copy.md"], "the first in doc order"


def test_long_answers_are_cut_at_a_paragraph_or_word(documents):
    pairs = build_pairs(documents, SPEC.model_copy(update={"max_answer_chars": 110}))
    flying = next(p for p in pairs if p.section == "Kites > Flying")
    assert len(flying.answer) <= 110 and "Let the line out" not in flying.answer
    assert not flying.answer.endswith(" ")


def test_the_split_is_deterministic_and_a_pair_never_moves_when_documents_are_added(documents, tmp_path):
    first = build_pairs(documents, SPEC)
    assert build_pairs(documents, SPEC) == first
    assert dataset.dataset_digest(build_pairs(documents, SPEC)) == dataset.dataset_digest(first)
    (tmp_path / "owls.md").write_text("# Owls\n\n## Hunting\n\nOwls hunt at night; soft feather fringes make "
                                      "their flight almost silent.")
    more = build_pairs(load_corpus(tmp_path, ["*.md"]).documents, SPEC)
    assert {p.pair_id: p.split for p in first}.items() <= {p.pair_id: p.split for p in more}.items()
    assert dataset.dataset_digest(more) != dataset.dataset_digest(first)
    other_seed = build_pairs(documents, SPEC.model_copy(update={"seed": 99}))
    assert [p.pair_id for p in other_seed] == [p.pair_id for p in first]


def test_valid_pairs_pass_and_round_trip_through_jsonl(documents, tmp_path):
    pairs = build_pairs(documents, SPEC)
    counts = validate_pairs(pairs, SPEC, "corpus")
    assert counts["train_pairs"] + counts["eval_pairs"] == len(pairs)
    paths = dataset.write_pairs(pairs, tmp_path / "out")
    assert dataset.read_pairs(paths["train"]) + dataset.read_pairs(paths["eval"]) == sorted(
        pairs, key=lambda p: p.split != "train")


def test_writing_the_splits_again_leaves_only_the_two_files(documents, tmp_path):
    pairs = build_pairs(documents, SPEC)
    first = dataset.write_pairs(pairs, tmp_path / "out")
    assert dataset.write_pairs(pairs, tmp_path / "out") == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eval.jsonl", "train.jsonl"]


def test_an_empty_dataset_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "headings.md").write_text("# Only\n\n## Headings\n\n### Here\n\nshort")
    pairs = build_pairs(load_corpus(tmp_path, ["*.md"]).documents, SPEC)
    assert pairs == []
    with pytest.raises(DatasetError, match=r"the instruction dataset from corpus is empty: no section has at least "
                                           r"30 characters of text\. Nothing was tuned or registered"):
        validate_pairs(pairs, SPEC, "corpus")


def _pair(n: int, split: str, answer: str | None = None, instruction: str | None = None) -> Pair:
    return Pair(f"p{n}", "d.md", f"S{n}", instruction or f"What does the section S{n} of d.md say?",
                answer or f"From d.md, S{n}:\n\nanswer number {n} with enough characters", split)


@pytest.mark.parametrize("pairs,message", [
    ([_pair(1, "train"), _pair(2, "train")], r"0 eval pairs \(at least 1 needed\)"),
    ([_pair(1, "train"), _pair(2, "eval", answer=_pair(1, "train").answer)], r"1 answer\(s\) in both train and eval"),
    ([_pair(1, "train"), _pair(2, "eval", instruction=_pair(1, "x").instruction)],
     r"1 instruction\(s\) in both train and eval"),
    ([_pair(1, "train"), _pair(2, "eval", answer="short")], r"pair p2 has a 5-character answer \(bounds \[30, 200\]\)"),
    ([_pair(1, "train"), replace(_pair(2, "eval"), instruction=" ")], r"pair p2 has an empty instruction or answer"),
])
def test_invalid_datasets_name_the_problem(pairs, message):
    with pytest.raises(DatasetError, match=message):
        validate_pairs(pairs, SPEC, "corpus")
