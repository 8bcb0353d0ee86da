"""Untrusted inputs: hostile model artifacts in the registry, hostile paths in XComs, hostile corpus folders.

Each test names the fault, where it is injected and the invariant checked afterwards.

The model world: a data home of its own with a churn champion v1 trained and promoted by the real steps on a
small training set built in code. Hostile versions are registered next to it the way anyone who can write to
the registry could: a real fitted model wrapped with a tripwire, saved with MLflow's skops or cloudpickle format,
its MLmodel listing the tripwire as trusted. The tripwire writes a file when its code runs (while loading, or
while predicting); it is armed (``LOOPLINE_TEST_TRIPWIRE``) only after registration, because MLflow itself loads
a model back while logging it. Each test also shows that MLflow's own loader does run it: the tripwire works,
so its silence under Loopline's loader means something.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.core import tracking
from pipelines.core.home import PathOutsideDataHome
from pipelines.core.trusted_models import UntrustedModel, load_registered_model
from support.churn_world import configs, own_data_home

pytestmark = pytest.mark.faults

PROMOTION, REASON = "loopline.promotion", "loopline.promotion_reason"
NUMERIC, CATEGORICAL = ["tenure_days", "sessions_30d", "monthly_charges"], ["plan"]


# --- the tripwires: code that runs if an artifact is trusted --------------------------------------------------

def _spring(how: str) -> None:
    """Record that code from a model artifact ran (only once armed)."""
    target = os.environ.get("LOOPLINE_TEST_TRIPWIRE")
    if target:
        with open(target, "a") as handle:
            handle.write(how + "\n")


def spring_and_return(how: str, model):
    _spring(how)
    return model


def spring_on_call(X):
    _spring("called")
    return X


class Tripwire:
    """A step whose ``__setstate__`` runs when skops builds it: what a crafted class in an artifact would do."""

    def __init__(self):
        self.armed_by = "LOOPLINE_TEST_TRIPWIRE"

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X

    def __setstate__(self, state):
        _spring("loaded")
        self.__dict__.update(state)


class PickleTrojan:
    """Unpickling it calls :func:`spring_and_return` (``__reduce__``): the real model comes back, the code ran."""

    def __init__(self, model):
        self.model = model

    def predict_proba(self, X):
        return self.model.predict_proba(X)

    def __reduce__(self):
        return spring_and_return, ("unpickled", self.model)


# --- the world --------------------------------------------------------------------------------------------------

def training_set(settings) -> dict:
    """A small churn training set built in code (label from sessions), written under the data home."""
    import pandas as pd

    from pipelines.training.dataset import dataset_digest

    rng = np.random.default_rng(7)
    n = 900
    frame = pd.DataFrame({
        "customer_id": np.arange(n), "event_timestamp": pd.Timestamp("2026-11-01", tz="UTC"),
        "tenure_days": rng.integers(1, 1500, n), "sessions_30d": rng.poisson(12, n).astype(float),
        "monthly_charges": rng.normal(50, 10, n).round(2), "plan": rng.choice(["basic", "pro"], n),
    })
    frame["label"] = ((frame["sessions_30d"] + rng.normal(0, 2, n)) < 10).astype(int)
    frame["label_day"] = pd.Timestamp("2026-11-02").date()
    frame["split"] = np.where(np.arange(n) < int(n * 0.7), "train", "holdout")
    frame = frame[["customer_id", "event_timestamp", "label", "label_day", "split", *NUMERIC, *CATEGORICAL]]
    path = settings.path("training", "churn", "window=2026-10-04_2026-11-01", "training_set-test.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    frame = pd.read_parquet(path)  # the digest of what readers (the drift check) will read back
    return {"path": str(path), "window_start": "2026-10-04", "window_end": "2026-11-01", "rows": n,
            "train_rows": int((frame["split"] == "train").sum()),
            "holdout_rows": int((frame["split"] == "holdout").sum()), "label_rate": float(frame["label"].mean()),
            "labels_without_features": 0, "digest": dataset_digest(frame), "feature_service": "churn_model_v1",
            "feast_project": "churn", "numeric": NUMERIC, "categorical": CATEGORICAL, "entity_key": "customer_id"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Champion v1 (trained, registered and promoted by the steps) and its fitted estimator."""
    from pipelines.training.steps import evaluate_and_promote, train_and_register

    home = tmp_path_factory.mktemp("untrusted-home")
    with own_data_home(home) as settings:
        _, training = configs()
        training = training.model_copy(update={
            "hyperparameters": training.hyperparameters.model_copy(update={"max_iter": 30}),
            "promotion": training.promotion.model_copy(update={
                "slices": training.promotion.slices.model_copy(update={"min_rows": 5})})})
        info = training_set(settings)
        v1 = train_and_register(training, info, settings=settings)
        promoted = evaluate_and_promote(training, info, v1, settings=settings)
        assert promoted["promoted"] and promoted["champion"] == "1", promoted
        fitted = load_registered_model("churn", "1", settings).estimator
        yield {"settings": settings, "home": home, "training": training, "info": info, "fitted": fitted}


