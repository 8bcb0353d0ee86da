"""Registered models loaded without running code from the artifact: skops files, checked against Loopline's allowlist.

Workers load whatever version the ``champion`` alias (or a challenger's number) names, and whoever can write to
the registry can register a version. Pickle and cloudpickle run code while they load; MLflow's own sklearn loader
passes skops the ``skops_trusted_types`` written in the artifact's MLmodel file, so a crafted artifact trusts
whatever it lists. Scoring, the promotion gate and the drift checks therefore load registered models only through
:func:`load_registered_model`:

1. The artifact must be a scikit-learn model saved as skops (``serialization_format: skops``). A pickle-only
   artifact (an older Loopline, a hand-made version) is refused unopened.
2. Every type in the skops file must be safe by skops' own defaults (Python numbers and containers, numpy arrays
   and dtypes, scikit-learn's public estimators) or listed in :data:`TRUSTED_TYPES`, which Loopline owns. The
   list in the artifact's MLmodel is never read. A file with any other type is refused before it is built, so
   nothing in it runs.
3. The trees of a gradient-boosting model are checked before anything predicts with them: scikit-learn indexes
   their node arrays without bounds checks, so a crafted file could crash the worker or read outside them (the
   reason skops does not trust ``TreePredictor`` by default).

Adding a model family whose skops file holds another type: review that the type builds itself from plain data
only (no code runs in its ``__setstate__`` beyond rebuilding it), then add it to :data:`TRUSTED_TYPES`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable

if TYPE_CHECKING:
    from pipelines.core.settings import LooplineSettings

log = logging.getLogger(__name__)

# The types the training families' skops files hold beyond skops' safe defaults; reviewed, owned by Loopline.
TRUSTED_TYPES: tuple[str, ...] = (
    # gradient_boosting's fitted trees: plain arrays, bounds-checked by check_trees after loading
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # torch_mlp: rebuilds its network from numpy weight arrays (families.TorchMLPClassifier.__setstate__)
    "pipelines.training.families.TorchMLPClassifier",
)


class UntrustedModel(NotRetryable, ValueError):
    """A registered version that Loopline will not load: pickle-only, or a skops file with untrusted types.

    Not retryable: the artifact stays what it is. Nothing in it ran, and no alias was moved because of it.
    """


@dataclass(frozen=True)
class TrustedModel:
    """A registered scikit-learn model loaded through the allowlist, with the input columns of its signature."""

    name: str
    version: str
    estimator: Any = field(repr=False)
    input_names: list[str]

    def predict(self, frame) -> Any:
        """Class probabilities (``predict_proba``) of ``frame``'s signature columns, in the signature's order; the
        predicted values (``predict``) for a regressor, which has no probabilities.

        Raises:
            KeyError: ``frame`` lacks a column of the signature (a model trained on other features).
        """
        columns = self.input_names or list(frame.columns)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise KeyError(f"{self.name} v{self.version} needs columns {missing} that the data does not have")
        if hasattr(self.estimator, "predict_proba"):  # a Pipeline has it only when its last step does
            return self.estimator.predict_proba(frame[columns])
        return self.estimator.predict(frame[columns])


def load_registered_model(model_name: str, version: str | int,
                          settings: LooplineSettings | None = None) -> TrustedModel:
    """Load ``models:/<model_name>/<version>`` through the allowlist (never pickle, never the artifact's own list).

    Raises:
        UntrustedModel: the version is pickle-only, or its skops file holds types outside skops' defaults and
            :data:`TRUSTED_TYPES`, or its trees are malformed. Nothing from it ran.
        mlflow.exceptions.MlflowException, OSError: the version or its artifact is unavailable (retryable).
    """
    import mlflow

    from pipelines.core import tracking

    tracking.configure_mlflow(settings)
    with tempfile.TemporaryDirectory(prefix="loopline-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=tmp)
        return load_model_folder(Path(local), model_name, str(version))


def serialization_format(model_name: str, version: str | int, settings: LooplineSettings | None = None) -> str:
    """How a registered version's scikit-learn model is saved (``skops``, ``cloudpickle``, ``pickle``; ``none``
    without a scikit-learn flavor), read from its MLmodel file alone (YAML: nothing is loaded)."""
    import mlflow

    from pipelines.core import tracking

    tracking.configure_mlflow(settings)
    flavor = mlflow.models.get_model_info(f"models:/{model_name}/{version}").flavors.get("sklearn")
    return "none" if flavor is None else str(flavor.get("serialization_format", "pickle"))


def load_model_folder(folder: Path, model_name: str, version: str) -> TrustedModel:
    """Load an MLflow model folder (MLmodel + skops file) through the allowlist; see :func:`load_registered_model`.

    Raises:
        UntrustedModel: see :func:`load_registered_model`.
    """
    import skops.io
    from mlflow.models import Model

    meta = Model.load(folder)  # YAML (safe_load): data, not code
    where = f"{model_name} version {version}"
    flavor = meta.flavors.get("sklearn")
    if flavor is None:
        raise UntrustedModel(
            f"{where} has no scikit-learn flavor (flavors: {', '.join(meta.flavors) or 'none'}); Loopline loads "
            "only scikit-learn models saved as skops. It was not loaded and no alias moved because of it: re-train "
            "it with the training DAG, which registers skops")
    fmt = flavor.get("serialization_format", "pickle")
    if fmt != "skops":
        raise UntrustedModel(
            f"{where} is saved as {fmt}, which runs code while it loads (a pickle-only artifact, e.g. from an older "
            "Loopline); Loopline loads skops files only. It was not loaded and no alias moved because of it: "
            "re-train it with the training DAG (the same inputs then register a new, skops version) and promote "
            "the new version")
    skops_file = (folder / flavor.get("pickled_model", "model.skops")).resolve()
    if not skops_file.is_relative_to(folder.resolve()) or not skops_file.is_file():
        raise UntrustedModel(f"{where}: its MLmodel names the model file {flavor.get('pickled_model')!r}, which is "
                             "not a file inside the model's artifact folder; it was not loaded. Re-train it")
    untrusted = untrusted_types(skops_file)
    if untrusted:
        raise UntrustedModel(
            f"{where} holds types outside Loopline's trusted-types allowlist: {', '.join(untrusted)}. It was not "
            "loaded (nothing in it ran) and no alias moved because of it. Re-train it with the training DAG; or, "
            "if these types are Loopline's own and you have reviewed that they build themselves from plain data, "
            "add them to TRUSTED_TYPES in pipelines/core/trusted_models.py")
    estimator = skops.io.load(skops_file, trusted=list(TRUSTED_TYPES))
    check_trees(estimator, where)
    names = list(meta.signature.inputs.input_names()) if meta.signature is not None else []
    log.info("Loaded %s from its skops file through the trusted-types allowlist", where)
    return TrustedModel(model_name, version, estimator, [str(n) for n in names])


def untrusted_types(skops_file: Path) -> list[str]:
    """The types in a skops file that neither skops' defaults nor :data:`TRUSTED_TYPES` trust (read, not built)."""
    import skops.io

    return sorted(set(skops.io.get_untrusted_types(file=skops_file)) - set(TRUSTED_TYPES))


