"""Entity keys of a features instance: their types, entity frames and rows, and the mart's grain.

A key is an ``int64`` or a ``string`` of the landing contract, or several of them when Feast's entity has
several join keys (``feast.entity_key: [store_id, item_id]``). Keys keep their type everywhere: a string key
such as ``"007"`` is never turned into a number, an integer key never into text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipelines.core.errors import NotRetryable
from pipelines.features.config import FeaturesConfig

if TYPE_CHECKING:
    import pandas as pd

KEY_TYPES = ("int64", "string")
# How many repeated keys a duplicate error shows: enough to find them, short enough to read.
_EXAMPLES = 5


class EntityKeyError(NotRetryable, ValueError):
    """The config's entity key does not fit the landing contract or the mart (a config fault, not the data's)."""


def key_types(config: FeaturesConfig) -> dict[str, str]:
    """The landing contract's type of each join key, in key order.

    Returns:
        ``{key: "int64" | "string"}``, from the landing tables that carry the key.

    Raises:
        EntityKeyError: a key is in no landing table, is of another type, or has different types in two tables.
    """
    types: dict[str, str] = {}
    for key in config.feast.join_keys:
        seen = {name: table.columns[key] for name, table in config.landing.tables.items() if key in table.columns}
        if not seen:
            raise EntityKeyError(
                f"{config.dag_id}: entity key {key!r} is a column of no landing table "
                f"({', '.join(sorted(config.landing.tables))}); add it to landing.tables or fix feast.entity_key")
        kinds = set(seen.values())
        if len(kinds) > 1 or not kinds <= set(KEY_TYPES):
            listed = ", ".join(f"{name}: {kind}" for name, kind in sorted(seen.items()))
            raise EntityKeyError(
                f"{config.dag_id}: entity key {key!r} must be int64 or string, the same in every landing table "
                f"(got {listed}); fix landing.tables")
        types[key] = kinds.pop()
    return types


def entity_frame(frame: pd.DataFrame, config: FeaturesConfig) -> pd.DataFrame:
    """The frame with its key columns in their contract types (``int64``, or Python ``str`` for strings).

    For an entity frame built from landed rows (labels, entities to score): CSV and Postgres may hand a key
    over in another type, and Feast only joins keys of the entity's own type.

    Raises:
        EntityKeyError: a key column is missing, or holds nulls (no entity can be joined without its key).
    """
    out = frame.copy()
    for key, kind in key_types(config).items():
        if key not in out:
            raise EntityKeyError(f"{config.dag_id}: the frame has no entity key column {key!r} "
                                 f"(columns: {', '.join(map(str, out.columns))})")
        if out[key].isna().any():
            raise EntityKeyError(f"{config.dag_id}: entity key {key!r} has {int(out[key].isna().sum())} null(s); "
                                 "every row needs its key")
        out[key] = out[key].astype("int64") if kind == "int64" else out[key].astype(str)
    return out


def entity_rows(join_keys: Sequence[str], keys: Sequence[Any]) -> list[dict[str, Any]]:
    """Feast's ``entity_rows`` for some entities: a scalar per entity for one join key, a tuple for several.

    Raises:
        ValueError: a composite key's value does not have one part per join key.
    """
    if len(join_keys) == 1:
        return [{join_keys[0]: key} for key in keys]
    rows = []
    for key in keys:
        parts = tuple(key.values()) if isinstance(key, dict) else tuple(key)
        if len(parts) != len(join_keys):
            raise ValueError(f"key {key!r} has {len(parts)} part(s); the entity's join keys are {list(join_keys)}")
        rows.append(dict(zip(join_keys, parts)))
    return rows


def duplicate_entity_days(frame: pd.DataFrame, join_keys: Sequence[str]) -> str | None:
    """What breaks "one row per entity per day" in a mart's rows, or None when nothing does.

    Returns:
        e.g. ``"(station_id, ds) has 4 duplicate rows over 2 keys, e.g. station_id='S01' ds=2026-11-03 (×3)"``.

    Raises:
        EntityKeyError: the mart lacks a key column or ``ds``.
    """
    grain = [*join_keys, "ds"]
    missing = [column for column in grain if column not in frame]
    if missing:
        raise EntityKeyError(f"the mart has no column {', '.join(map(repr, missing))}: a features mart carries the "
                             f"entity key ({', '.join(join_keys)}) and ds, one row per entity per day")
    counts = frame.groupby(grain, dropna=False).size()
    repeated = counts[counts > 1].sort_values(ascending=False, kind="stable")
    if repeated.empty:
        return None
    examples = []
    for values, n in list(repeated.items())[:_EXAMPLES]:
        values = values if isinstance(values, tuple) else (values,)
        shown = " ".join(f"{column}={_show(value)}" for column, value in zip(grain, values))
        examples.append(f"{shown} (×{n})")
    return (f"({', '.join(grain)}) has {int(repeated.sum())} duplicate rows over {len(repeated)} key(s), "
            f"e.g. {'; '.join(examples)}")


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
