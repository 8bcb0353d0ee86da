"""Every training family saves as skops and loads back through Loopline's allowlist alone, predicting the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.trusted_models import TRUSTED_TYPES, check_trees
from pipelines.training.config import Hyperparameters
from pipelines.training.families import FAMILIES, build_model

pytestmark = pytest.mark.unit


def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(5)
    n = 400
    X = pd.DataFrame({"sessions_30d": rng.poisson(12, n).astype(float), "tenure_days": rng.integers(1, 900, n),
                      "plan": rng.choice(["basic", "pro", "team"], n)})
    return X, (X["sessions_30d"] < 11).astype(int).to_numpy()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_round_trips_through_skops_with_only_allowlisted_types(family):
    import skops.io

    X, y = frame()
    hp = Hyperparameters(max_iter=15, epochs=5, hidden_units=8)
    model = build_model(family, hp, 3, ["sessions_30d", "tenure_days"], ["plan"]).fit(X, y)
    data = skops.io.dumps(model)
    assert set(skops.io.get_untrusted_types(data=data)) <= set(TRUSTED_TYPES)
    loaded = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    check_trees(loaded, family)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-6)


def test_a_torch_network_with_a_wrong_weight_shape_is_refused_on_load():
    import skops.io

    X, y = frame()
    model = build_model("torch_mlp", Hyperparameters(epochs=2, hidden_units=8), 3, ["sessions_30d", "tenure_days"],
                        ["plan"]).fit(X, y)
    network = model.steps[-1][1]
    state = network.__getstate__()
    state["weights"]["0.weight"] = state["weights"]["0.weight"][:, :2]  # one input column fewer
    network.__getstate__ = lambda: state  # what a crafted file would hold
    with pytest.raises(ValueError, match=r"TorchMLPClassifier weights do not fit its 5 inputs and 8 hidden units: "
                                         r"\{'0.weight': \(8, 2\)"):
        skops.io.loads(skops.io.dumps(model), trusted=list(TRUSTED_TYPES))

