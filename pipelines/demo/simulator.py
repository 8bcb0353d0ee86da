"""A seeded churn simulator that lands raw daily partitions as docs/data-contract.md describes.

The simulator stands in for a real product's export: one folder per day under a landing folder,
holding a customer snapshot, the day's activity events and the churn outcomes observed that day,
then ``_SUCCESS`` written last. Everything is a pure function of ``(seed, ds, arguments)``, so a
re-landed day is identical and integration tests can compare the warehouse with the simulator's
own truth (:func:`expected_customer_daily_features`).

The population is stable: customer ``i`` keeps its signup date, plan, region, base charges and
latent behaviour on every day. Each day draws that day's behaviour from a generator seeded with
``(seed, ds.toordinal())``.

This module is never imported by a DAG file at parse time, so numpy and pandas load at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipelines.core.files import publish_folder

TABLES: tuple[str, ...] = ("customers", "events", "labels")
PLANS: tuple[str, ...] = ("monthly", "annual")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")
EVENT_TYPES: tuple[str, ...] = ("session", "purchase", "support_ticket")
FILE_FORMATS: tuple[str, ...] = ("parquet", "csv")

FAULTS: frozenset[str] = frozenset(
    {
        "null_burst",  # ~30% of customers.monthly_charges are null
        "renamed_column",  # customers.monthly_charges is written as monthly_charge
        # customers.customer_id is written as a string; CSV has no types, so there the ids are
        # only quoted and the file still reads as int64.
        "retyped_column",
        "duplicate_keys",  # ~5% of customers rows appear twice
        "empty_file",  # events file of zero bytes
        "corrupt_file",  # events file of garbage bytes
    }
)

# Signups fall in the three years before this day. It is fixed (not derived from the simulated
# days) so a customer's signup date depends on the seed alone.
POPULATION_EPOCH = date(2025, 1, 1)
SIGNUP_SPAN_DAYS = 3 * 365

# The window the mart aggregates over, mirrored from docs/data-contract.md.
WINDOW_DAYS = 30
SHORT_WINDOW_DAYS = 7
NO_SESSION_DAYS = WINDOW_DAYS + 1

# Churn model coefficients (see _churn_logit); module-level so tests and docs can read them.
CHURN_INTERCEPT = -1.0
CHURN_PER_EXPECTED_SESSION_30D = -0.06
CHURN_PER_EXPECTED_TICKET_30D = 0.8
CHURN_MONTHLY_PLAN = 0.9
CHURN_PER_CHARGE_ABOVE_65 = 0.03

MART_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "ds",
    "feature_timestamp",
    "tenure_days",
    "plan",
    "region",
    "monthly_charges",
    "sessions_7d",
    "sessions_30d",
    "purchases_30d",
    "spend_30d",
    "support_tickets_30d",
    "days_since_last_session",
)

_MICROS_PER_DAY = 86_400_000_000
# Labels are observed before 23:59:59 UTC of their day, the instant that day's features are stamped
# (pipelines.training.dataset.day_end): a label stamped at or after it would read its own day's features.
_LAST_LABEL_MICRO = _MICROS_PER_DAY - 1_000_000 - 1
# Stream ids keep the population, the day's behaviour and the day's faults on separate
# generators, so turning a fault on leaves every other value of the day unchanged.
_STREAM_POPULATION = 0
_STREAM_DAY = 1
_STREAM_FAULTS = 2


@dataclass(frozen=True)
class CovariateDrift:
    """A shift in what customers look like, applied to every day it is passed for.

    The churn relationship is defined on the drifted observables (expected sessions, charges), so
    this is covariate drift: P(x) moves while P(churned | x) stays the same.

    Attributes:
        session_rate_factor: multiplies every customer's daily session rate.
        charges_shift: added to every customer's monthly charges (floored at 1.0).
        purchase_amount_factor: multiplies every purchase amount.
    """

    session_rate_factor: float = 1.0
    charges_shift: float = 0.0
    purchase_amount_factor: float = 1.0


def customer_population(n_customers: int = 500, *, seed: int = 7) -> pd.DataFrame:
    """The stable population: attributes that depend on the seed only, never on the day.

    Args:
        n_customers: customers to simulate; ids run 1..n_customers.
        seed: population seed.

    Returns:
        One row per customer with columns ``customer_id`` (int64), ``signup_date`` (date),
        ``plan`` (``monthly``/``annual``), ``region`` (``north``/``south``/``east``/``west``),
        ``base_monthly_charges`` (float64), ``engagement`` (float64, expected sessions per day,
        mean 1) and ``support_rate`` (float64, expected support tickets per day, higher for low
        engagement). The last two are latent: they are never written to the landing folder.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, got {n_customers}")
    rng = np.random.default_rng([seed, _STREAM_POPULATION])
    ids = np.arange(1, n_customers + 1, dtype=np.int64)
    signup_offsets = rng.integers(1, SIGNUP_SPAN_DAYS + 1, size=n_customers)
    plan_idx = (rng.random(n_customers) >= 0.6).astype(int)  # 60% monthly
    region_idx = rng.integers(0, len(REGIONS), size=n_customers)
    charges = np.clip(rng.normal(65.0, 20.0, size=n_customers), 20.0, 120.0)
    # Annual plans are discounted, which also makes plan and charges mildly correlated.
    charges = np.where(plan_idx == 1, charges * 0.85, charges).round(2)
    engagement = rng.gamma(shape=2.0, scale=0.5, size=n_customers)
    frustration = rng.gamma(shape=2.0, scale=0.5, size=n_customers)
    support_rate = 0.06 * np.exp(-engagement) * frustration
    return pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": [POPULATION_EPOCH - timedelta(days=int(o)) for o in signup_offsets],
            "plan": np.asarray(PLANS, dtype=object)[plan_idx],
            "region": np.asarray(REGIONS, dtype=object)[region_idx],
            "base_monthly_charges": charges,
            "engagement": engagement,
            "support_rate": support_rate,
        }
    )


