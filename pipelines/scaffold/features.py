"""``scaffold features``: a runnable features use case from a landing folder's first partition.

What it writes, under the dags folder ``D`` (the repository's ``dags/`` by default)::

    D/configs/<name>_features.yaml          the instance (landing contract read from the first partition)
    D/<name>_features.py                     its two-line DAG file
    D/dbt/<name>/                            dbt project: profile, landing macro, stg_<table> per table, the mart
    D/expectations/<name>_features.json      Great Expectations suite of the mart (columns, types, keys)
    D/feature_repos/<name>/definitions.py    Feast: entity per key, file source, feature view, feature service

The mart is one row per entity per day: the entities seen in the table holding ``--timestamp`` on ``ds``,
that day's row count and the mean and max of each numeric column, and the row count over the staging window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.scaffold.files import FileSet, ScaffoldError, config_reference, render
from pipelines.scaffold.landing import LandingSample, read_landing_sample

LANDING_MACRO = Path(__file__).resolve().parents[2] / "dags" / "dbt" / "churn" / "macros" / "read_landing.sql"

KEY_TYPES = {"int64": "int64", "int": "int64", "integer": "int64", "string": "string", "str": "string"}
_SQL_TYPES = {"int64": "bigint", "float64": "double precision", "string": "varchar", "date": "date",
              "timestamp": "timestamp with time zone"}
_FEAST_TYPES = {"int64": "Int64", "float64": "Float64", "string": "String"}
_VALUE_TYPES = {"int64": "ValueType.INT64", "string": "ValueType.STRING"}
# Pandas dtypes of the mart's columns as the warehouse hands them over (pipelines.features.warehouse).
_PANDAS_TYPES = {"int64": ["int64", "Int64"], "float64": ["float64", "Float64"], "string": ["str", "string", "object"]}
DEFAULT_LOOKBACK_DAYS = 7


@dataclass(frozen=True)
class EntityKey:
    name: str
    kind: str | None  # int64 | string; None: as the landing file says


def parse_entity(text: str) -> EntityKey:
    """``KEY`` or ``KEY:type`` (type int64 or string) from the command line."""
    name, _, kind = text.partition(":")
    if kind and kind.lower() not in KEY_TYPES:
        raise ScaffoldError(f"--entity {text}: the key's type must be int64 or string, got {kind!r}")
    return EntityKey(name=name, kind=KEY_TYPES[kind.lower()] if kind else None)


@dataclass(frozen=True)
class FeaturesPlan:
    """Names and columns of the use case, decided from the landing sample and the arguments."""

    name: str
    sample: LandingSample
    keys: dict[str, str]  # join key -> int64 | string
    timestamp: str
    fact_table: str
    lookback_days: int

    @property
    def entity(self) -> str:
        """The entity's name: the key without ``_id`` (``station_id`` → ``station``), joined for a composite key."""
        return "_".join(_entity_name(key) for key in self.keys)

    @property
    def mart(self) -> str:
        return f"{self.entity}_daily_features"

    @property
    def feature_view(self) -> str:
        return f"{self.entity}_daily_{self.fact_table}"

    @property
    def feature_service(self) -> str:
        return f"{self.name}_model_v1"

    @property
    def numeric(self) -> dict[str, str]:
        """The fact table's numeric columns that become features (keys excluded)."""
        return {c: t for c, t in self.sample.tables[self.fact_table].items()
                if t in ("int64", "float64") and c not in self.keys}

    @property
    def features(self) -> dict[str, str]:
        """The mart's feature columns and their types, in order."""
        out = {f"{self.fact_table}_rows": "int64", f"{self.fact_table}_rows_{self.lookback_days}d": "int64"}
        for column, kind in self.numeric.items():
            out[f"{column}_mean"] = "float64"
            out[f"{column}_max"] = kind
        return out


def _entity_name(key: str) -> str:
    return key.removesuffix("_id") or key


