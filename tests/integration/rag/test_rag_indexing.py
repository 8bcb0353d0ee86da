"""The rag_index steps on a tiny real corpus, the real model and LanceDB: incremental, blue/green, gated.

One module-wide index (instance ``ragsteps``) goes through a sequence of corpus changes; each test starts
from the state the previous one left. The embedder is the real all-MiniLM-L6-v2, wrapped by a recorder
that notes every text it is asked to embed (and, to simulate a crash, raises on a chosen batch), so the
tests can say exactly which chunks were embedded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.core import tracking
from pipelines.rag import embeddings, plans
from pipelines.rag import steps as rag_steps
from pipelines.rag.config import RagIndexConfig
from pipelines.rag.corpus import CorpusError, load_corpus
from pipelines.rag.evaluation import GateBlocked
from pipelines.rag.hashing import chunk_corpus
from pipelines.rag.stores import open_store
from pipelines.rag.versions import VersionCatalog, rollback

pytestmark = pytest.mark.integration

INSTANCE = "ragsteps"
V = [f"{INSTANCE}_v{n}" for n in range(10)]

DOCS = {
    "beekeeping.md": ("Beekeeping", [
        ("Hives", "A colony lives in wooden hive boxes with removable frames. The queen lays eggs in the brood "
                  "box while worker bees store honey in the supers stacked above it."),
        ("Harvest", "Beekeepers harvest honey in late summer. Frames are uncapped with a hot knife and spun in "
                    "an extractor; the honey is strained and left to settle before bottling."),
    ]),
    "volcanoes.md": ("Volcanoes", [
        ("Eruptions", "Magma rises through the crust and erupts as lava, ash and volcanic gas. Explosive "
                      "eruptions happen when gas-rich magma fragments in the vent."),
        ("Monitoring", "Volcanologists watch seismometers, ground deformation and sulfur dioxide emissions to "
                       "forecast eruptions and warn people living on the slopes."),
    ]),
    "sourdough.md": ("Sourdough", [
        ("Starter", "A sourdough starter is flour and water fermented by wild yeast and lactic acid bacteria. "
                    "Feed it daily and keep it at room temperature until it doubles."),
        ("Baking", "Bake the loaf in a preheated Dutch oven at 250 degrees with the lid on for twenty minutes, "
                   "then uncovered until the crust is deep brown."),
    ]),
    "chess.md": ("Chess openings", [
        ("Principles", "In the opening, control the centre with pawns, develop knights before bishops, castle "
                       "early and do not move the queen out too soon."),
        ("Sicilian", "The Sicilian Defence answers 1.e4 with c5 and fights for the d4 square asymmetrically; it "
                     "is the most popular reply to the king's pawn at master level."),
    ]),
    "tides.md": ("Tides", [
        ("Cause", "Tides are caused by the gravitational pull of the Moon and the Sun on the oceans. Spring "
                  "tides occur at new and full moon, neap tides at the quarters."),
        ("Tables", "Tide tables list the times and heights of high and low water for a harbour; sailors use "
                   "them to plan when a boat can cross a shallow bar."),
    ]),
    "violins.md": ("Violin making", [
        ("Woods", "Luthiers carve the violin top from spruce and the back and ribs from flamed maple, seasoned "
                  "for years before use."),
        ("Varnish", "Oil varnish is applied in thin coats and dried in sunlight; it protects the wood and "
                    "changes the instrument's tone and colour."),
    ]),
    "coral.md": ("Coral reefs", [
        ("Polyps", "Reefs are built by coral polyps that secrete calcium carbonate skeletons and host "
                   "photosynthetic algae called zooxanthellae."),
        ("Bleaching", "When sea water gets too warm, corals expel their algae and turn white; prolonged "
                      "bleaching starves the reef."),
    ]),
    "glaciers.md": ("Glaciers", [
        ("Formation", "Glaciers form where snowfall exceeds melting for many years and the snow compacts into "
                      "dense glacial ice that flows under its own weight."),
        ("Landforms", "Moving ice carves U-shaped valleys, cirques and fjords and leaves moraines of rock "
                      "debris where it melts."),
    ]),
}
QUESTIONS = [
    ("How is honey extracted from the frames?", "beekeeping.md"),
    ("What do scientists measure to forecast a volcanic eruption?", "volcanoes.md"),
    ("How often should I feed my sourdough starter?", "sourdough.md"),
    ("What are the principles of a good chess opening?", "chess.md"),
    ("What causes spring and neap tides?", "tides.md"),
    ("Which woods are violins made of?", "violins.md"),
    ("Why do corals turn white?", "coral.md"),
    ("How do glaciers shape valleys?", "glaciers.md"),
    ("When is the best time to harvest honey?", "beekeeping.md"),
    ("What temperature should I bake bread at?", "sourdough.md"),
]


def markdown(title: str, sections: list[tuple[str, str]]) -> str:
    return f"# {title}\n\n" + "\n\n".join(f"## {head}\n\n{body}" for head, body in sections) + "\n"


def config_for(world: dict, **overrides) -> RagIndexConfig:
    raw = {
        "template": "rag_index", "instance": INSTANCE,
        "corpus": {"path": str(world["corpus"]), "include": ["**/*.md", "**/*.html", "**/*.txt"],
                   "max_file_mb": 0.05},
        "chunker": {"size_chars": 300, "overlap_chars": 50},
        "embedding": {"batch_size": 4, "write_batch_chunks": 4},
        "index": {"previous_versions_kept": 1},
        "evaluation": {"questions": str(world["questions"]), "k": 3, "min_hit_rate": 0.6},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    return RagIndexConfig.model_validate(raw)


class Recorder:
    """Wraps the real embedder: records what it embeds; ``fail_on_call`` simulates a crash in that batch."""

    def __init__(self, monkeypatch, fail_on_call: int | None = None):
        self.texts: list[str] = []
        self.calls = self.loads = 0
        self.fail_on_call = fail_on_call
        real = embeddings.load_embedder

        def load(path, **kwargs):
            self.loads += 1
            return _Recording(real(path, **kwargs), self)

        monkeypatch.setattr(embeddings, "load_embedder", load)


class _Recording:
    def __init__(self, inner, recorder: Recorder):
        self.inner, self.recorder = inner, recorder
        self.model_id, self.dimension = inner.model_id, inner.dimension

    def encode(self, texts):
        self.recorder.calls += 1
        if self.recorder.calls == self.recorder.fail_on_call:
            raise RuntimeError("worker lost in the middle of a batch (simulated)")
        self.recorder.texts.extend(texts)
        return self.inner.encode(texts)


def run(config: RagIndexConfig, monkeypatch, run_id: str, fail_on_call: int | None = None):
    """The DAG's five steps in order; the recorder watches embed_chunks only."""
    plan = rag_steps.plan_index(config, run_id)
    with monkeypatch.context() as patch:
        recorder = Recorder(patch, fail_on_call)
        embedded = rag_steps.embed_chunks(config, plan)
    verdict = rag_steps.evaluate_index(config, plan, run_id)
    published = rag_steps.publish_index(config, plan, run_id)
    summary = rag_steps.record_index(config, plan, embedded, verdict, run_id)
    return summary, published, recorder