def _churn_logit(
    engagement: np.ndarray,
    support_rate: np.ndarray,
    is_monthly: np.ndarray,
    monthly_charges: np.ndarray,
    session_rate_factor: float,
) -> np.ndarray:
    expected_sessions_30d = WINDOW_DAYS * engagement * session_rate_factor
    expected_tickets_30d = WINDOW_DAYS * support_rate
    return (
        CHURN_INTERCEPT
        + CHURN_PER_EXPECTED_SESSION_30D * expected_sessions_30d
        + CHURN_PER_EXPECTED_TICKET_30D * expected_tickets_30d
        + CHURN_MONTHLY_PLAN * is_monthly
        + CHURN_PER_CHARGE_ABOVE_65 * (monthly_charges - 65.0)
    )


def _day_start(ds: date) -> datetime:
    return datetime(ds.year, ds.month, ds.day, tzinfo=UTC)


def _timestamps_in_day(ds: date, micros: np.ndarray) -> pd.Series:
    start = pd.Timestamp(_day_start(ds)).as_unit("us")
    return pd.Series(start + pd.to_timedelta(micros, unit="us"), dtype="datetime64[us, UTC]")


def simulate_day(
    ds: date,
    *,
    n_customers: int = 500,
    seed: int = 7,
    drift: CovariateDrift | None = None,
) -> dict[str, pd.DataFrame]:
    """The clean (fault-free) tables of one day, in memory.

    Churn outcomes: each day the customers with ``customer_id % 30 == ds.toordinal() % 30`` get
    an observed outcome, ``churned ~ Bernoulli(sigmoid(z))`` with::

        z = -1.0
            - 0.06 * expected_sessions_30d    # 30 * engagement * session_rate_factor
            + 0.8  * expected_tickets_30d     # 30 * support_rate
            + 0.9  * (plan == "monthly")
            + 0.03 * (monthly_charges - 65)   # the day's (possibly drifted) charges

    so churn is more likely with low engagement, more support tickets, a monthly plan and higher
    charges; the overall rate is about 23%.

    Args:
        ds: the day to simulate.
        n_customers: population size; ids run 1..n_customers.
        seed: simulation seed; the day's generator is seeded from ``(seed, ds.toordinal())``.
        drift: covariate drift to apply on this day, or None.

    Returns:
        ``{"customers": ..., "events": ..., "labels": ...}`` with the columns and dtypes of
        docs/data-contract.md: customers (customer_id, signup_date, plan, region,
        monthly_charges), events (event_id, customer_id, event_ts, event_type, amount) and labels
        (customer_id, label_ts, churned). Timestamps are ``datetime64[us, UTC]``; customers who
        sign up after ``ds`` are not yet in any table.
    """
    drift = drift or CovariateDrift()
    population = customer_population(n_customers, seed=seed)
    rng = np.random.default_rng([seed, _STREAM_DAY, ds.toordinal()])

    # Draw for the whole population before filtering, so a customer's draws do not depend on
    # who else has signed up yet.
    engagement = population["engagement"].to_numpy()
    support_rate = population["support_rate"].to_numpy()
    n_sessions = rng.poisson(engagement * drift.session_rate_factor)
    n_purchases = rng.poisson(0.05 + 0.10 * engagement)
    n_tickets = rng.poisson(support_rate)
    charges = np.maximum(population["base_monthly_charges"].to_numpy() + drift.charges_shift, 1.0)
    churn_draw = rng.random(n_customers)
    label_micros = rng.integers(0, _MICROS_PER_DAY, size=n_customers)

    active = np.array([s <= ds for s in population["signup_date"]], dtype=bool)
    ids = population["customer_id"].to_numpy()

    customers = pd.DataFrame(
        {
            "customer_id": ids[active],
            "signup_date": population["signup_date"][active].to_list(),
            "plan": population["plan"][active].to_list(),
            "region": population["region"][active].to_list(),
            "monthly_charges": charges[active].round(2),
        }
    )

    counts = np.stack([n_sessions, n_purchases, n_tickets], axis=1) * active[:, None]
    events = _day_events(rng, ds, ids, counts, drift)

    labelled = active & (ids % 30 == ds.toordinal() % 30)
    logit = _churn_logit(
        engagement,
        support_rate,
        (population["plan"].to_numpy() == "monthly").astype(float),
        charges,
        drift.session_rate_factor,
    )
    churned = (churn_draw < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    labels = pd.DataFrame(
        {
            "customer_id": ids[labelled],
            # Clamped, not redrawn: the day's other draws stay what they were; only the last second's labels move.
            "label_ts": _timestamps_in_day(ds, np.minimum(label_micros[labelled], _LAST_LABEL_MICRO)),
            "churned": churned[labelled],
        }
    )
    return {"customers": customers, "events": events, "labels": labels}


def _day_events(rng: np.random.Generator, ds: date, ids: np.ndarray, counts: np.ndarray,
                drift: CovariateDrift) -> pd.DataFrame:
    """The day's events from per-customer counts of (sessions, purchases, tickets); draws from ``rng``.

    Columns: event_id, customer_id, event_ts, event_type, amount.
    """
    event_customer = np.repeat(np.repeat(ids, 3), counts.reshape(-1))
    event_type_idx = np.repeat(np.tile(np.arange(3), len(ids)), counts.reshape(-1))
    n_events = len(event_customer)
    event_micros = rng.integers(0, _MICROS_PER_DAY, size=n_events)
    amounts = rng.lognormal(mean=3.0, sigma=0.6, size=n_events) * drift.purchase_amount_factor
    amounts = np.where(event_type_idx == 1, amounts.round(2), 0.0)
    # A stable order (customer, time) gives every event a deterministic sequence number.
    order = np.lexsort((event_type_idx, event_micros, event_customer))
    event_customer, event_type_idx = event_customer[order], event_type_idx[order]
    event_micros, amounts = event_micros[order], amounts[order]
    seq = pd.Series(event_customer).groupby(event_customer).cumcount().to_numpy()
    prefix = f"{ds:%Y%m%d}"
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}-{c}-{n}" for c, n in zip(event_customer, seq)],
            "customer_id": event_customer.astype(np.int64),
            "event_ts": _timestamps_in_day(ds, event_micros),
            "event_type": np.asarray(EVENT_TYPES, dtype=object)[event_type_idx],
            "amount": amounts.astype(np.float64),
        }
    )