@pytest.fixture
def tripwire(tmp_path) -> Path:
    """The file the tripwire writes; armed only inside the test (after the hostile version is registered)."""
    return tmp_path / "sprung.txt"


def register_hostile(world, model, fmt: str, trusted: list[str] | None = None) -> str:
    """Log ``model`` like a training run would (signature, skops or cloudpickle) and register it; its version."""
    import mlflow
    import pandas as pd

    settings, path = world["settings"], world["info"]["path"]
    frame = pd.read_parquet(path)
    example = frame[NUMERIC + CATEGORICAL].head(5)
    with mlflow.start_run(experiment_id=tracking.experiment_id("churn_training", settings)):
        # The lineage a real run logs, so that the drift check gets as far as loading the model.
        mlflow.log_input(mlflow.data.from_pandas(frame, source=path, targets="label"), context="training")
        mlflow.log_param("dataset_digest", world["info"]["digest"])
        kwargs = {"serialization_format": fmt}
        if fmt == "skops":
            kwargs["skops_trusted_types"] = trusted
        info = mlflow.sklearn.log_model(model, name="model", input_example=example,
                                        signature=mlflow.models.infer_signature(example, model.predict_proba(example)),
                                        pyfunc_predict_fn="predict_proba", **kwargs)
    version = str(mlflow.register_model(info.model_uri, "churn").version)
    tracking.client(settings).set_registered_model_alias("churn", "challenger", version)
    return version


