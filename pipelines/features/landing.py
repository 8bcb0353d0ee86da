"""Landing partitions: find a day's raw files, check them against the YAML contract, quarantine them.

A partition that breaks its contract is moved, whole, out of the landing folder into the quarantine
folder with a ``reason.json`` beside it, so nothing downstream reads it and nothing is lost: a quarantined
copy is never deleted or overwritten, and at every instant each file is in landing or in quarantine.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from pipelines.core.faults import crash_point
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


def _csv_options(columns: dict[str, str]):  # -> pyarrow.csv.ConvertOptions
    """CSV has no types: a contract ``string`` column is read as text, so a key like ``007`` stays ``"007"``."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(column_types={c: pa.string() for c, t in columns.items() if t == "string"})


def _read_schema(path: Path, file_format: str, columns: dict[str, str]) -> tuple[dict[str, str], int]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if file_format == "parquet":
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
        return {f.name: str(f.type) for f in schema}, meta.metadata.num_rows
    table = pacsv.read_csv(path, convert_options=_csv_options(columns))
    return {f.name: str(f.type) for f in table.schema}, table.num_rows


_MACHINE_FAULT_WORDS = ("input/output error", "no space left", "permission denied", "stale file handle",
                        "transport endpoint", "too many open files", "cannot allocate memory")


def _is_machine_fault(exc: OSError) -> bool:
    """An OSError from the machine (errno set, or pyarrow's wording of one) rather than from bad bytes.

    pyarrow reports some corrupt files as OSError without an errno ("Couldn't deserialize thrift"): data.
    """
    return exc.errno is not None or any(word in str(exc).lower() for word in _MACHINE_FAULT_WORDS)


def check_partition(landing: LandingConfig, landing_root: Path, ds: date) -> LandingCheck:
    """Check every table of a day's partition against the contract in the YAML.

    Raises:
        LandingContractError: a file is missing, empty, unreadable, or lacks or mistypes a column.
        OSError: the machine failed reading a file (I/O error, full disk, permissions): not the data's fault.
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
            columns, rows[table] = _read_schema(path, landing.format, spec.columns)
        except OSError as exc:
            if _is_machine_fault(exc):
                raise  # an I/O error, a full disk, a lost mount: retried, the partition stays in landing
            problems.append(f"{path.name} cannot be read as {landing.format}: {str(exc).splitlines()[0]}")
            continue
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


def quarantined_copies(quarantine_root: Path, partition_name: str) -> list[Path]:
    """Every quarantined copy of one partition, oldest first: ``<name>``, then ``<name>.2``, ``<name>.3``…"""
    found = []
    for candidate in quarantine_root.glob(f"{partition_name}*") if quarantine_root.exists() else []:
        suffix = candidate.name[len(partition_name):]
        if candidate.is_dir() and (suffix == "" or (suffix[:1] == "." and suffix[1:].isdigit())):
            found.append((int(suffix[1:]) if suffix else 1, candidate))
    return [path for _, path in sorted(found)]


def _next_copy(quarantine_root: Path, partition_name: str) -> Path:
    copies = quarantined_copies(quarantine_root, partition_name)
    return quarantine_root / (partition_name if not copies else f"{partition_name}.{len(copies) + 1}")


def _move_whole(partition: Path, target: Path) -> None:
    """Move a folder so that at every instant its files are whole in ``partition`` or in ``target``.

    A rename on one filesystem is atomic. Across filesystems the copy is built under a hidden temporary name,
    renamed into place, and only then is the landing folder removed: a crash leaves the original in landing.
    """
    try:
        os.rename(partition, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
    try:
        shutil.copytree(partition, partial)
    except OSError:
        # A full disk or an I/O error half-way: the original is whole in landing, so the half copy is only
        # our own scratch; remove it so that it holds no space, and let the task retry.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.rename(partial, target)
    crash_point("quarantine:after-copy")
    shutil.rmtree(partition)


def quarantine_partition(
    partition: Path, quarantine_root: Path, reason: str, details: dict | None = None,
) -> Path | None:
    """Move a partition out of the landing folder, with the reason beside it; return where it went.

    Nothing is ever deleted: a re-landed partition quarantined again goes to the next free copy
    (``ds=2026-11-03.2``…), and a partition that already left landing (a retried task whose worker was
    killed after the move, a cleared ``validate_mart``) is not touched again: its newest quarantined copy
    is returned, with ``reason.json`` written only if the killed attempt had not written it yet.

    Returns:
        The quarantined copy, or None when the partition is neither in landing nor in quarantine.
    """
    quarantine_root.mkdir(parents=True, exist_ok=True)
    record = {
        "partition": str(partition),
        "reason": reason,
        "details": details or {},
        "quarantined_at": datetime.now(UTC).isoformat(),
    }
    if partition.exists():
        target = _next_copy(quarantine_root, partition.name)
        _move_whole(partition, target)
        crash_point("quarantine:after-move")
    else:
        copies = quarantined_copies(quarantine_root, partition.name)
        if not copies:
            return None
        target = copies[-1]
        if (target / "reason.json").exists():
            return target
    write_json_atomic(target / "reason.json", record, sort_keys=False)
    return target


def read_landed_table(landing: LandingConfig, landing_root: Path, ds: date, table: str):  # -> pyarrow.Table | None
    """One table of a landed day, read only once the day is complete and only if the table keeps its contract.

    The way in for every reader outside the features DAG (training reads its labels through it): a day still
    being written (no ready marker), a day quarantined (its partition left landing) or a day not landed gives
    None, exactly as the features DAG would not read it; a file that breaks the table's contract raises.

    Returns:
        The table as pyarrow reads it (the contract's columns, then any others), or None when the day is not
        ready.

    Raises:
        LandingContractError: the file is missing from a ready partition, empty, unreadable, or lacks or
            mistypes a column of the contract.
        KeyError: ``table`` is not a table of the contract.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    spec = landing.tables[table]
    if not partition_ready(landing, landing_root, ds):
        return None
    single = landing.model_copy(update={"tables": {table: spec}})
    check = check_partition(single, landing_root, ds)
    path = table_file(landing, check.partition, table)
    if landing.format == "parquet":
        return pq.read_table(path)
    return pacsv.read_csv(path, convert_options=_csv_options(spec.columns))
