"""Model families: each builds an sklearn-compatible estimator (``fit``, ``predict_proba``; ``predict`` for regression).

The template is not tied to one library: ``gradient_boosting`` is scikit-learn's histogram gradient
boosting, ``torch_mlp`` a small PyTorch network. Both sit behind the same preprocessing (scaled numbers,
one-hot categories) and are logged and served the same way. Adding a family: docs/training.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipelines.training.config import Hyperparameters

log = logging.getLogger(__name__)


def _preprocessing(numeric: list[str], categorical: list[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer([
        ("numeric", StandardScaler(), numeric),
        ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
    ])


def gradient_boosting(hp: Hyperparameters, seed: int, task: str = "binary") -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    # The classifier handles binary and multiclass labels alike (one tree per class for multiclass).
    estimator = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return estimator(
        learning_rate=hp.learning_rate, max_iter=hp.max_iter, max_depth=hp.max_depth,
        min_samples_leaf=hp.min_samples_leaf, early_stopping=False, random_state=seed,
    )


class TorchMLPClassifier:
    """A two-hidden-layer PyTorch network with the sklearn classifier interface.

    Trains full-batch with Adam (weight decay, dropout) on binary cross-entropy; seeded, so the same data gives the
    same model. Uses CUDA when it is there, the CPU otherwise.
    """

    _estimator_type = "classifier"

    def __init__(self, hidden_units: int = 32, epochs: int = 60, learning_rate: float = 0.01, seed: int = 42):
        self.hidden_units = hidden_units
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"hidden_units": self.hidden_units, "epochs": self.epochs,
                "learning_rate": self.learning_rate, "seed": self.seed}

    def set_params(self, **params: Any) -> TorchMLPClassifier:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __sklearn_tags__(self):  # sklearn >= 1.6 asks estimators what they are
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def fit(self, X, y) -> TorchMLPClassifier:
        import numpy as np
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        features = torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)
        target = torch.as_tensor(np.asarray(y, dtype=np.float32).reshape(-1, 1), device=device)
        self.classes_ = np.array([0, 1])
        self.network_ = self._network(features.shape[1]).to(device)
        # Weight decay and dropout: churn tables are small, and an unregularised network memorises them.
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.learning_rate, weight_decay=1e-2)
        loss_fn = nn.BCEWithLogitsLoss()
        for epoch in range(1, self.epochs + 1):
            optimizer.zero_grad()
            loss = loss_fn(self.network_(features), target)
            loss.backward()
            optimizer.step()
            if epoch == 1 or epoch % 20 == 0 or epoch == self.epochs:
                log.info("torch_mlp epoch %d/%d: training loss %.4f", epoch, self.epochs, loss.item())
        self.network_ = self.network_.cpu().eval()
        return self

    # skops saves what __getstate__ returns and hands it to __setstate__ on load: plain numbers and numpy arrays
    # only, so the model is stored as skops (no pickle) and loading it runs no code but this rebuild.
    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = self.get_params()
        if hasattr(self, "network_"):
            state["classes_"] = self.classes_
            state["n_features_in_"] = int(self.network_[0].in_features)
            state["weights"] = {name: tensor.detach().cpu().numpy()
                                for name, tensor in self.network_.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import numpy as np

        state = dict(state)
        weights = state.pop("weights", None)
        n_features = state.pop("n_features_in_", None)
        classes = state.pop("classes_", None)
        self.set_params(**{k: state[k] for k in ("hidden_units", "epochs", "learning_rate", "seed") if k in state})
        if weights is None:
            return
        import torch

        # The shapes first, from the arrays the file holds: a crafted size allocates nothing the file did not.
        n, h = int(n_features), int(self.hidden_units)
        expected = {"0.weight": (h, n), "0.bias": (h,), "3.weight": (h, h), "3.bias": (h,), "6.weight": (1, h),
                    "6.bias": (1,)}
        found = {name: tuple(np.shape(value)) for name, value in weights.items()}
        if found != expected:
            raise ValueError(f"TorchMLPClassifier weights do not fit its {n} inputs and {h} hidden units: {found}")
        self.classes_ = np.asarray(classes)
        self.network_ = self._network(n)
        self.network_.load_state_dict({name: torch.as_tensor(np.asarray(value, dtype=np.float32))
                                       for name, value in weights.items()}, strict=True)
        self.network_.eval()

    def _network(self, n_features: int):
        from torch import nn

        return nn.Sequential(
            nn.Linear(n_features, self.hidden_units), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(self.hidden_units, self.hidden_units), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(self.hidden_units, 1),
        )

    def predict_proba(self, X):
        import numpy as np
        import torch

        with torch.no_grad():
            logits = self.network_(torch.as_tensor(np.asarray(X, dtype=np.float32)))
            positive = torch.sigmoid(logits).numpy().reshape(-1)
        return np.column_stack([1 - positive, positive])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def torch_mlp(hp: Hyperparameters, seed: int, task: str = "binary") -> TorchMLPClassifier:
    if task != "binary":  # TrainingConfig refuses this at parse time; a direct caller gets the same words
        raise ValueError(f"family torch_mlp trains binary tasks only; use gradient_boosting for task {task}")
    return TorchMLPClassifier(hidden_units=hp.hidden_units, epochs=hp.epochs,
                              learning_rate=hp.learning_rate, seed=seed)


# A family: (hyperparameters, seed, task) -> an unfitted estimator for that task.
FAMILIES: dict[str, Callable[..., Any]] = {
    "gradient_boosting": gradient_boosting,
    "torch_mlp": torch_mlp,
}

# The hyperparameters each family reads: only these enter its params, its run and its idempotency key.
FAMILY_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "gradient_boosting": ("learning_rate", "max_iter", "max_depth", "min_samples_leaf"),
    "torch_mlp": ("learning_rate", "hidden_units", "epochs"),
}


def build_model(family: str, hp: Hyperparameters, seed: int, numeric: list[str], categorical: list[str],
                task: str = "binary") -> Any:
    """The family's estimator for ``task`` behind the shared preprocessing, as one sklearn ``Pipeline``."""
    from sklearn.pipeline import Pipeline

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    step = "regressor" if task == "regression" else "classifier"
    return Pipeline([("preprocess", _preprocessing(numeric, categorical)), (step, FAMILIES[family](hp, seed, task))])


def family_params(family: str, hp: Hyperparameters) -> dict[str, Any]:
    return {name: getattr(hp, name) for name in FAMILY_HYPERPARAMETERS[family]}
