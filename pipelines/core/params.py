"""Trigger-form fields made from the config's pydantic fields, so the form and the model cannot disagree.

A template lists which config fields a person may set when triggering a run (:class:`FormField`); the
Params' type, bounds, enum and description come from the field's JSON schema, and the submitted values go
back into the config through the same model (:func:`apply_form`), which validates them again.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

# JSON-schema keywords that Airflow's form and REST API validate a Param against.
FORM_KEYWORDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
                 "maxLength", "pattern", "format", "items", "minItems", "maxItems", "uniqueItems")


@dataclass(frozen=True)
class FormField:
    """A field of the trigger form: the Param ``name``, the config ``path`` it sets (dotted) and its ``title``."""

    name: str
    path: str
    title: str


def _model_at(model: type[BaseModel], parts: Sequence[str]) -> type[BaseModel]:
    for part in parts:
        annotation = model.model_fields[part].annotation
        candidates = [a for a in typing.get_args(annotation) or (annotation,) if a is not type(None)]
        model = next(a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel))
    return model


@cache
def field_schema(model: type[BaseModel], path: str) -> dict[str, Any]:
    """The JSON schema of the config field at ``path``: type, bounds, enum and description.

    Raises:
        ValueError: the field has no description (a form field must say what it does).
    """
    *parents, leaf = path.split(".")
    owner = _model_at(model, parents)
    schema = owner.model_json_schema()
    prop = dict(schema["properties"][leaf])
    if "$ref" in prop:
        prop = {**schema["$defs"][prop.pop("$ref").rsplit("/", 1)[1]], **prop}
    if "anyOf" in prop:  # Optional[X]: X's schema, and null allowed
        options = prop.pop("anyOf")
        kinds = [o for o in options if o.get("type") != "null"]
        prop = {**kinds[0], **prop}
        if len(kinds) < len(options):
            prop["type"] = [prop["type"], "null"] if isinstance(prop.get("type"), str) else ["null"]
    if not (prop.get("description") or "").strip():
        raise ValueError(f"{owner.__name__}.{leaf} has no description; a trigger-form field needs one")
    described = {key: prop[key] for key in FORM_KEYWORDS if key in prop}
    return {**described, "description": prop["description"]}


def current_value(config: BaseModel, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, (tuple, list)) else value


def form_params(config: BaseModel, fields: Sequence[FormField]) -> dict[str, Any]:
    """Airflow Params for ``fields``, each defaulting to the config's current value."""
    from airflow.sdk import Param

    return {f.name: Param(current_value(config, f.path), title=f.title, **field_schema(type(config), f.path))
            for f in fields}


def apply_form(config: BaseModel, fields: Sequence[FormField], params: Mapping[str, Any] | None) -> BaseModel:
    """``config`` with the run's form values applied (a missing or empty value keeps the config's), validated."""
    # Only what the YAML set, plus the form's values: validating that again gives the same defaults, and
    # a model that cares which fields were set (a drift check's one section) sees what the YAML said.
    data = config.model_dump(exclude_unset=True)
    for f in fields:
        value = (params or {}).get(f.name)
        if value is None or value == "" or value == []:
            continue
        *parents, leaf = f.path.split(".")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return type(config).model_validate(data)
