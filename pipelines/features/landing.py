"""Landing partitions: find a day's raw files, check them against the YAML contract, quarantine them.

A partition that breaks its contract is moved, whole, out of the landing folder into the quarantine
folder with a ``reason.json`` beside it, so nothing downstream reads it and nothing is lost.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from pipelines.core.files import write_json_atomic
from pipelines.features.config import LandingConfig

# How a contract type reads in pyarrow's type names (CSV columns are read as what they parse to).
_ARROW_TYPES = {
    "int64": ("int64",),
    "float64": ("double", "float", "int64"),
    "string": ("string", "large_string"),
    "date": ("date32[day]", "date64[ms]", "date32"),
    "timestamp": ("timestamp",),
}


class LandingContractError(ValueError):
    """A landing partition whose files are missing, unreadable or shaped wrong."""


@dataclass(frozen=True)
class LandingCheck:
    ds: date
    partition: Path
    rows: dict[str, int]


def partition_dir(landing: LandingConfig, landing_root: Path, ds: date) -> Path:
    return landing_root / landing.partition.format(ds=ds.isoformat())


def table_file(landing: LandingConfig, partition: Path, table: str) -> Path:
    return partition / f"{landing.tables[table].file}.{landing.format}"


def partition_ready(landing: LandingConfig, landing_root: Path, ds: date) -> bool:
    """True once the day's partition is complete: its ready marker, or else all its files, exist."""
    partition = partition_dir(landing, landing_root, ds)
    if landing.ready_marker:
        return (partition / landing.ready_marker).exists()
    return all(table_file(landing, partition, t).exists() for t in landing.tables)


def _read_schema(path: Path, file_format: str) -> tuple[dict[str, str], int]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if file_format == "parquet":
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
        return {f.name: str(f.type) for f in schema}, meta.metadata.num_rows
    table = pacsv.read_csv(path)
    return {f.name: str(f.type) for f in table.schema}, table.num_rows


def check_partition(landing: LandingConfig, landing_root: Path, ds: date) -> LandingCheck:
    """Check every table of a day's partition against the contract in the YAML.

    Raises:
        LandingContractError: a file is missing, empty, unreadable, or lacks or mistypes a column.
    """
    partition = partition_dir(landing, landing_root, ds)
    problems: list[str] = []
    rows: dict[str, int] = {}
    for table, spec in landing.tables.items():
        path = table_file(landing, partition, table)
        if not path.exists():
            problems.append(f"{path.name} is missing")
            continue
        if path.stat().st_size == 0:
            problems.append(f"{path.name} is an empty file (0 bytes)")
            continue
        try:
            columns, rows[table] = _read_schema(path, landing.format)
        except Exception as exc:  # pyarrow raises several types for garbage bytes
            problems.append(f"{path.name} cannot be read as {landing.format}: {str(exc).splitlines()[0]}")
            continue
        for column, expected in spec.columns.items():
            if column not in columns:
                extra = sorted(set(columns) - set(spec.columns))
                hint = f" (unexpected columns: {', '.join(extra)})" if extra else ""
                problems.append(f"{path.name} has no column {column!r}{hint}")
            elif not columns[column].startswith(_ARROW_TYPES[expected]):
                problems.append(f"{path.name} column {column!r} is {columns[column]}, expected {expected}")
    if problems:
        raise LandingContractError(f"landing partition {ds} breaks its contract: " + "; ".join(problems))
    return LandingCheck(ds=ds, partition=partition, rows=rows)


def quarantine_partition(partition: Path, quarantine_root: Path, reason: str, details: dict | None = None) -> Path:
    """Move a partition out of the landing folder, with the reason beside it; return where it went.

    Idempotent: a partition quarantined before is replaced by the newer copy.
    """
    target = quarantine_root / partition.name
    if target.exists():
        shutil.rmtree(target)
    quarantine_root.mkdir(parents=True, exist_ok=True)
    if partition.exists():
        shutil.move(str(partition), str(target))
    else:
        target.mkdir(parents=True)
    record = {
        "partition": str(partition),
        "reason": reason,
        "details": details or {},
        "quarantined_at": datetime.now(UTC).isoformat(),
    }
    write_json_atomic(target / "reason.json", record, sort_keys=False)
    return target