def plan_features(name: str, landing: Path, entity: list[EntityKey], timestamp: str,
                  lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> FeaturesPlan:
    """Decide the use case from the landing folder's first partition.

    Raises:
        ScaffoldError: the timestamp or a key is in no table, a key's type is neither int64 nor string, or the
            name is not an identifier.
    """
    from pipelines.core.config import IDENTIFIER

    if not re.match(IDENTIFIER, name):
        raise ScaffoldError(f"use case name {name!r} must be lower-case letters, digits and _, starting with a letter")
    if not entity:
        raise ScaffoldError("name the entity key: --entity KEY[:int64|string] (repeat it for a composite key)")
    if lookback_days < 1:
        raise ScaffoldError(f"--lookback-days must be 1 or more, got {lookback_days}")
    sample = read_landing_sample(landing, {key.name for key in entity if key.kind == "string"})
    holders = [table for table, columns in sample.tables.items() if timestamp in columns]
    if not holders:
        raise ScaffoldError(f"--timestamp {timestamp}: no landing table has that column "
                            f"({_describe_tables(sample)}); name the column that stamps each row")
    fact = holders[0]
    if sample.tables[fact][timestamp] not in ("timestamp", "date"):
        raise ScaffoldError(f"--timestamp {timestamp}: {fact}.{timestamp} is {sample.tables[fact][timestamp]}, "
                            "expected a timestamp or a date")
    keys: dict[str, str] = {}
    for key in entity:
        found = sample.tables[fact].get(key.name)
        if found is None:
            raise ScaffoldError(f"--entity {key.name}: {fact}.{sample.file_format} (the table holding {timestamp}) has "
                                f"no column {key.name!r} ({', '.join(sample.tables[fact])})")
        kind = key.kind or found
        if kind not in ("int64", "string") or found != kind:
            raise ScaffoldError(f"--entity {key.name}: the key is {found} in {fact}, expected "
                                f"{kind if kind in ('int64', 'string') else 'int64 or string'}; "
                                "give its type as --entity KEY:int64 or KEY:string")
        keys[key.name] = kind
    return FeaturesPlan(name=name, sample=sample, keys=keys, timestamp=timestamp, fact_table=fact,
                        lookback_days=lookback_days)


def _describe_tables(sample: LandingSample) -> str:
    return "; ".join(f"{t}: {', '.join(c)}" for t, c in sample.tables.items())


def features_files(plan: FeaturesPlan, dags_dir: Path) -> FileSet:
    """Every file of the use case, rendered (nothing written yet)."""
    dags_dir = Path(dags_dir).resolve()
    dbt_dir = dags_dir / "dbt" / plan.name
    suite = dags_dir / "expectations" / f"{plan.name}_features.json"
    feast_dir = dags_dir / "feature_repos" / plan.name
    files = FileSet()
    files.add(dags_dir / "configs" / f"{plan.name}_features.yaml", _features_yaml(plan, dbt_dir, suite, feast_dir))
    files.add(dags_dir / f"{plan.name}_features.py",
              render("dag_file.py.tmpl", config_name=f"{plan.name}_features", template="features"))
    sample = plan.sample
    files.add(dbt_dir / "dbt_project.yml", render(
        "dbt/dbt_project.yml.tmpl", name=plan.name, file_format=sample.file_format, partition=sample.partition,
        ready_marker_var=sample.ready_marker or "", lookback_days=plan.lookback_days))
    files.add(dbt_dir / "profiles.yml", render("dbt/profiles.yml.tmpl", name=plan.name))
    # Verbatim: the macro is the same in every project (tests/unit/scaffold keeps it equal to churn's).
    # The one landing macro, the churn project's: the one every features test exercises, copied, never forked.
    files.add(dbt_dir / "macros" / "read_landing.sql", LANDING_MACRO.read_text())
    for table, columns in sample.tables.items():
        files.add(dbt_dir / "models" / "staging" / f"stg_{table}.sql", _staging_sql(plan, table, columns))
        files.add(dbt_dir / "models" / "staging" / f"stg_{table}.yml", _staging_yml(plan, table, columns))
    files.add(dbt_dir / "models" / "marts" / f"{plan.mart}.sql", _mart_sql(plan))
    files.add(dbt_dir / "models" / "marts" / f"{plan.mart}.yml", _mart_yml(plan))
    files.add(suite, json.dumps(_suite(plan), indent=2) + "\n")
    files.add(feast_dir / "definitions.py", _feast_definitions(plan))
    return files


def _features_yaml(plan: FeaturesPlan, dbt_dir: Path, suite: Path, feast_dir: Path) -> str:
    sample = plan.sample
    tables = "".join(
        f"    {table}:\n      file: {table}\n"
        f"      columns: {{{', '.join(f'{c}: {t}' for c, t in columns.items())}}}\n"
        for table, columns in sample.tables.items())
    keys = list(plan.keys)
    return render(
        "features.yaml.tmpl", name=plan.name, entity=plan.entity, landing_path=config_reference(sample.root),
        start_date=f"{sample.first_day.isoformat()}T00:00:00Z", file_format=sample.file_format,
        partition=sample.partition, ready_marker=sample.ready_marker or "null", tables=tables,
        dbt_project=config_reference(dbt_dir), mart=plan.mart, suite=config_reference(suite),
        feast_repo=config_reference(feast_dir), feature_view=plan.feature_view,
        feature_service=plan.feature_service, entity_key=keys[0] if len(keys) == 1 else f"[{', '.join(keys)}]")


def _staging_sql(plan: FeaturesPlan, table: str, columns: dict[str, str]) -> str:
    casts = "\n".join(f"        cast(source.{c} as {_SQL_TYPES[t]}) as {c}," for c, t in columns.items())
    if table == plan.fact_table and plan.lookback_days > 1:
        # The mart's window: the staging window var, so the two can never disagree.
        window_arg = ", window_days=var('loopline_lookback_days') | int"
        where = ("ds between cast('{{ var(\"ds\") }}' as date) - {{ var('loopline_lookback_days') | int - 1 }}\n"
                 "                 and cast('{{ var(\"ds\") }}' as date)")
    else:
        window_arg, where = "", "ds = cast('{{ var(\"ds\") }}' as date)"
    return render("dbt/staging.sql.tmpl", table=table, window_arg=window_arg, where=where, casts=casts)


def _staging_yml(plan: FeaturesPlan, table: str, columns: dict[str, str]) -> str:
    window = (f"the {plan.lookback_days} days ending on the run's `ds`" if table == plan.fact_table
              and plan.lookback_days > 1 else "the run's `ds`")
    lines = ["version: 2", "", "models:", f"  - name: stg_{table}",
             f"    description: The landed `{table}` rows of {window}, typed.", "    columns:"]
    for column, kind in [*columns.items(), ("ds", "date")]:
        lines.append(f"      - name: {column}")
        lines.append(f"        description: {'The landing partition' + chr(39) + 's day.' if column == 'ds' else kind}")
        if column in plan.keys or column == "ds":
            lines += ["        data_tests:", "          - not_null"]
    return "\n".join(lines) + "\n"


def _mart_sql(plan: FeaturesPlan) -> str:
    t, keys = plan.fact_table, list(plan.keys)
    aggregates = "".join(f",\n        avg({t}.{c}) as {c}_mean,\n        max({t}.{c}) as {c}_max"
                         for c in plan.numeric)
    feature_columns = "".join(
        f",\n        cast(today.{c}_mean as double precision) as {c}_mean,"
        f"\n        cast(today.{c}_max as {_SQL_TYPES[kind]}) as {c}_max"
        for c, kind in plan.numeric.items())
    return render(
        "dbt/mart.sql.tmpl", entity=plan.entity, table=t, lookback_days=plan.lookback_days,
        key_columns_today="\n".join(f"        {t}.{k}," for k in keys),
        key_columns_recent="\n".join(f"        {t}.{k}," for k in keys),
        key_columns_features="\n".join(f"        today.{k}," for k in keys),
        group_by_today=", ".join([*(f"{t}.{k}" for k in keys), f"{t}.ds"]),
        group_by_recent=", ".join(f"{t}.{k}" for k in keys),
        aggregates=aggregates, feature_columns=feature_columns,
        join_on=" and ".join(f"today.{k} = recent.{k}" for k in keys))


def _mart_yml(plan: FeaturesPlan) -> str:
    t = plan.fact_table
    lines = ["version: 2", "", "models:", f"  - name: {plan.mart}", "    description: >",
             f"      One row per {plan.entity} per day: the {plan.entity}s seen in `{t}` on `ds`, aggregated over the",
             "      day, and their rows over the staging window. Built incrementally with delete+insert by `ds`,",
             "      so re-running a day replaces exactly that day. Loopline checks the grain after the build; the",
             "      Great Expectations suite checks columns, types and nulls.",
             "    columns:"]
    described = {**{k: "Entity key." for k in plan.keys}, "ds": "The day the row describes.",
                 "feature_timestamp": "`ds 23:59:59` UTC: the features are as of the end of the day.",
                 f"{t}_rows": f"`{t}` rows of the entity on ds.",
                 f"{t}_rows_{plan.lookback_days}d": f"`{t}` rows in the {plan.lookback_days} days ending on ds."}
    for column in plan.numeric:
        described[f"{column}_mean"] = f"Mean of `{column}` on ds."
        described[f"{column}_max"] = f"Largest `{column}` on ds."
    for column, text in described.items():
        lines += [f"      - name: {column}", f"        description: \"{text}\""]
        if column in plan.keys or column in ("ds", "feature_timestamp", f"{t}_rows"):
            lines += ["        data_tests:", "          - not_null"]
    return "\n".join(lines) + "\n"


def _suite(plan: FeaturesPlan) -> dict:
    keys = list(plan.keys)
    columns = [*keys, "ds", "feature_timestamp", *plan.features]
    expectations = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": columns, "exact_match": True},
         "meta": {"notes": "The mart's columns; a renamed or dropped column fails here."}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1},
         "meta": {"notes": "An empty day means the landing or the dbt run produced nothing."}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": [*keys, "ds"]},
         "meta": {"notes": f"Grain: one row per {plan.entity} per day."}},
    ]
    expectations += [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}}
                     for c in [*keys, "ds", "feature_timestamp", f"{plan.fact_table}_rows",
                               f"{plan.fact_table}_rows_{plan.lookback_days}d"]]
    typed = {**plan.keys, **plan.features}
    expectations += [{"type": "expect_column_values_to_be_in_type_list",
                      "kwargs": {"column": c, "type_list": _PANDAS_TYPES[kind]},
                      "meta": {"notes": f"{kind}, as in the landing contract"}}
                     for c, kind in typed.items()]
    return {"name": f"{plan.name}_features", "expectations": expectations,
            "meta": {"notes": "Written by `python -m pipelines.scaffold features`; add your own expectations."}}