def attacker_list(model) -> list[str]:
    """What a crafted artifact writes into its MLmodel: every type skops would otherwise refuse."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def champion_now(settings) -> str | None:
    holder = tracking.champion("churn", settings)
    return str(holder.version) if holder else None


def trained(version: str) -> dict:
    return {"version": version, "run_id": "", "reused": False, "training_key": f"hostile-{version}"}


@pytest.fixture
def hostile_skops(world):
    """A real fitted model behind a Tripwire step, saved as skops with the Tripwire in its own trusted list."""
    from sklearn.pipeline import Pipeline

    model = Pipeline([("tripwire", Tripwire()), ("model", world["fitted"])])
    trusted = attacker_list(model)
    assert any(t.endswith(".Tripwire") for t in trusted), trusted
    return register_hostile(world, model, "skops", trusted)


def test_a_challenger_with_an_untrusted_type_is_refused_unloaded_and_the_champion_stays(world, hostile_skops,
                                                                                      tripwire, monkeypatch):
    """Fault: a version whose skops file holds a class Loopline does not trust (its ``__setstate__`` runs code),
    its MLmodel listing that class as trusted, given the ``challenger`` alias.
    Where: the registry, before ``evaluate_and_promote`` (with ``force_promote``) loads it.
    Invariant: refused with UntrustedModel (not retryable) naming the model, version, type and what to do; the
    tripwire did not spring; ``@champion`` still on v1; the version tagged rejected with the reason."""
    import mlflow

    from pipelines.core.errors import NotRetryable
    from pipelines.training import steps

    settings, version = world["settings"], hostile_skops
    monkeypatch.setenv("LOOPLINE_TEST_TRIPWIRE", str(tripwire))
    with pytest.raises(UntrustedModel, match=rf"churn version {version} holds types outside Loopline's "
                                             r"trusted-types allowlist: \S*Tripwire\. It was not loaded \(nothing in "
                                             r"it ran\) .* Re-train it with the training DAG; or, .* add them to "
                                             r"TRUSTED_TYPES in pipelines/core/trusted_models.py") as refused:
        steps.evaluate_and_promote(world["training"], world["info"], trained(version), force=True, settings=settings)
    assert isinstance(refused.value, NotRetryable)
    assert not tripwire.exists(), "code from the artifact ran"
    assert champion_now(settings) == "1"
    tags = tracking.client(settings).get_model_version("churn", version).tags
    assert tags[PROMOTION] == "rejected" and tags[REASON].startswith(f"not loaded: churn version {version} holds")

    # The scoring and drift load sites use the same loader: the version named by an alias is refused too.
    with pytest.raises(UntrustedModel, match=r"Tripwire"):
        load_registered_model("churn", version, settings)
    assert not tripwire.exists()

    # Control: MLflow's own loader believes the artifact's list, and the tripwire springs.
    mlflow.pyfunc.load_model("models:/churn@challenger")
    assert tripwire.read_text() == "loaded\n"


def test_a_function_the_allowlist_does_not_name_is_refused_before_anything_calls_it(world, tripwire, monkeypatch):
    """Fault: a FunctionTransformer of an arbitrary function in front of the real model (skops, listed trusted).
    Where: the registry; loaded by ``load_registered_model`` (scoring, drift) and by the promotion step.
    Invariant: refused naming the function; never called; champion unchanged. MLflow's loader calls it."""
    import mlflow
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipelines.training import steps

    settings = world["settings"]
    model = Pipeline([("anything", FunctionTransformer(spring_on_call)), ("model", world["fitted"])])
    version = register_hostile(world, model, "skops", attacker_list(model))
    monkeypatch.setenv("LOOPLINE_TEST_TRIPWIRE", str(tripwire))
    with pytest.raises(UntrustedModel, match=rf"churn version {version} holds types .*spring_on_call"):
        steps.evaluate_and_promote(world["training"], world["info"], trained(version), settings=settings)
    assert not tripwire.exists() and champion_now(settings) == "1"

    served = mlflow.pyfunc.load_model("models:/churn@challenger")
    served.predict(__import__("pandas").read_parquet(world["info"]["path"])[NUMERIC + CATEGORICAL].head(3))
    assert tripwire.read_text() == "called\n"


def test_a_pickle_only_version_is_refused_unopened(world, tripwire, monkeypatch):
    """Fault: a version saved with cloudpickle (what an older Loopline wrote for torch_mlp, or a crafted one whose
    unpickling calls a function). Where: the registry, before the promotion step loads it.
    Invariant: refused as pickle-only, the file never unpickled (tripwire silent), champion unchanged."""
    import mlflow

    from pipelines.training import steps

    settings = world["settings"]
    version = register_hostile(world, PickleTrojan(world["fitted"]), "cloudpickle")
    monkeypatch.setenv("LOOPLINE_TEST_TRIPWIRE", str(tripwire))
    with pytest.raises(UntrustedModel, match=rf"churn version {version} is saved as cloudpickle, which runs code "
                                             r"while it loads .* re-train it with the training DAG"):
        steps.evaluate_and_promote(world["training"], world["info"], trained(version), force=True, settings=settings)
    assert not tripwire.exists() and champion_now(settings) == "1"

    mlflow.pyfunc.load_model("models:/churn@challenger")
    assert tripwire.read_text() == "unpickled\n"


