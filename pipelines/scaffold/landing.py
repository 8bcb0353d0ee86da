"""What a landing folder looks like, read from its first partition: layout, format, tables and column types."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipelines.scaffold.files import ScaffoldError

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class LandingSample:
    """The landing folder as its first partition shows it.

    Attributes:
        root: the landing folder.
        first_day: the earliest partition's day.
        partition: the partition folder's name with ``{ds}`` for the day (``ds={ds}``, ``day_{ds}``…).
        file_format: ``parquet`` or ``csv``.
        ready_marker: a non-data file of the partition (``_SUCCESS``), or None.
        tables: per table (the file's stem), its columns and their contract types.
    """

    root: Path
    first_day: date
    partition: str
    file_format: str
    ready_marker: str | None
    tables: dict[str, dict[str, str]]


def _contract_type(arrow_type) -> str | None:
    """The landing contract's type of a pyarrow type (pipelines.features.config.LandingTable), or None."""
    import pyarrow.types as t

    if t.is_integer(arrow_type):
        return "int64"
    if t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return "float64"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return "string"
    if t.is_date(arrow_type):
        return "date"
    if t.is_timestamp(arrow_type):
        return "timestamp"
    return None


def _read_schema(path: Path, file_format: str, string_columns: set[str]):  # -> pyarrow.Schema
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if file_format == "parquet":
        return pq.ParquetFile(path).schema_arrow
    # A key given as :string is read as text, so "007" is not taken for the number 7.
    options = pacsv.ConvertOptions(column_types={c: pa.string() for c in string_columns})
    return pacsv.read_csv(path, convert_options=options).schema


def first_partition(root: Path) -> tuple[Path, date, str]:
    """The earliest partition folder of a landing folder, its day and its name pattern.

    Raises:
        ScaffoldError: the folder does not exist or has no sub-folder named with a YYYY-MM-DD day.
    """
    if not root.is_dir():
        raise ScaffoldError(f"landing folder {root} does not exist: land at least one day first "
                            "(one sub-folder per day, named with its date, e.g. ds=2026-11-03/)")
    found = []
    for child in root.iterdir():
        days = _DAY.findall(child.name)
        if child.is_dir() and len(days) == 1:
            try:
                found.append((date.fromisoformat(days[0]), child))
            except ValueError:
                continue
    if not found:
        raise ScaffoldError(f"landing folder {root} has no partition folder named with a day (YYYY-MM-DD), e.g. "
                            "ds=2026-11-03/ or 2026-11-03/: one folder per day is the landing contract")
    day, folder = min(found)
    return folder, day, folder.name.replace(day.isoformat(), "{ds}")


def read_landing_sample(root: Path, string_columns: set[str] = frozenset()) -> LandingSample:
    """Read the layout and the column types of a landing folder from its first partition.

    Args:
        root: the landing folder.
        string_columns: columns to read as text whatever they look like (a string key of a CSV).

    Raises:
        ScaffoldError: no partition, no data file, mixed formats, a name that is not an identifier, or a
            column of a type the landing contract has no word for.
    """
    root = Path(root).resolve()
    folder, day, partition = first_partition(root)
    data = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lstrip(".") in FORMATS]
    others = [p.name for p in sorted(folder.iterdir()) if p.is_file() and p not in data and not p.name.startswith(".")]
    formats = {p.suffix.lstrip(".") for p in data}
    if not data:
        raise ScaffoldError(f"partition {folder} holds no .parquet or .csv file: land the day's tables there")
    if len(formats) > 1:
        raise ScaffoldError(f"partition {folder} mixes {' and '.join(sorted(formats))} files: a landing folder "
                            "holds one format")
    file_format = formats.pop()
    tables: dict[str, dict[str, str]] = {}
    problems = []
    for path in data:
        if not _IDENTIFIER.match(path.stem):
            problems.append(f"{path.name}: the table name {path.stem!r} must be lower-case letters, digits and _")
            continue
        columns: dict[str, str] = {}
        for column in _read_schema(path, file_format, set(string_columns)):
            kind = _contract_type(column.type)
            if not _IDENTIFIER.match(column.name) or column.name == "ds":
                problems.append(f"{path.name}: column {column.name!r} must be a lower-case identifier other than "
                                "ds (ds is the partition's day); rename it at the source")
            elif kind is None:
                problems.append(f"{path.name}: column {column.name!r} is {column.type}, which the landing contract "
                                "has no type for (int64, float64, string, date, timestamp); write it as one of those "
                                "(a flag as 0/1 int64)")
            else:
                columns[column.name] = kind
        tables[path.stem] = columns
    if problems:
        raise ScaffoldError(f"landing partition {folder} cannot be scaffolded: " + "; ".join(problems))
    marker = others[0] if len(others) == 1 else None
    return LandingSample(root=root, first_day=day, partition=partition, file_format=file_format,
                         ready_marker=marker, tables=tables)