def _check_faults(faults: Sequence[str]) -> None:
    unknown = sorted(set(faults) - FAULTS)
    if unknown:
        raise ValueError(
            f"unknown fault(s) {', '.join(map(repr, unknown))}; valid faults are "
            f"{', '.join(sorted(FAULTS))}"
        )


def _apply_table_faults(
    tables: dict[str, pd.DataFrame], faults: Sequence[str], rng: np.random.Generator
) -> dict[str, pd.DataFrame]:
    customers = tables["customers"].copy()
    if "duplicate_keys" in faults and len(customers):
        n_dupes = max(1, round(0.05 * len(customers)))
        dupes = customers.iloc[np.sort(rng.choice(len(customers), n_dupes, replace=False))]
        customers = (
            pd.concat([customers, dupes])
            .sort_values("customer_id", kind="stable")
            .reset_index(drop=True)
        )
    if "null_burst" in faults:
        nulls = rng.random(len(customers)) < 0.3
        customers["monthly_charges"] = customers["monthly_charges"].mask(nulls)
    if "retyped_column" in faults:
        customers["customer_id"] = customers["customer_id"].astype(str)
    if "renamed_column" in faults:
        customers = customers.rename(columns={"monthly_charges": "monthly_charge"})
    return {**tables, "customers": customers}


