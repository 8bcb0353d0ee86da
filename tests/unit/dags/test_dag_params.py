"""The trigger forms: every Param of every DAG says what it is and bounds what a person may type, so the
form (and the REST API, which validates the same schema) refuses a bad value with a message."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags")
    assert bag.import_errors == {}
    return bag.dags


def _types(schema: dict) -> set[str]:
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if kind else set()


def param_problems(name: str, param) -> list[str]:
    """What a Param lacks for a form that validates: description, type, and bounds where the type has them."""
    schema = param.schema
    problems = []
    if not (param.description or "").strip():
        problems.append("no description")
    if not (schema.get("title") or "").strip():
        problems.append("no title")
    kinds = _types(schema) - {"null"}
    if not kinds:
        problems.append("no type")
    if kinds & {"integer", "number"}:
        if not ({"minimum", "exclusiveMinimum"} & set(schema) and {"maximum", "exclusiveMaximum"} & set(schema)):
            problems.append("a number without minimum and maximum")
    if "string" in kinds and not ({"enum", "format", "pattern", "minLength"} & set(schema)):
        problems.append("a string without enum, format, pattern or minLength")
    if "array" in kinds and not (schema.get("items", {}).get("type") and "minItems" in schema):
        problems.append("an array without typed items and minItems")
    return [f"{name}: {p}" for p in problems]


def test_every_param_of_every_dag_is_described_typed_and_bounded(dags):
    problems = [f"{dag_id}.{p}" for dag_id, dag in sorted(dags.items())
                for name in dag.params for p in param_problems(name, dag.params.get_param(name))]
    assert problems == []
    with_params = {dag_id for dag_id, dag in dags.items() if dag.params}
    assert {"churn_training", "assistant_lora_tune", "churn_drift_check", "docs_drift_check"} <= with_params


def test_the_audit_catches_a_param_without_bounds_or_description():
    from airflow.sdk import Param

    assert param_problems("n", Param(3, type="integer")) == \
        ["n: no description", "n: no title", "n: a number without minimum and maximum"]
    assert param_problems("s", Param("x", type="string", title="S", description="d")) == \
        ["s: a string without enum, format, pattern or minLength"]
    assert param_problems("x", Param(1, title="X", description="d")) == ["x: no type"]
    assert param_problems("ok", Param(1, type="integer", minimum=0, maximum=2, title="OK", description="d")) == []


def test_the_defaults_are_valid(dags):
    for dag in dags.values():
        dag.params.validate()


@pytest.mark.parametrize(("dag_id", "name", "value", "message"), [
    ("churn_training", "max_iter", 5, "5 is less than the minimum of 10"),
    ("churn_training", "max_iter", "many", "'many' is not of type 'integer'"),
    ("churn_training", "family", "random_forest", "'random_forest' is not one of ['gradient_boosting', 'torch_mlp']"),
    ("churn_training", "learning_rate", 3, "3 is greater than the maximum of 1"),
    ("churn_training", "window_end", "next tuesday", "'next tuesday' is not a 'date'"),
    ("churn_training", "window_days", 3661, "3661 is greater than the maximum of 3660"),
    ("churn_drift_check", "window_days", 0, "0 is less than the minimum of 1"),
    ("assistant_lora_tune", "rank", 1000, "1000 is greater than the maximum of 256"),
    ("assistant_lora_tune", "target_modules", [], "[] should be non-empty"),
])
def test_a_bad_value_is_refused_with_a_message(dags, dag_id, name, value, message):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dags[dag_id].params)
    with pytest.raises(ParamValidationError) as refused:
        params[name] = value  # the ParamsDict validates on assignment (the form's submit does the same)
        params.validate()
    assert f"Invalid input for param {name}" in str(refused.value) and message in str(refused.value)


def test_the_training_form_allows_multi_year_windows(dags):
    params = copy.deepcopy(dags["churn_training"].params)
    params["window_days"] = 3 * 365  # the config allows up to 3660 days (docs/training.md says why)
    params.validate()
    assert params.get_param("window_days").schema["maximum"] == 3660