def _estimators(estimator: Any) -> Iterator[Any]:
    yield estimator
    for _, step in getattr(estimator, "steps", None) or []:
        yield from _estimators(step)


def check_trees(estimator: Any, where: str) -> None:
    """Refuse gradient-boosting trees whose node indices point outside their arrays or back up the tree.

    A fitted tree lists its nodes parent first, so every child index is larger than its parent's and smaller
    than the number of nodes; a split's feature is one of the model's inputs, a categorical split's bitset one
    of the tree's. Anything else could crash the worker (or loop forever) when it predicts.

    Raises:
        UntrustedModel: naming the tree and the node.
    """
    import numpy as np

    for part in _estimators(estimator):
        predictors = getattr(part, "_predictors", None)
        if not predictors:
            continue
        n_features = int(getattr(part, "n_features_in_", 0))
        for iteration, trees in enumerate(predictors):
            for k, tree in enumerate(trees):
                nodes = tree.nodes
                n = len(nodes)
                index = np.arange(n)
                split = nodes["is_leaf"] == 0
                bad = split & ((nodes["left"] <= index) | (nodes["left"] >= n) | (nodes["right"] <= index)
                               | (nodes["right"] >= n) | (nodes["feature_idx"] < 0)
                               | (nodes["feature_idx"] >= n_features))
                categorical = split & (nodes["is_categorical"] != 0)
                bad |= categorical & ((nodes["bitset_idx"] >= len(tree.raw_left_cat_bitsets))
                                      | (nodes["bitset_idx"] >= len(tree.binned_left_cat_bitsets)))
                if n == 0 or bad.any():
                    node = int(np.flatnonzero(bad)[0]) if n else None
                    raise UntrustedModel(
                        f"{where}: tree {k} of iteration {iteration} has a malformed node {node} (a child or feature "
                        "index out of range): scikit-learn never writes one, so the file was altered; the model was "
                        "not used. Re-train it with the training DAG")
