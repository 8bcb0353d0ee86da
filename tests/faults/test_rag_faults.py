"""Faults around the RAG index: killed writers, a held lock, rollbacks racing a build, readers throughout.

Each test names the fault, where it is injected and the invariant it checks. Writers are killed for real:
a child process runs the steps with ``LOOPLINE_FAULT_CRASH_AT`` naming a point in :mod:`pipelines.rag.steps`
where it dies with ``os._exit`` (what SIGKILL leaves behind: no ``finally``, no cleanup), or a child that
holds the instance lock is killed with SIGKILL. Rollbacks run through the command line, in their own
process. Readers are threads of this process that query the live version the way
:func:`pipelines.rag.steps.search` does and fail the test on any error, or if they made no read at all.

Invariants: the store's alias and the catalog agree on the one live version; a reader never fails and never
sees an incremental update half-applied; after a re-run the index holds exactly what a clean build of the
same corpus holds, without duplicate chunks; a rollback is never silently undone by a build planned
before it.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipelines.core.locks import LockTimeout
from pipelines.rag import embeddings, plans, versions
from pipelines.rag import steps as rag_steps
from pipelines.rag.config import RagIndexConfig
from pipelines.rag.plans import LiveVersionMoved
from pipelines.rag.stores import open_store
from pipelines.rag.versions import VersionCatalog, catalog_path, load_rag_config, rollback
from support.toy_corpus import CORPUS, QUESTIONS

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
STEPS = ("plan_index", "embed_chunks", "evaluate_index", "publish_index", "record_index")
RUN_STEPS = """
import sys
from pipelines.rag.steps import run_once
from pipelines.rag.versions import load_rag_config
run_once(load_rag_config(sys.argv[1]), sys.argv[2])
"""


# --- worlds, processes, readers ---------------------------------------------------------------------------

def world(root: Path, instance: str, overlap: int = 40, corpus: Path | None = None) -> tuple[RagIndexConfig, Path]:
    """The toy corpus (written once per root), its questions, and a YAML config for ``instance``."""
    root.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        corpus = root / "corpus"
        if not corpus.exists():
            corpus.mkdir(parents=True)
            for name, text in CORPUS.items():
                (corpus / name).write_text(text)
    questions = root / "questions.yaml"
    if not questions.exists():
        questions.write_text(yaml.safe_dump({"questions": [{"question": q, "source": s} for q, s in QUESTIONS]}))
    raw = {
        "template": "rag_index", "instance": instance,
        "corpus": {"path": str(corpus)}, "chunker": {"size_chars": 200, "overlap_chars": overlap},
        "embedding": {"batch_size": 4, "write_batch_chunks": 2}, "index": {"previous_versions_kept": 1},
        "evaluation": {"questions": str(questions), "k": 2, "min_hit_rate": 0.5,
                       "max_hit_rate_drop": 0.3, "max_mrr_drop": 0.3},
    }
    path = root / f"{instance}_o{overlap}_rag_index.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_rag_config(path), path


def child_env(crash_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LOOPLINE_FAULT_CRASH_AT", None)
    if crash_at:
        env["LOOPLINE_FAULT_CRASH_AT"] = crash_at
    return env


def run_in_child(config_path: Path, run_id: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    """The five steps in a child process (``run_once``), killed at ``crash_at`` when given."""
    return subprocess.run([sys.executable, "-c", RUN_STEPS, str(config_path), run_id], cwd=REPO,
                          env=child_env(crash_at), capture_output=True, text=True, timeout=300)


def rollback_command(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m pipelines.rag.versions <yaml> rollback``, as a person runs it."""
    return subprocess.run([sys.executable, "-m", "pipelines.rag.versions", str(config_path), "rollback", *args],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)