def _feast_definitions(plan: FeaturesPlan) -> str:
    # Kept free of the two words the scheduler's file filter looks for, so it is never parsed as a pipeline file.
    entities = "\n".join(
        f'{_entity_name(k)} = Entity(\n    name="{_entity_name(k)}",\n    join_keys=["{k}"],\n'
        f'    value_type={_VALUE_TYPES[kind]},\n    description="Keyed by {k} ({kind}).",\n)\n'
        for k, kind in plan.keys.items())
    fields = "".join(f'        Field(name="{c}", dtype={_FEAST_TYPES[kind]}),\n' for c, kind in plan.features.items())
    feast_types = sorted({_FEAST_TYPES[kind] for kind in plan.features.values()})
    return f'''"""Feast definitions of the {plan.name} use case: entity, source, feature view, feature service."""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import {", ".join(feast_types)}

{entities}
# A relative path: Loopline resolves it under <data home>/offline/{plan.name}, where publish_features writes
# one parquet file per validated day of the mart.
{plan.mart}_source = FileSource(
    name="{plan.mart}_source",
    path="{plan.mart}",
    timestamp_field="feature_timestamp",
    description="One row per {plan.entity} per day, as of 23:59:59 UTC of that day.",
)

{plan.feature_view} = FeatureView(
    name="{plan.feature_view}",
    entities=[{", ".join(_entity_name(k) for k in plan.keys)}],
    ttl=timedelta(days=2),
    schema=[
{fields}    ],
    source={plan.mart}_source,
    online=True,
    description="Daily {plan.fact_table} aggregates per {plan.entity}.",
)

# Versioned per model: a model that reads other features gets {plan.name}_model_v2, and v1 keeps serving.
{plan.feature_service} = FeatureService(
    name="{plan.feature_service}",
    features=[{plan.feature_view}],
    description="Everything the {plan.name} model v1 reads.",
)
'''


def next_commands(plan: FeaturesPlan) -> list[str]:
    """What to run after scaffolding, printed by the command."""
    from datetime import timedelta

    # A manual run at day+1 covers the data interval [day, day+1): the first landed day.
    covering = (plan.sample.first_day + timedelta(days=1)).isoformat()
    return [
        f"airflow dags test {plan.name}_features {covering}   # the first landed day, end to end",
        f"python -m pipelines.scaffold training {plan.name} --features {plan.name} --label TABLE.COLUMN",
    ]
