"""Where dbt builds the marts: an embedded DuckDB file, or a Postgres database (production profile).

The features steps talk to a ``Warehouse``; which one comes from ``LOOPLINE_DBT_TARGET`` (the
production profile implies ``postgres``). The dbt models are the same for both: on DuckDB the
``read_landing`` macro reads the landing files directly; Postgres cannot read files, so the window's
landing files are first loaded into typed ``<instance>_landing.<table>`` tables (the usual
extract-load before dbt's transform), each file once per content digest.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from pipelines.core.faults import crash_point
from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings
from pipelines.features.config import LandingConfig
from pipelines.features.dbt import DEFAULT_LOOKBACK_DAYS, DUCKDB_PATH_ENV, checked_identifier

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# The staging window of a dbt project that does not name one (var loopline_lookback_days, read by build_mart).
LANDING_WINDOW_DAYS = DEFAULT_LOOKBACK_DAYS

_POSTGRES_TYPES = {"int64": "bigint", "float64": "double precision", "string": "text", "date": "date",
                   "timestamp": "timestamptz"}


class Warehouse(Protocol):
    dbt_target: str

    def dbt_env(self) -> dict[str, str]:
        """Environment the dbt profile's target reads."""

    def dbt_vars(self) -> dict[str, str]:
        """Extra dbt vars for this target."""

    def stage_landing(self, landing: LandingConfig, landing_root: Path, ds: date,
                      window_days: int = LANDING_WINDOW_DAYS) -> None:
        """Make the ``window_days`` days of landing ending on ``ds`` readable by the staging models."""

    def read_day(self, ds: date, mart: str, keys: Sequence[str] = ()) -> pd.DataFrame:
        """The day's mart rows, sorted by ``keys`` (the entity's join keys) when given."""

    def delete_day(self, ds: date, mart: str) -> int: ...

    def count_day(self, ds: date, mart: str) -> int: ...

    def describe(self) -> str: ...


class DuckDBWarehouse:
    """The embedded default: one DuckDB file per instance under the data home."""

    dbt_target = "duckdb"

    def __init__(self, path: Path):
        self.path = Path(path)

    def dbt_env(self) -> dict[str, str]:
        return {DUCKDB_PATH_ENV: str(self.path.resolve())}

    def dbt_vars(self) -> dict[str, str]:
        return {}

    def stage_landing(self, landing: LandingConfig, landing_root: Path, ds: date,
                      window_days: int = LANDING_WINDOW_DAYS) -> None:
        """DuckDB reads the landing files in place: only the warehouse file's folder must exist."""
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def read_day(self, ds: date, mart: str, keys: Sequence[str] = ()) -> pd.DataFrame:
        from pipelines.features.dbt import read_mart_day

        return read_mart_day(self.path, ds, mart=mart, keys=keys)

    def delete_day(self, ds: date, mart: str) -> int:
        from pipelines.features.dbt import delete_mart_day

        return delete_mart_day(self.path, ds, mart=mart)

    def count_day(self, ds: date, mart: str) -> int:
        from pipelines.features.dbt import count_mart_day

        return count_mart_day(self.path, ds, mart) if self.path.exists() else 0

    def describe(self) -> str:
        return f"DuckDB {self.path}"