def lock_holder(instance: str) -> subprocess.Popen:
    """A child process that takes ``rag:<instance>``, says so, then sleeps until it is killed."""
    code = textwrap.dedent(f"""
        import time
        from pipelines.core.locks import instance_lock
        with instance_lock("rag:{instance}"):
            print("held", flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env=child_env())
    assert process.stdout.readline().strip() == "held"
    return process


def live_state(config: RagIndexConfig) -> tuple[str | None, dict[str, str], int]:
    """(live version, its chunk id → document id, its row count)."""
    with open_store("lancedb", config.instance) as store:
        live = store.live_version()
        return live, store.chunk_ids(live) if live else {}, store.count(live) if live else 0


def assert_one_live_version(config: RagIndexConfig) -> str:
    """The invariant of every test: the catalog records exactly one live version, the one the alias names."""
    live = live_state(config)[0]
    recorded = VersionCatalog(catalog_path(config)).live_versions()
    assert recorded == [live], f"alias on {live}, catalog says live: {recorded}"
    return live


class Reader(threading.Thread):
    """Queries the live version over and over, as ``steps.search`` does; records errors and what it saw.

    Each read resolves the alias once, looks the version up in the catalog (``search`` refuses a live
    version the catalog does not know), and searches it. With ``snapshots`` it also records the live
    version's chunk ids (one consistent read of the table) to check that an update is seen whole.
    """

    def __init__(self, config: RagIndexConfig, snapshots: bool = False):
        super().__init__(daemon=True)
        self.config, self.snapshots = config, snapshots
        embedder = embeddings.load_embedder(embeddings.resolve_model_path(config.embedding.model))
        self.vector = embedder.encode([QUESTIONS[0][0]])[0]
        self.reads, self.errors, self.seen, self.versions = 0, [], [], set()
        self.done = threading.Event()

    def run(self) -> None:
        with open_store("lancedb", self.config.instance) as store:
            while not self.done.is_set():
                try:
                    live = store.live_version()
                    if VersionCatalog(catalog_path(self.config)).get(live) is None:
                        raise AssertionError(f"live version {live} is not in the catalog")
                    hits = store.search(QUESTIONS[0][0], self.vector, 2, mode="vector", version=live)
                    if not hits:
                        raise AssertionError(f"no hits from {live}")
                    if self.snapshots:
                        self.seen.append(frozenset(store.chunk_ids(live)))
                    self.versions.add(live)
                    self.reads += 1
                except Exception as exc:  # noqa: BLE001 - any failure of a reader is what we look for
                    self.errors.append(exc)
                time.sleep(0.02)

    def stop(self) -> Reader:
        self.done.set()
        self.join(timeout=60)
        assert self.errors == [], f"{len(self.errors)} reader errors, first: {self.errors[0]!r}"
        assert self.reads > 0, "the reader made no read: this test proved nothing"
        return self


def clean_build(root: Path, corpus: Path, instance: str) -> dict[str, str]:
    """Chunk id → document id of a fresh full build of ``corpus`` (another instance, same settings)."""
    config, _ = world(root, instance, corpus=corpus)
    rag_steps.run_once(config, "clean")
    return live_state(config)[1]


# --- the cases ------------------------------------------------------------------------------------------------

def rollback_and_check(config: RagIndexConfig, path: Path) -> str:
    """Run the rollback command's entry point (in this process: its lock is a lock file of its own, as in
    another process); check it went to the version live before, with alias and catalog agreeing."""
    live = assert_one_live_version(config)
    with open_store("lancedb", config.instance) as store:
        available = store.list_versions()
    to = next(v for v in VersionCatalog(catalog_path(config)).previous_versions(live) if v in available)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert versions.main([str(path), "rollback"]) == 0
    assert f"rolled back from {live} to {to}" in out.getvalue()
    assert assert_one_live_version(config) == to
    return to


def test_a_rollback_at_each_step_boundary_of_a_full_build_leaves_one_live_version(tmp_path):
    """Fault: the rollback command, run at each step boundary of a full build in turn (before plan_index,
    embed_chunks, evaluate_index, publish_index, record_index, and after the last), one full build per
    boundary, with a reader thread querying the live version throughout.

    Invariants: alias and catalog agree on one live version after every rollback and every build; no
    reader error; a build planned before the rollback does not switch over it (LiveVersionMoved, nothing
    changed), and its re-run evaluates the candidate against the version really live and switches.
    """
    instance = "ragrollback"
    rag_steps.run_once(world(tmp_path, instance, overlap=30)[0], "v1")
    rag_steps.run_once(world(tmp_path, instance, overlap=31)[0], "v2")
    reader = Reader(world(tmp_path, instance, overlap=31)[0])
    reader.start()
    try:
        for boundary in range(len(STEPS) + 1):
            config, path = world(tmp_path, instance, overlap=40 + boundary)  # a new chunker: a full build
            plan = embedded = verdict = rolled_to = None
            for i, name in enumerate(STEPS):
                if i == boundary:
                    rolled_to = rollback_and_check(config, path)
                if name == "plan_index":
                    plan = rag_steps.plan_index(config, f"build{boundary}")
                    assert plan["mode"] == "full"
                elif name == "embed_chunks":
                    embedded = rag_steps.embed_chunks(config, plan)
                elif name == "evaluate_index":
                    verdict = rag_steps.evaluate_index(config, plan, f"build{boundary}")
                elif name == "publish_index" and 1 <= boundary <= 3:
                    with pytest.raises(LiveVersionMoved, match=rf"live version is now {rolled_to} .*nothing was"):
                        rag_steps.publish_index(config, plan, f"build{boundary}")
                    assert assert_one_live_version(config) == rolled_to, "the rollback stands"
                    break
                elif name == "publish_index":
                    rag_steps.publish_index(config, plan, f"build{boundary}")
                else:
                    rag_steps.record_index(config, plan, embedded, verdict, f"build{boundary}")
            if boundary == len(STEPS):
                rolled_to = rollback_and_check(config, path)
            if 1 <= boundary <= 3:  # the re-run evaluates the candidate against the version really live
                summary = rag_steps.run_once(config, f"rerun{boundary}")
                assert (summary["mode"], summary["live_version"]) == ("full", plan["target_version"])
                assert summary["published"]["previous_version"] == rolled_to
            expected = rolled_to if boundary >= 4 else plan["target_version"]
            assert assert_one_live_version(config) == expected, f"rollback before step {boundary}"
    finally:
        reader.stop()
    assert len(reader.versions) >= 3, "the reader read across several live versions"


def test_a_writer_killed_at_each_point_of_an_incremental_run_leaves_no_duplicates(tmp_path):
    """Fault: the process running an incremental run is killed (os._exit at a named point) after its first
    staged batch (``rag:embed:after_batch``), just before the update is committed (``rag:publish:before_apply``)
    and just after (``rag:publish:after_apply``, before the FTS index, the catalog and the staging clean-up),
    with a reader thread watching the live version's rows throughout.

    Invariants: after each kill the live version is exactly the old or exactly the new content (the reader
    never sees both texts of a changed chunk, nor any duplicate row); after the re-run the live version holds
    exactly the chunks a clean build of the same corpus holds, and the catalog one live version.
    """
    config, path = world(tmp_path, "ragkill")
    rag_steps.run_once(config, "first")
    live, before, _ = live_state(config)
    corpus = Path(config.corpus.path)
    (corpus / "tea.md").write_text(CORPUS["tea.md"].replace("two minutes", "three minutes"))
    (corpus / "bikes.md").write_text(CORPUS["bikes.md"].replace("six to eight bar", "five to seven bar"))
    (corpus / "owls.txt").unlink()
    (corpus / "gulls.md").write_text("# Gulls\n\n## Food\n\nGulls eat fish, crabs and chips left on the pier; "
                                     "they drop shells onto rocks to crack them.")
    after = clean_build(tmp_path / "clean", corpus, "ragclean")
    changed = set(before) ^ set(after)
    assert len(set(after) - set(before)) >= 3 and set(before) - set(after), "the update adds and deletes"
    reader = Reader(config, snapshots=True)
    reader.start()
    try:
        for point, expected in (("rag:embed:after_batch", before), ("rag:publish:before_apply", before),
                                ("rag:publish:after_apply", after)):
            killed = run_in_child(path, f"killed-{point}", crash_at=point)
            assert killed.returncode == 137, f"{point}: {killed.returncode} {killed.stderr[-2000:]}"
            assert f"Fault injection: dying at {point}" in killed.stderr
            now, ids, rows = live_state(config)
            assert (now, set(ids)) == (live, set(expected)), f"killed at {point}"
            assert rows == len(ids), f"duplicate rows after a kill at {point}"
            assert_one_live_version(config)
        summary = rag_steps.run_once(config, "rerun")
    finally:
        reader.stop()
    now, ids, rows = live_state(config)
    assert (now, ids, rows) == (live, after, len(after)), "the re-run leaves what a clean build gives"
    assert summary["mode"] == "unchanged", "the update was committed before the last kill"
    assert_one_live_version(config)
    snapshots = set(reader.seen)
    assert snapshots <= {frozenset(before), frozenset(after)}, \
        f"a reader saw a half-applied update: {[sorted(s & changed) for s in snapshots]}"
    assert frozenset(after) in snapshots
    staging = plans.paths(config).staging
    assert not staging.exists() or list(staging.iterdir()) == []


def test_a_crash_between_moving_the_alias_and_recording_it_is_repaired(tmp_path):
    """Fault: the process publishing a full build is killed right after the alias moved, before the catalog
    recorded it (``rag:publish:after_switch``).

    Invariants: the next writer (here the rollback command, then a re-run) finds the catalog behind the
    alias and records the alias's version as the one live version; never two live records.
    """
    _, first = world(tmp_path, "ragswitch", overlap=40)
    config_1 = load_rag_config(first)
    rag_steps.run_once(config_1, "v1")
    config, path = world(tmp_path, "ragswitch", overlap=41)
    killed = run_in_child(path, "killed-switch", crash_at="rag:publish:after_switch")
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert live_state(config)[0] == "ragswitch_v2", "the alias moved before the kill"
    assert VersionCatalog(catalog_path(config)).live_versions() == ["ragswitch_v1"], "the kill's window"
    done = rollback_command(path)
    assert done.returncode == 0, done.stderr
    assert "rolled back from ragswitch_v2 to ragswitch_v1" in done.stdout
    assert assert_one_live_version(config) == "ragswitch_v1"
    assert rollback(config, to="ragswitch_v2")["changed"]
    summary = rag_steps.run_once(config, "after")
    assert (summary["mode"], summary["live_version"]) == ("unchanged", "ragswitch_v2")
    assert assert_one_live_version(config) == "ragswitch_v2"


def test_writers_wait_for_a_lock_held_by_another_process_and_go_on_once_it_is_killed(tmp_path):
    """Fault: another process holds ``rag:<instance>`` while the rollback command and publish_index run;
    then the holder is killed with SIGKILL.

    Invariants: while the lock is held the rollback times out with a retryable LockTimeout and nothing
    moves, and publish waits without changing the live version; once the holder dies, publish goes on and
    the index is what a clean build of the corpus gives.
    """
    config, _ = world(tmp_path, "raglock")
    rag_steps.run_once(config, "first")
    corpus = Path(config.corpus.path)
    (corpus / "kites.md").write_text(CORPUS["kites.md"] + "\n\n## Safety\n\nNever fly a kite near power lines.")
    plan = rag_steps.plan_index(config, "locked")
    rag_steps.embed_chunks(config, plan)
    rag_steps.evaluate_index(config, plan, "locked")
    before = live_state(config)
    holder = lock_holder("raglock")
    try:
        with pytest.raises(LockTimeout, match=r"lock 'rag:raglock' is held by another run"):
            rollback(config, lock_timeout_s=0.5)
        published: dict = {}
        writer = threading.Thread(target=lambda: published.update(rag_steps.publish_index(config, plan, "locked")))
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive() and published == {}, "publish waits for the lock"
        assert live_state(config) == before, "nothing changed while another process held the lock"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    writer.join(timeout=120)
    assert published["action"] == "updated_in_place"
    assert live_state(config)[1] == clean_build(tmp_path / "clean", corpus, "raglockclean")
    assert assert_one_live_version(config) == "raglock_v1"


def test_rollback_commands_racing_a_full_build_leave_one_live_version(tmp_path):
    """Fault: a full build runs while the rollback command runs again and again in other processes, with a
    reader thread querying throughout.

    Invariants: the lock serialises them (no reader error, no version without a catalog record, no
    duplicate rows); alias and catalog agree on one live version at the end; if a rollback came between the
    build's plan and its publish, the build refuses to switch (LiveVersionMoved) and its re-run switches.
    """
    instance = "ragrace"
    rag_steps.run_once(world(tmp_path, instance, overlap=30)[0], "v1")
    rag_steps.run_once(world(tmp_path, instance, overlap=31)[0], "v2")
    config, path = world(tmp_path, instance, overlap=32)
    reader = Reader(config)
    reader.start()
    outcome: list[BaseException | dict] = []

    def build() -> None:
        try:
            outcome.append(rag_steps.run_once(config, "race"))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it below
            outcome.append(exc)

    try:
        builder = threading.Thread(target=build)
        builder.start()
        rollbacks = 0
        while builder.is_alive() and rollbacks < 3:
            done = rollback_command(path)
            assert done.returncode == 0, done.stderr
            rollbacks += 1
            assert_one_live_version(config)
        builder.join(timeout=300)
        if isinstance(outcome[0], BaseException):
            assert isinstance(outcome[0], LiveVersionMoved), repr(outcome[0])
            summary = rag_steps.run_once(config, "race-rerun")
            assert (summary["mode"], summary["live_version"]) == ("full", f"{instance}_v3")
    finally:
        reader.stop()
    assert rollbacks >= 1
    live = assert_one_live_version(config)
    _, ids, rows = live_state(config)
    assert rows == len(ids), f"duplicate rows in {live}"