def _arrow_schema(table: str, frame: pd.DataFrame):  # -> pa.Schema
    import pyarrow as pa

    # Declared types per the contract; a faulted column keeps whatever type the fault gave it.
    contract = {
        "customer_id": pa.int64(),
        "signup_date": pa.date32(),
        "plan": pa.string(),
        "region": pa.string(),
        "monthly_charges": pa.float64(),
        "monthly_charge": pa.float64(),
        "event_id": pa.string(),
        "event_ts": pa.timestamp("us", tz="UTC"),
        "event_type": pa.string(),
        "amount": pa.float64(),
        "label_ts": pa.timestamp("us", tz="UTC"),
        "churned": pa.int64(),
    }
    fields = []
    for column in frame.columns:
        dtype = contract[column]
        if column == "customer_id" and frame[column].dtype == object:
            dtype = pa.string()
        fields.append(pa.field(column, dtype))
    return pa.schema(fields)


def _write_table(frame: pd.DataFrame, table: str, path: Path, file_format: str) -> None:
    if file_format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(frame, schema=_arrow_schema(table, frame), preserve_index=False)
        # Drop pandas metadata: the files are a product export, not a pandas round-trip.
        pq.write_table(arrow.replace_schema_metadata(None), path)
        return
    out = frame.copy()
    for column in ("event_ts", "label_ts"):
        if column in out:
            out[column] = out[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    if "signup_date" in out:
        out["signup_date"] = [d.isoformat() for d in out["signup_date"]]
    quoting = 2 if table == "customers" and out["customer_id"].dtype == object else 0
    # quoting=2 (QUOTE_NONNUMERIC) is the only way a CSV can say "this id is a string".
    out.to_csv(path, index=False, quoting=quoting, lineterminator="\n")


def land_day(
    landing: Path,
    ds: date,
    *,
    n_customers: int = 500,
    seed: int = 7,
    file_format: Literal["parquet", "csv"] = "parquet",
    drift: CovariateDrift | None = None,
    faults: Sequence[str] = (),
) -> Path:
    """Write one day's raw partition, replacing any earlier landing of that day.

    Files go to ``<landing>/ds=YYYY-MM-DD/{customers,events,labels}.<file_format>`` and
    ``_SUCCESS`` last. The partition is built in a temporary sibling folder and renamed into place,
    so a reader never sees a half-written day.

    Args:
        landing: the landing folder (created if missing).
        ds: the day to land.
        n_customers: population size; ids run 1..n_customers.
        seed: simulation seed; the same seed, day and arguments give the same values.
        file_format: ``parquet`` or ``csv``.
        drift: covariate drift to apply on this day, or None.
        faults: names from :data:`FAULTS` to inject into this day's files.

    Returns:
        The partition folder ``<landing>/ds=YYYY-MM-DD``.

    Raises:
        ValueError: for an unknown fault or file format.
    """
    _check_faults(faults)
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
    tables = simulate_day(ds, n_customers=n_customers, seed=seed, drift=drift)
    fault_rng = np.random.default_rng([seed, _STREAM_FAULTS, ds.toordinal()])
    tables = _apply_table_faults(tables, faults, fault_rng)

    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    partition = landing / f"ds={ds.isoformat()}"
    # Written under a dotted temporary name, so readers' ds=* globs never see a half-written partition.
    with publish_folder(partition) as staging:
        for table in TABLES:
            path = staging / f"{table}.{file_format}"
            if table == "events" and "empty_file" in faults:
                path.write_bytes(b"")
            elif table == "events" and "corrupt_file" in faults:
                # Invalid UTF-8 and no parquet magic: unreadable as either format.
                path.write_bytes(b"\xff\xfe\x00\x01garbage\xc3\x28not a " + file_format.encode())
            else:
                _write_table(tables[table], table, path, file_format)
        (staging / "_SUCCESS").write_bytes(b"")
    return partition


def land_days(
    landing: Path,
    start: date,
    days: int,
    *,
    drift_start: date | None = None,
    **kwargs,
) -> list[Path]:
    """Land ``days`` consecutive days from ``start`` with :func:`land_day`.

    Args:
        landing: the landing folder.
        start: the first day.
        days: how many days to land.
        drift_start: when given with ``drift=...``, the drift applies only to days on or after
            it; without it, a passed drift applies to every day.
        **kwargs: passed to :func:`land_day` for every day (``n_customers``, ``seed``,
            ``file_format``, ``drift``, ``faults``).

    Returns:
        The partition folders, in day order.
    """
    drift = kwargs.pop("drift", None)
    partitions = []
    for offset in range(days):
        ds = start + timedelta(days=offset)
        day_drift = drift if drift_start is None or ds >= drift_start else None
        partitions.append(land_day(landing, ds, drift=day_drift, **kwargs))
    return partitions


def _read_landed(partition: Path, table: str) -> pd.DataFrame:
    parquet, csv = partition / f"{table}.parquet", partition / f"{table}.csv"
    if parquet.exists():
        return pd.read_parquet(parquet)
    if csv.exists():
        frame = pd.read_csv(csv)
        for column in ("event_ts", "label_ts"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        if "signup_date" in frame:
            frame["signup_date"] = [date.fromisoformat(d) for d in frame["signup_date"]]
        return frame
    raise FileNotFoundError(f"no {table}.parquet or {table}.csv in {partition}")


def expected_customer_daily_features(landing: Path, ds: date) -> pd.DataFrame:
    """The mart rows for ``ds`` as the simulator computes them from the raw files it landed.

    An independent pandas implementation of ``customer_daily_features`` (docs/data-contract.md),
    used to check the dbt (and Feast) values. Rows follow the day's customer snapshot, so a
    duplicated customer row yields a duplicated feature row, as in the warehouse.

    Args:
        landing: the landing folder.
        ds: the day to describe; events come from the partitions of the 30 days ending on ``ds``
            that exist.

    Returns:
        Columns ``customer_id`` (int64), ``ds`` (``datetime.date``), ``feature_timestamp``
        (``datetime64[us, UTC]``, ``ds 23:59:59``), ``tenure_days`` (int64), ``plan``,
        ``region``, ``monthly_charges`` (float64), ``sessions_7d``, ``sessions_30d``,
        ``purchases_30d`` (int64), ``spend_30d`` (float64), ``support_tickets_30d`` and
        ``days_since_last_session`` (int64, 31 when no session in the window), sorted by
        ``customer_id``.
    """
    landing = Path(landing)
    customers = _read_landed(landing / f"ds={ds.isoformat()}", "customers")
    event_frames = []
    for back in range(WINDOW_DAYS):
        day = ds - timedelta(days=back)
        partition = landing / f"ds={day.isoformat()}"
        if partition.is_dir():
            frame = _read_landed(partition, "events")
            # The partition's day, not event_ts, dates an event: the contract keeps them equal.
            frame["days_ago"] = back
            event_frames.append(frame)
    events = pd.concat(event_frames, ignore_index=True)

    def count(mask: pd.Series) -> pd.Series:
        return events[mask].groupby("customer_id").size()

    is_session = events["event_type"] == "session"
    is_purchase = events["event_type"] == "purchase"
    activity = pd.DataFrame(
        {
            "sessions_7d": count(is_session & (events["days_ago"] < SHORT_WINDOW_DAYS)),
            "sessions_30d": count(is_session),
            "purchases_30d": count(is_purchase),
            "spend_30d": events[is_purchase].groupby("customer_id")["amount"].sum(),
            "support_tickets_30d": count(events["event_type"] == "support_ticket"),
            "days_since_last_session": events[is_session].groupby("customer_id")["days_ago"].min(),
        }
    )
    fills = {column: 0 for column in activity.columns} | {
        "spend_30d": 0.0,
        "days_since_last_session": NO_SESSION_DAYS,
    }
    out = customers.merge(activity, how="left", left_on="customer_id", right_index=True)
    out = out.fillna(fills)
    for column in fills:
        out[column] = out[column].astype("float64" if column == "spend_30d" else "int64")
    out["ds"] = ds
    out["feature_timestamp"] = pd.Series(
        [pd.Timestamp(_day_start(ds) + timedelta(hours=23, minutes=59, seconds=59))] * len(out),
        index=out.index,
        dtype="datetime64[us, UTC]",
    )
    out["tenure_days"] = np.array([(ds - d).days for d in out["signup_date"]], dtype=np.int64)
    out["customer_id"] = out["customer_id"].astype("int64")
    out["monthly_charges"] = out["monthly_charges"].astype("float64")
    out = out.sort_values("customer_id", kind="stable").reset_index(drop=True)
    return out[list(MART_COLUMNS)]


def expected_training_set(landing: Path, window_end: date, window_days: int) -> pd.DataFrame:
    """The labelled rows a point-in-time join would give, from the simulator's own truth.

    Labels observed on each day ``D`` of ``[window_end - window_days, window_end)`` joined to the mart's
    values of ``D - 1`` (the newest ones stamped before the label), as the training pipeline builds them
    through Feast; for benchmarks and tests that need a training set without running the pipeline.

    Returns:
        Columns ``customer_id``, ``event_timestamp`` (the label time), ``label``, ``label_day``, then every
        feature column of the mart (:data:`MART_COLUMNS` less ``customer_id``, ``ds``, ``feature_timestamp``).
    """
    landing = Path(landing)
    rows = []
    for n in range(window_days, 0, -1):
        day = window_end - timedelta(days=n)
        labels = _read_landed(landing / f"ds={day.isoformat()}", "labels")
        features = expected_customer_daily_features(landing, day - timedelta(days=1))
        joined = labels.merge(features.drop(columns=["ds", "feature_timestamp"]), on="customer_id")
        rows.append(joined.assign(label=joined["churned"], label_day=day, event_timestamp=joined["label_ts"]))
    feature_columns = [c for c in MART_COLUMNS if c not in ("customer_id", "ds", "feature_timestamp")]
    return pd.concat(rows, ignore_index=True)[["customer_id", "event_timestamp", "label", "label_day",
                                               *feature_columns]]