class PostgresWarehouse:
    """The production warehouse: schema ``<instance>`` for dbt's models, ``<instance>_landing`` for raw tables."""

    dbt_target = "postgres"

    def __init__(self, url: str, schema: str):
        self.url = url
        self.schema = checked_identifier(schema, "schema")
        self.landing_schema = f"{self.schema}_landing"

    def _connect(self):
        import psycopg

        connection = psycopg.connect(self.url, autocommit=False)
        connection.execute("set time zone 'UTC'")
        return connection

    def dbt_env(self) -> dict[str, str]:
        parts = urlsplit(self.url)
        return {
            "LOOPLINE_DBT_PG_HOST": parts.hostname or "127.0.0.1",
            "LOOPLINE_DBT_PG_PORT": str(parts.port or 5432),
            "LOOPLINE_DBT_PG_USER": unquote(parts.username or "postgres"),
            "LOOPLINE_DBT_PG_PASSWORD": unquote(parts.password or ""),
            "LOOPLINE_DBT_PG_DBNAME": parts.path.lstrip("/"),
            "LOOPLINE_DBT_PG_SCHEMA": self.schema,
        }

    def dbt_vars(self) -> dict[str, str]:
        return {"landing_schema": self.landing_schema}

    def stage_landing(self, landing: LandingConfig, landing_root: Path, ds: date,
                      window_days: int = LANDING_WINDOW_DAYS) -> None:
        """Load the window's landing files into ``<instance>_landing`` tables, each file once per digest.

        The window is the ``window_days`` days ending on ``ds``: the dbt project's ``loopline_lookback_days``
        (:func:`pipelines.features.dbt.staging_window_days`), the longest window its models read.

        Re-running a day reloads nothing unchanged; a re-landed (changed) file replaces its day's rows. The
        tables are named after the YAML's tables (what ``read_landing('<table>')`` reads), whatever their files
        are called. One transaction, serialized per landing schema by a transaction-level advisory lock: two
        overlapping windows never load a file twice, and a connection cut half-way leaves nothing behind.

        Raises:
            LandingContractError: a file's values do not fit its contract's types (the data's fault).
            psycopg.OperationalError: the connection failed (a fault: retried, nothing quarantined).
        """
        import psycopg

        from pipelines.core.locks import advisory_key
        from pipelines.features.landing import LandingContractError, partition_dir, table_file

        days = [ds - timedelta(days=offset) for offset in range(window_days)]
        loaded = skipped = 0
        with self._connect() as connection:
            connection.execute("select pg_advisory_xact_lock(%s)", (advisory_key(f"landing:{self.landing_schema}"),))
            connection.execute(f'create schema if not exists "{self.landing_schema}"')
            connection.execute(
                f'create table if not exists "{self.landing_schema}"."_loaded" '
                "(landing_table text, ds date, digest text, primary key (landing_table, ds))")
            for name, table in landing.tables.items():
                table_name = checked_identifier(name, "landing table")
                columns = ", ".join(f'"{c}" {_POSTGRES_TYPES[t]}' for c, t in table.columns.items())
                connection.execute(
                    f'create table if not exists "{self.landing_schema}"."{table_name}" ({columns}, ds date not null)')
                for day in days:
                    path = table_file(landing, partition_dir(landing, landing_root, day), name)
                    if not path.exists():
                        if day == ds:
                            raise FileNotFoundError(f"no {path.name} landed for ds={ds}: expected {path}; land the "
                                                    "day (files, then the ready marker) before building it")
                        continue
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    seen = connection.execute(
                        f'select digest from "{self.landing_schema}"."_loaded" where landing_table = %s and ds = %s',
                        (table_name, day)).fetchone()
                    if seen and seen[0] == digest:
                        skipped += 1
                        continue
                    try:
                        with connection.transaction():  # a savepoint: a bad file does not poison the rest
                            self._load_file(connection, landing, table_name, list(table.columns), path, day)
                    except (psycopg.DataError, psycopg.IntegrityError, ValueError, KeyError) as exc:
                        if day != ds:
                            log.warning("Landing file %s of an earlier day does not load (%s); left out of the "
                                        "window", path, str(exc).splitlines()[0])
                            continue
                        raise LandingContractError(
                            f"landing partition {ds} breaks its contract: {path.name} does not load into "
                            f"{self.landing_schema}.{table_name}: {str(exc).splitlines()[0]}") from exc
                    connection.execute(
                        f'insert into "{self.landing_schema}"."_loaded" values (%s, %s, %s) '
                        "on conflict (landing_table, ds) do update set digest = excluded.digest",
                        (table_name, day, digest))
                    loaded += 1
        log.info("Landing window of %s (%d days) staged in %s.%s: %d file(s) loaded, %d unchanged",
                 ds, window_days, self.describe(), self.landing_schema, loaded, skipped)

    def _load_file(self, connection: Any, landing: LandingConfig, table_name: str, columns: list[str],
                   path: Path, day: date) -> None:
        import pandas as pd

        if landing.format == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_parquet(path, columns=columns)
        frame = frame[columns].astype(object).where(frame[columns].notna(), None)
        connection.execute(f'delete from "{self.landing_schema}"."{table_name}" where ds = %s', (day,))
        crash_point("stage:before-copy")
        quoted = ", ".join(f'"{c}"' for c in [*columns, "ds"])
        with connection.cursor().copy(f'copy "{self.landing_schema}"."{table_name}" ({quoted}) from stdin') as copy:
            for row in frame.itertuples(index=False, name=None):
                copy.write_row((*row, day))

    def _mart_exists(self, connection: Any, mart: str) -> bool:
        row = connection.execute(
            "select count(*) from information_schema.tables where table_schema = %s and table_name = %s",
            (self.schema, mart)).fetchone()
        return bool(row and row[0])

    def read_day(self, ds: date, mart: str, keys: Sequence[str] = ()) -> pd.DataFrame:
        import pandas as pd

        from pipelines.features.dbt import sort_by_keys

        mart = checked_identifier(mart)
        with self._connect() as connection:
            if not self._mart_exists(connection, mart):
                raise LookupError(f"table {self.schema}.{mart} not found in {self.describe()}; run dbt build first")
            cursor = connection.execute(f'select * from "{self.schema}"."{mart}" where ds = %s', (ds,))
            frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
        for column in frame.columns:
            if len(frame) and isinstance(frame[column].iloc[0], int) and not isinstance(frame[column].iloc[0], bool):
                frame[column] = frame[column].astype("int64")
            elif len(frame) and isinstance(frame[column].iloc[0], float):
                frame[column] = frame[column].astype("float64")
            elif column != "ds" and len(frame) and hasattr(frame[column].iloc[0], "tzinfo"):
                frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        return sort_by_keys(frame, keys)

    def delete_day(self, ds: date, mart: str) -> int:
        mart = checked_identifier(mart)
        with self._connect() as connection:
            if not self._mart_exists(connection, mart):
                return 0
            return connection.execute(f'delete from "{self.schema}"."{mart}" where ds = %s', (ds,)).rowcount

    def count_day(self, ds: date, mart: str) -> int:
        mart = checked_identifier(mart)
        with self._connect() as connection:
            if not self._mart_exists(connection, mart):
                return 0
            row = connection.execute(f'select count(*) from "{self.schema}"."{mart}" where ds = %s', (ds,)).fetchone()
            return int(row[0]) if row else 0

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"Postgres {parts.hostname}:{parts.port or 5432}{parts.path}"


def warehouse_for(instance: str, settings: LooplineSettings | None = None) -> Warehouse:
    """The warehouse an instance's dbt builds into, as the settings choose."""
    settings = settings or get_settings()
    if settings.dbt_target == "postgres":
        return PostgresWarehouse(settings.database_url("warehouse"), schema=instance)
    return DuckDBWarehouse(DataHome(settings).warehouse(instance))
