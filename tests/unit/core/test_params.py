"""Trigger-form Params come from the config's pydantic fields, and the form's values go back through the model."""

from __future__ import annotations

import pytest
from pydantic import Field

from pipelines.core.config import StrictModel
from pipelines.core.params import FormField, apply_form, field_schema, form_params
from pipelines.templates import load_named

pytestmark = pytest.mark.unit


class Inner(StrictModel):
    rate: float = Field(0.1, gt=0, le=1, description="A rate.")
    mode: str = "a"


class Outer(StrictModel):
    inner: Inner = Inner()
    steps: int = Field(10, ge=1, le=100, description="How many steps.")
    label: str | None = Field(None, min_length=1, description="An optional label.")
    bare: int = 3


FORM = (FormField("rate", "inner.rate", "Rate"), FormField("steps", "steps", "Steps"))


def test_the_schema_carries_the_models_bounds_and_description():
    assert field_schema(Outer, "inner.rate") == {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                                                 "description": "A rate."}
    assert field_schema(Outer, "label") == {"type": ["string", "null"], "minLength": 1,
                                            "description": "An optional label."}


def test_a_form_field_without_a_description_is_refused():
    with pytest.raises(ValueError, match="Outer.bare has no description"):
        field_schema(Outer, "bare")


def test_params_default_to_the_configs_values_and_validate_like_the_model():
    from airflow.sdk.exceptions import ParamValidationError

    params = form_params(Outer(steps=7), FORM)
    assert params["steps"].value == 7 and params["rate"].value == 0.1
    with pytest.raises(ParamValidationError, match="greater than the maximum of 100"):
        params["steps"].resolve(500)


def test_form_values_go_back_through_the_model():
    config = apply_form(Outer(), FORM, {"rate": 0.5, "steps": None})
    assert config.inner.rate == 0.5 and config.steps == 10
    with pytest.raises(ValueError, match="less than or equal to 1"):
        apply_form(Outer(), FORM, {"rate": 3})


def test_applying_a_form_keeps_what_the_yaml_did_not_set_unset():
    """A drift check refuses the section of the other kind: the form must not make it look set."""
    from pipelines.drift.config import DRIFT_FORM

    for name in ("churn_drift_check", "docs_drift_check"):
        config = load_named(name)
        assert apply_form(config, DRIFT_FORM, {"window_days": 5}).window_days == 5