def corpus_chunks(config: RagIndexConfig):
    corpus = load_corpus(Path(config.corpus.path), config.corpus.include, max_bytes=50_000)
    model_id = embeddings.model_id(embeddings.resolve_model_path(config.embedding.model))
    return chunk_corpus(corpus, config.chunker.size_chars, config.chunker.overlap_chars, model_id)


def live_state(config: RagIndexConfig) -> tuple[str | None, dict[str, str]]:
    with open_store("lancedb", INSTANCE) as store:
        live = store.live_version()
        return live, store.chunk_ids(live) if live else {}


def top_docs(config: RagIndexConfig, question: str) -> list[str]:
    return [h.doc_id for h in rag_steps.search(config, question, k=3, mode="vector")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ragsteps")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, (title, sections) in DOCS.items():
        (corpus / name).write_text(markdown(title, sections))
    questions = root / "questions.yaml"
    questions.write_text("questions:\n" + "".join(f"  - question: {q}\n    source: {s}\n"
                                                  for q, s in QUESTIONS))
    return {"root": root, "corpus": corpus, "questions": questions}


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory) -> Path:
    """A sentence-transformers model with all-MiniLM-L6-v2's architecture and random weights."""
    import torch
    from sentence_transformers import SentenceTransformer

    path = tmp_path_factory.mktemp("models") / "random-minilm"
    model = SentenceTransformer(str(embeddings.default_model_path()), device="cpu", local_files_only=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    model.save(str(path))
    return path


def test_the_first_run_builds_version_1_and_embeds_every_chunk(world, monkeypatch):
    config = config_for(world)
    summary, published, recorder = run(config, monkeypatch, "first")
    chunks = corpus_chunks(config)
    assert (summary["mode"], summary["action"], summary["live_version"]) == ("full", "switched", V[1])
    assert sorted(recorder.texts) == sorted(c.text for c in chunks)
    assert summary["embedded"] == len(chunks) == summary["chunks"] and summary["deleted"] == 0
    assert live_state(config) == (V[1], {c.chunk_id: c.doc_id for c in chunks})
    assert summary["metrics"]["vector"]["hit_rate"] >= 0.9 and summary["metrics"]["hybrid"]["hit_rate"] >= 0.9
    assert published["changed"] is True


def test_an_unchanged_corpus_embeds_nothing_and_loads_no_model(world, monkeypatch):
    config = config_for(world)
    before = live_state(config)
    summary, published, recorder = run(config, monkeypatch, "unchanged")
    assert (summary["mode"], published["changed"]) == ("unchanged", False)
    assert recorder.loads == 0 and recorder.texts == []
    assert (summary["embedded"], summary["deleted"], summary["skipped_unchanged"]) == (0, 0, summary["chunks"])
    assert live_state(config) == before


def test_adding_a_document_embeds_exactly_its_chunks(world, monkeypatch):
    config = config_for(world)
    _, before = live_state(config)
    (world["corpus"] / "lighthouses.html").write_text(
        "<html><head><title>Lighthouses</title></head><body><h2>Lenses</h2><p>A Fresnel lens focuses the lamp "
        "into a beam visible thirty kilometres out at sea.</p><h2>Keepers</h2><p>Keepers trimmed wicks and wound "
        "the clockwork that turned the lens every night.</p></body></html>")
    summary, _, recorder = run(config, monkeypatch, "add")
    new = [c for c in corpus_chunks(config) if c.doc_id == "lighthouses.html"]
    assert summary["mode"] == "incremental" and summary["docs"]["new"] == 1 and summary["deleted"] == 0
    assert sorted(recorder.texts) == sorted(c.text for c in new) and len(new) == 2
    assert live_state(config) == (V[1], {**before, **{c.chunk_id: c.doc_id for c in new}})
    assert top_docs(config, "What focuses the light of a lighthouse?")[0] == "lighthouses.html"


def test_changing_a_document_embeds_and_deletes_only_its_changed_chunks(world, monkeypatch):
    config = config_for(world)
    _, before = live_state(config)
    path = world["corpus"] / "chess.md"
    path.write_text(path.read_text().replace("The Sicilian Defence answers 1.e4 with c5",
                                             "The French Defence answers 1.e4 with e6"))
    summary, _, recorder = run(config, monkeypatch, "change")
    after = {c.chunk_id: c for c in corpus_chunks(config)}
    added, removed = set(after) - set(before), set(before) - set(after)
    assert summary["docs"]["changed"] == 1 and summary["docs"]["unchanged"] == len(DOCS)
    assert {after[i].doc_id for i in added} == {before[i] for i in removed} == {"chess.md"}
    assert sorted(recorder.texts) == sorted(after[i].text for i in added)
    assert all("French" in t for t in recorder.texts)
    assert summary["deleted"] == len(removed) and summary["embedded"] == len(added)
    assert any(c.doc_id == "chess.md" and c.chunk_id in before for c in after.values()), \
        "the untouched section of the changed document was kept, not re-embedded"
    assert live_state(config) == (V[1], {i: c.doc_id for i, c in after.items()})


def test_deleting_a_document_removes_exactly_its_chunks(world, monkeypatch):
    config = config_for(world)
    _, before = live_state(config)
    (world["corpus"] / "lighthouses.html").unlink()
    summary, _, recorder = run(config, monkeypatch, "delete")
    assert recorder.loads == 0 and summary["docs"]["deleted"] == 1 and summary["embedded"] == 0
    assert live_state(config)[1] == {i: d for i, d in before.items() if d != "lighthouses.html"}
    assert summary["deleted"] == sum(d == "lighthouses.html" for d in before.values())


def test_bad_files_are_skipped_and_the_live_index_keeps_what_it_had(world, monkeypatch):
    config = config_for(world)
    before = live_state(config)
    corpus = world["corpus"]
    tides = (corpus / "tides.md").read_text()
    (corpus / "tides.md").write_bytes("Gezeiten \u00fcber alles".encode("latin-1"))  # a good document gone bad
    (corpus / "scan.md").write_bytes(b"%PDF-1.4\x00\x00\x01binary")
    (corpus / "huge.txt").write_text("flood " * 20_000)
    (corpus / "empty.md").write_text("")
    try:
        summary, published, recorder = run(config, monkeypatch, "bad-files")
        reasons = {f["file"]: f["reason"] for f in summary["skipped_files"]}
        assert sorted(reasons) == ["empty.md", "huge.txt", "scan.md", "tides.md"]
        assert reasons["tides.md"].startswith("is not valid UTF-8")
        assert reasons["huge.txt"].startswith("is 0.1 MB, over corpus.max_file_mb (0.05 MB)")
        assert summary["mode"] == "unchanged" and summary["docs"]["kept_bad_input"] == 1
        assert recorder.texts == [] and live_state(config) == before
        with pytest.raises(CorpusError, match=r"has 4 bad file\(s\): empty.md is empty; huge.txt is 0.1 MB"):
            rag_steps.plan_index(config_for(world, corpus={"bad_files": "fail"}), "bad-files-fail")
        assert live_state(config) == before
    finally:
        (corpus / "tides.md").write_text(tides)
        for name in ("scan.md", "huge.txt", "empty.md"):
            (corpus / name).unlink()


def test_an_empty_corpus_is_refused_and_the_index_keeps_serving(world):
    empty = world["root"] / "empty-corpus"
    empty.mkdir()
    (empty / "notes.md").write_text("   \n")
    config = config_for(world)
    before = live_state(config)
    catalog_before = VersionCatalog(plans.paths(config).catalog).data
    with pytest.raises(CorpusError, match=rf"corpus {empty} has no readable document .* live index is untouched"):
        rag_steps.plan_index(config_for(world, corpus={"path": str(empty)}), "empty")
    assert live_state(config) == before
    assert VersionCatalog(plans.paths(config).catalog).data == catalog_before
    assert top_docs(config, "Why do corals turn white?")[0] == "coral.md"


def test_a_rebuild_that_dies_mid_batch_leaves_the_old_version_live_and_resumes(world, monkeypatch):
    config = config_for(world, chunker={"size_chars": 260, "overlap_chars": 40})
    before = live_state(config)
    answers = top_docs(config, "How do glaciers shape valleys?")
    with pytest.raises(RuntimeError, match="simulated"):
        run(config, monkeypatch, "rebuild-crash", fail_on_call=2)
    assert live_state(config) == before and top_docs(config, "How do glaciers shape valleys?") == answers
    catalog = VersionCatalog(plans.paths(config).catalog)
    assert catalog.get(V[2])["status"] == "building"
    with open_store("lancedb", INSTANCE) as store:
        assert store.count(V[2]) == 4, "the first batch (write_batch_chunks=4) was committed to the candidate"

    summary, published, recorder = run(config, monkeypatch, "rebuild-retry")
    chunks = corpus_chunks(config)
    assert len(recorder.texts) == len(chunks) - 4, "the retry embeds only what the crash left out"
    assert (summary["action"], summary["live_version"]) == ("switched", V[2])
    assert published["previous_version"] == V[1]
    assert live_state(config) == (V[2], {c.chunk_id: c.doc_id for c in chunks})
    with open_store("lancedb", INSTANCE) as store:
        assert store.list_versions() == [V[1], V[2]], "one previous version is kept for rollback"


def test_an_incremental_run_that_dies_mid_batch_leaves_the_live_version_untouched(world, monkeypatch):
    config = config_for(world, chunker={"size_chars": 260, "overlap_chars": 40})
    before = live_state(config)
    for name in ("coral.md", "volcanoes.md", "beekeeping.md", "glaciers.md"):  # every paragraph: > 4 chunks
        path = world["corpus"] / name
        path.write_text(path.read_text().replace(".\n", ", as revised.\n"))
    with pytest.raises(RuntimeError, match="simulated"):
        run(config, monkeypatch, "incremental-crash", fail_on_call=2)
    assert live_state(config) == before
    summary, _, recorder = run(config, monkeypatch, "incremental-retry")
    assert summary["mode"] == "incremental" and summary["docs"]["changed"] == 4
    assert summary["embedded"] == len(recorder.texts) + 4, "the 4 chunks staged before the crash stay"
    assert live_state(config) == (V[2], {c.chunk_id: c.doc_id for c in corpus_chunks(config)})


def test_the_gate_blocks_a_broken_embedding_model(world, monkeypatch, broken_model):
    config = config_for(world, chunker={"size_chars": 260, "overlap_chars": 40},
                        embedding={"model": str(broken_model)})
    before = live_state(config)
    blocked = (rf"candidate {V[3]} of index {INSTANCE} \(model random-minilm@\w+, chunker 260/40 chars\) is "
               rf"blocked by the evaluation gate: .*vector hit@3 drops .*The alias stays on {V[2]}")
    with pytest.raises(GateBlocked, match=blocked):
        run(config, monkeypatch, "broken")
    assert live_state(config) == before
    catalog = VersionCatalog(plans.paths(config).catalog)
    assert catalog.get(V[3])["status"] == "rejected"
    plan = rag_steps.plan_index(config, "broken-again")
    assert plan["target_version"] == V[3], "the rejected candidate is reused"
    assert plan["counts"]["chunks_to_embed"] == 0
    with pytest.raises(GateBlocked, match=rf"candidate {V[3]} of index {INSTANCE} has not passed the evaluation"):
        rag_steps.publish_index(config, plan, "broken-again")
    runs = tracking.client().search_runs([tracking.experiment_id(f"{INSTANCE}_rag_index")],
                                         filter_string="tags.`loopline.decision` = 'blocked'")
    assert len(runs) == 1 and runs[0].data.params["index_version"] == V[3]
    metrics = runs[0].data.metrics
    assert metrics["candidate_hit_at_3_vector"] < metrics["live_hit_at_3_vector"]
    # The refusal is an audit record too, with the two evaluations it compared (pipelines/audit).
    from datetime import UTC, datetime, timedelta

    from pipelines.audit.records import events

    [refused] = [e for e in events(datetime.now(UTC) - timedelta(hours=1), kinds=("rejection",))
                 if e.subject == f"index {INSTANCE}" and e.version == V[3]]
    assert (refused.decision, refused.previous) == ("rejected", V[2]) and "hit@3 drops" in refused.reason
    assert refused.evidence["candidate"]["vector"]["hit_rate"] < refused.evidence["live"]["vector"]["hit_rate"]


def test_a_good_rebuild_retires_old_versions_and_rollback_goes_back(world, monkeypatch):
    config = config_for(world)  # back to the first chunker: a new version
    summary, published, _ = run(config, monkeypatch, "rebuild-2")
    assert summary["live_version"] == V[4] and published["retired_versions"] == [V[1], V[3]]
    with open_store("lancedb", INSTANCE) as store:
        assert store.list_versions() == [V[2], V[4]]
    assert rollback(config) == {"from": V[4], "to": V[2], "changed": True}
    assert live_state(config)[0] == V[2]
    assert top_docs(config, "Which woods are violins made of?")[0] == "violins.md"
    assert rollback(config, to=V[4])["to"] == V[4] and live_state(config)[0] == V[4]
    summary, _, _ = run(config, monkeypatch, "after-rollback")
    assert (summary["mode"], summary["live_version"]) == ("unchanged", V[4])


def test_mlflow_has_the_lineage_of_every_run(world):
    runs = tracking.client().search_runs([tracking.experiment_id(f"{INSTANCE}_rag_index")],
                                         filter_string="tags.`loopline.decision` != 'blocked'")
    first = next(r for r in runs if r.data.tags["loopline.run_key"].startswith("first:"))
    assert first.data.params["model_id"].startswith("all-MiniLM-L6-v2@")
    assert (first.data.params["chunker_size_chars"], first.data.params["index_version"]) == ("300", V[1])
    assert first.data.params["corpus_digest"] and first.data.metrics["hit_at_3_vector"] >= 0.9
    assert int(first.data.metrics["chunks_embedded"]) == int(first.data.params["chunks"]) == 16


def test_the_staging_and_plans_of_superseded_runs_are_cleaned_up(world):
    p = plans.paths(config_for(world))
    assert len(list(p.plans.glob("*.json"))) == 1
    assert not p.staging.exists() or list(p.staging.iterdir()) == []
    shutil.rmtree(world["root"] / "empty-corpus", ignore_errors=True)