def test_inputs_an_older_loopline_pickled_are_trained_again_as_skops(world):
    """Fault: an older Loopline registered a version of these very inputs as cloudpickle (same training key).
    Where: the registry, before ``train_and_register`` of the same inputs.
    Invariant: the pickle is not reused (workers would refuse it); a new version saved as skops is registered
    under the same key, and the next run of the same inputs reuses that one."""
    from pipelines.core.trusted_models import serialization_format
    from pipelines.training import steps

    settings = world["settings"]
    config = world["training"].model_copy(update={"seed": 11})
    old = register_hostile(world, world["fitted"], "cloudpickle")
    tracking.client(settings).set_model_version_tag("churn", old, steps.TRAINING_KEY_TAG,
                                                    steps.training_key(config, world["info"]))
    first = steps.train_and_register(config, world["info"], settings=settings)
    assert not first["reused"] and int(first["version"]) > int(old)
    assert serialization_format("churn", first["version"], settings) == "skops"
    assert serialization_format("churn", old, settings) == "cloudpickle"
    again = steps.train_and_register(config, world["info"], settings=settings)
    assert again["reused"] and again["version"] == first["version"]


def test_an_untrusted_champion_blocks_the_gate_without_retries_and_is_never_loaded(world, tripwire, monkeypatch):
    """Fault: ``@champion`` moved (by hand, or left by an older Loopline) to a pickle-only version.
    Where: the registry, before ``evaluate_and_promote`` of a good challenger and the drift check's reference.
    Invariant: the gate does not compare and does not promote (ChampionUntrusted, not retryable, saying
    force_promote after a review); the challenger is tagged rejected; the alias stays; nothing unpickled; the
    drift check's reference refuses the champion the same way."""
    from pipelines.core.errors import NotRetryable
    from pipelines.drift import tabular
    from pipelines.drift.config import TabularDrift
    from pipelines.training import steps

    settings = world["settings"]
    old = register_hostile(world, PickleTrojan(world["fitted"]), "cloudpickle")
    good = steps.train_and_register(world["training"].model_copy(update={"seed": 3}), world["info"],
                                    settings=settings)
    client = tracking.client(settings)
    try:
        client.set_registered_model_alias("churn", tracking.CHAMPION, old)
        monkeypatch.setenv("LOOPLINE_TEST_TRIPWIRE", str(tripwire))
        with pytest.raises(steps.ChampionUntrusted, match=rf"champion v{old} cannot be loaded safely \(churn "
                                                          rf"version {old} is saved as cloudpickle.*version "
                                                          rf"{good['version']} was not compared and is not promoted: "
                                                          r"promote it with force_promote after reviewing it") as e:
            steps.evaluate_and_promote(world["training"], world["info"], good, settings=settings)
        assert isinstance(e.value, NotRetryable)
        assert champion_now(settings) == old
        assert client.get_model_version("churn", good["version"]).tags[PROMOTION] == "rejected"
        with pytest.raises(UntrustedModel, match=rf"churn version {old} is saved as cloudpickle"):
            tabular.champion_reference(world["training"], TabularDrift(training_config="churn_training"), settings)
        assert not tripwire.exists()
    finally:
        client.set_registered_model_alias("churn", tracking.CHAMPION, "1")


def test_the_allowlist_loads_every_training_family(world):
    """Not a fault: what Loopline itself registers (both families) loads through the allowlist and scores."""
    from pipelines.training import steps

    settings = world["settings"]
    torch_config = world["training"].model_copy(update={
        "family": "torch_mlp",
        "hyperparameters": world["training"].hyperparameters.model_copy(update={"epochs": 5})})
    torch_version = steps.train_and_register(torch_config, world["info"], settings=settings)
    frame = __import__("pandas").read_parquet(world["info"]["path"])
    for version in ("1", torch_version["version"]):
        model = load_registered_model("churn", version, settings)
        assert model.input_names == NUMERIC + CATEGORICAL
        probabilities = model.predict(frame.head(20))
        assert probabilities.shape == (20, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    artifact = Path(mlflow_artifact(settings, torch_version["version"]))
    assert (artifact / "model.skops").is_file() and not list(artifact.glob("*.pkl"))


def mlflow_artifact(settings, version: str) -> str:
    from urllib.parse import urlparse

    return urlparse(tracking.client(settings).get_model_version_download_uri("churn", version)).path


def test_a_tree_with_out_of_range_nodes_is_refused_before_it_predicts(world):
    """Fault: a gradient-boosting tree whose node points past the end of its node array (what a crafted skops
    file can hold: TreePredictor is allowlisted, its arrays are not checked by skops).
    Where: the fitted model's first tree, before :func:`check_trees` (which the loader runs after skops).
    Invariant: refused naming the tree and node; the untouched model passes."""
    import copy

    from pipelines.core.trusted_models import check_trees

    check_trees(world["fitted"], "churn version 1")
    crafted = copy.deepcopy(world["fitted"])
    classifier = crafted.steps[-1][1]
    nodes = classifier._predictors[0][0].nodes
    split = int(np.flatnonzero(nodes["is_leaf"] == 0)[0])
    nodes["left"][split] = len(nodes) + 1000
    with pytest.raises(UntrustedModel, match=rf"crafted: tree 0 of iteration 0 has a malformed node {split}"):
        check_trees(crafted, "crafted")
    nodes["left"][split] = split  # a loop back to itself
    with pytest.raises(UntrustedModel, match=rf"malformed node {split}"):
        check_trees(crafted, "crafted")


# --- paths handed between steps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hostile", ["/etc/passwd", "{home}/training/../../outside.parquet", "{link}"])
def test_a_training_set_path_outside_the_home_is_refused(world, tmp_path, hostile):
    """Fault: the XCom of ``build_training_set`` names a file outside the data home (absolute, ``..``, or a
    symlink inside the home that points out). Where: ``validate_training_set`` and ``evaluate_and_promote``.
    Invariant: PathOutsideDataHome (not retryable) naming the XCom and the path; nothing read, nothing recorded."""
    from pipelines.training import steps

    settings = world["settings"]
    outside = tmp_path / "outside.parquet"
    __import__("shutil").copy(world["info"]["path"], outside)
    link = settings.path("training", "churn", "link.parquet")
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    info = {**world["info"], "path": hostile.format(home=settings.data_home, link=link)}
    for step in (lambda: steps.validate_training_set(world["training"], info, settings=settings),
                 lambda: steps.evaluate_and_promote(world["training"], info, trained("1"), settings=settings)):
        with pytest.raises(PathOutsideDataHome, match=r"XCom build_training_set.path is .* outside the data home"):
            step()
    assert champion_now(settings) == "1"
    link.unlink()


def test_rag_plan_references_out_of_the_home_are_refused_and_nothing_is_removed(tmp_path):
    """Fault: the XCom of ``plan_index`` names a plan file outside the data home, or a plan id that climbs out of
    the staging folder (``publish_index`` removes the staging folder of the plan it applied).
    Where: ``embed_chunks`` and ``publish_index`` given the hostile XCom.
    Invariant: PathOutsideDataHome before anything is read or removed; the victim folder is intact."""
    import yaml

    from pipelines.rag import steps as rag_steps
    from pipelines.rag.versions import load_rag_config

    home = tmp_path / "home"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (victim / "0123456789abcdef.json").write_text('{"mode": "incremental"}')
    questions = tmp_path / "questions.yaml"
    questions.write_text(yaml.safe_dump({"questions": [{"question": "q?", "source": "a.md"}]}))
    config_path = tmp_path / "hostile_rag_index.yaml"
    config_path.write_text(yaml.safe_dump({"template": "rag_index", "instance": "hostile",
                                           "corpus": {"path": str(tmp_path)},
                                           "evaluation": {"questions": str(questions)}}))
    with own_data_home(home) as settings:
        config = load_rag_config(config_path)
        staging_depth = len(rag_steps.plans.paths(config, settings).staging.relative_to(tmp_path).parts)
        climbing = "/".join([".."] * staging_depth) + "/victim"
        base = {"instance": "hostile", "mode": "incremental", "live_version": None, "target_version": "hostile_v1"}
        cases = [
            ({**base, "plan_id": "0123456789abcdef", "plan_path": str(victim / "0123456789abcdef.json")},
             r"XCom plan_index.plan_path is '.*victim/0123456789abcdef.json' .* outside the data home"),
            ({**base, "plan_id": climbing, "plan_path": str(home / "rag" / "hostile" / "plans" / "x.json")},
             r"XCom plan_index.plan_id is '(\.\./)+victim', not a plan id"),
        ]
        for plan, message in cases:
            with pytest.raises(PathOutsideDataHome, match=message):
                rag_steps.embed_chunks(config, plan, settings)
            with pytest.raises(PathOutsideDataHome, match=message):
                rag_steps.publish_index(config, plan, "hostile-run", settings)
    assert sorted(p.name for p in victim.iterdir()) == ["0123456789abcdef.json", "keep.txt"]


# --- a hostile corpus folder -----------------------------------------------------------------------------------

def test_a_corpus_with_an_escaping_symlink_and_a_huge_file_plans_without_reading_them(tmp_path):
    """Fault: the corpus folder holds a symlink to a private file outside it and a 2 GB file.
    Where: ``plan_index`` of a real rag_index config (LanceDB, the bundled embedding model's folder).
    Invariant: both skipped with their reasons and counted in the plan (``skipped_files_total``); no chunk of
    the plan holds the private text; the documents inside are planned as usual."""
    import json

    import yaml

    from pipelines.rag import steps as rag_steps
    from pipelines.rag.versions import load_rag_config

    corpus, private = tmp_path / "corpus", tmp_path / "private"
    corpus.mkdir()
    private.mkdir()
    (corpus / "guide.md").write_text("# Guide\n\n## Tea\n\nGreen tea brews at 80 degrees for two minutes.\n")
    (private / "id_rsa.md").write_text("# Key\n\nPRIVATE-KEY-MATERIAL\n")
    (corpus / "notes.md").symlink_to(private / "id_rsa.md")
    with open(corpus / "dump.txt", "wb") as handle:
        handle.write(b"text")
        handle.truncate(2_000_000_000)
    questions = tmp_path / "questions.yaml"
    questions.write_text(yaml.safe_dump({"questions": [{"question": "tea?", "source": "guide.md"}]}))
    config_path = tmp_path / "hostile_rag_index.yaml"
    config_path.write_text(yaml.safe_dump({"template": "rag_index", "instance": "hostilecorpus",
                                           "corpus": {"path": str(corpus), "max_file_mb": 1},
                                           "evaluation": {"questions": str(questions)}}))
    with own_data_home(tmp_path / "home") as settings:
        plan = rag_steps.plan_index(load_rag_config(config_path), "hostile-corpus", settings)
        full = json.loads(Path(plan["plan_path"]).read_text())
    assert plan["documents"] == 1 and plan["skipped_files_total"] == 2
    reasons = {f["file"]: f["reason"] for f in plan["skipped_files"]}
    assert reasons["dump.txt"] == "is 2000.0 MB, over corpus.max_file_mb (1 MB): not read; split it or raise the limit"
    assert reasons["notes.md"].startswith(f"is a symlink (or lies under one) to {private / 'id_rsa.md'}")
    assert all("PRIVATE-KEY" not in chunk[3] for chunk in full["chunks_to_embed"])
    assert {chunk[1] for chunk in full["chunks_to_embed"]} == {"guide.md"}
