"""What the Loopline page in the Airflow UI shows, gathered from MLflow, the data home and Airflow's metadata.

One use case is one ``instance`` of ``dags/configs/*.yaml`` (``churn``, ``docs``, ``assistant``); for each,
:func:`gather` collects:

- ``models``: per model the ``champion`` version with its run's metrics and params, and the latest versions
  with their promotion verdict (``loopline.promotion`` / ``loopline.promotion_reason`` tags);
- ``drift``: the last verdicts of its drift checks (``drift/history.db``) with a link to each Evidently report;
- ``indexes``: the versions of its RAG indexes (the catalog under ``rag/``) with their evaluation metrics;
- ``runs``: its recent asset-triggered DAG runs, with the Asset events that started them and the reason
  carried in each event's extra (a drift check puts its signals, drift share and report there);
- ``assistants``: per assistant, its last 7 UTC days from the query log (answers, declined, tokens, p50/p95
  latency, share of the daily token budget) and the thumbs up/down that people gave on those days' traces.

Everything here reads; nothing creates a store. Every value a page shows passes :func:`scrub`, which removes
the secrets of the environment (passwords in URLs, values of ``*PASSWORD*``/``*SECRET*``/``*TOKEN*``/``*KEY*``
variables): the page can be shown to anyone who may log in to Airflow.

Who sees what: :func:`gather` takes the DAGs the viewer may read (``allowed_dag_ids``, from Airflow's auth
manager) and keeps, per use case, only the pipelines of those DAGs (their models, drift checks, index versions,
assistants and runs); a use case without a readable DAG is left out. A report under ``reports/`` belongs to the
DAGs that write its folder (:func:`report_owners`).

Asset-event extras are untrusted: any DAG, and any user of Airflow's REST API who may create asset events, can
post one with any JSON. They are read one by one (an unreadable one is reported, not fatal), bounded in size
and depth (:func:`bounded`), a report path in them is linked only when it lies inside the data home's
``reports/`` (:func:`report_link`), and the page escapes everything it shows.

Heavy libraries (mlflow, sqlalchemy, airflow) are imported inside the functions that need them, so the
Airflow processes that load the plugin do not pay for them.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pipelines.core.home import DataHome
from pipelines.core.settings import LooplineSettings, get_settings, passwords_in
from pipelines.lineage import uris
from pipelines.templates import CONFIG_DIR

log = logging.getLogger(__name__)

RECENT_VERSIONS = 5
RECENT_VERDICTS = 5
RECENT_RUNS = 10
# The metrics a model's page shows first, per template; any other logged metric is kept in ``metrics``.
HEADLINE_METRICS = {
    "training": ("holdout_roc_auc", "holdout_pr_auc", "holdout_log_loss", "holdout_brier"),
    "lora_tune": ("eval_perplexity", "base_eval_perplexity", "eval_improvement"),
}
HEADLINE_PARAMS = {
    "training": ("family", "max_iter", "learning_rate", "max_depth", "min_samples_leaf", "hidden_units", "epochs",
                 "window_start", "window_end", "train_rows", "holdout_rows"),
    "lora_tune": ("lora_rank", "lora_alpha", "epochs", "learning_rate", "max_steps", "train_pairs", "eval_pairs"),
}
# Bounds on what an Asset event's extra (untrusted JSON) may put on the page: characters per string, items per
# list or mapping, nesting depth. The drift checks' own extras stay well inside them.
MAX_EXTRA_TEXT = 1000
MAX_EXTRA_ITEMS = 50
MAX_EXTRA_DEPTH = 4
MAX_REASON_CHARS = 600
MAX_PATH_CHARS = 4096
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
MIN_SECRET_CHARS = 4  # shorter values ("1", "true") would blank out ordinary text


# --- secrets ------------------------------------------------------------------------------------------------

def redact_uri(uri: str | None) -> str | None:
    """A URI without its password, user info kept: ``postgresql://u:***@db:5432/x``; a query string dropped."""
    if not uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    if not parts.scheme:
        return parts.path
    return f"{parts.scheme}://{netloc}{parts.path}"


def secrets_of(settings: LooplineSettings | None = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Strings that must never reach a page: passwords in the settings' URLs and in every environment value,
    and the whole value of every variable whose name says it is a secret."""
    settings = settings or get_settings()
    environ = os.environ if environ is None else environ
    found = set(settings.secrets)
    for name, value in environ.items():
        if SECRET_NAME.search(name):
            found.add(value)
        found |= passwords_in(value)
    variants = set()
    for secret in found:
        variants |= {secret, quote(secret, safe=""), quote(secret)}
    return {s for s in variants if len(s) >= MIN_SECRET_CHARS}


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` (str, or lists/dicts of them) with every secret replaced by ``***``; longest secrets first."""
    ordered = sorted(set(secrets), key=len, reverse=True)

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            for secret in ordered:
                item = item.replace(secret, "***")
            return item
        if isinstance(item, Mapping):
            return {clean(k): clean(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        return item

    return clean(value)


# --- use cases ----------------------------------------------------------------------------------------------

@dataclass
class UseCase:
    """The pipelines of one ``instance``, by template."""

    name: str
    configs: list[Any] = field(default_factory=list)

    def of(self, template: str) -> list[Any]:
        return [c for c in self.configs if c.template == template]

    @property
    def dag_ids(self) -> list[str]:
        return [c.dag_id for c in self.configs]


def use_cases(config_dir: Path = CONFIG_DIR) -> tuple[list[UseCase], list[str]]:
    """The use cases of a config folder, biggest first, and the configs that did not load (``file: error``)."""
    from pipelines.templates import config_files, load_config

    cases: dict[str, UseCase] = {}
    errors = []
    for path in config_files(config_dir):
        try:
            config = load_config(path)
        except Exception as exc:  # the DAG file shows the same error as its import error
            errors.append(f"{path.name}: {exc}")
            continue
        cases.setdefault(config.instance, UseCase(config.instance)).configs.append(config)
    # The use cases with the most pipelines first (the page leads with the loop's main use case), then by name.
    return sorted(cases.values(), key=lambda c: (-len(c.configs), c.name)), errors


# --- models (MLflow) ----------------------------------------------------------------------------------------

DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


class StoreUnreachable(ConnectionError):
    """The MLflow store does not answer: the page says so at once instead of waiting on MLflow's retries."""


def _mlflow_store_exists(settings: LooplineSettings, timeout_s: float = 2.0) -> bool:
    """False for an embedded store not created yet; raises :class:`StoreUnreachable` for a server that does not
    accept connections (MLflow itself would retry for minutes)."""
    import socket

    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).exists()
    parts = urlsplit(uri)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.split("+")[0])
    if parts.hostname and port:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
        except OSError as exc:
            raise StoreUnreachable(f"MLflow store {redact_uri(uri)} does not answer: {exc}") from None
    return True


def _version_row(client, version, template: str, champion: str | None) -> dict[str, Any]:
    row = {
        "version": str(version.version),
        "run_id": version.run_id,
        "created": _millis(version.creation_timestamp),
        "champion": str(version.version) == champion,
        "promotion": version.tags.get("loopline.promotion"),
        "reason": version.tags.get("loopline.promotion_reason") or version.tags.get("loopline.registration_reason"),
        "family": version.tags.get("family"),
        "metrics": {}, "params": {},
    }
    try:
        data = client.get_run(version.run_id).data
    except Exception as exc:  # the run was deleted, or the store moved
        row["error"] = f"run {version.run_id}: {exc}"
        return row
    headline = HEADLINE_METRICS.get(template, ())
    row["metrics"] = {k: round(float(data.metrics[k]), 4) for k in headline if k in data.metrics}
    row["params"] = {k: data.params[k] for k in HEADLINE_PARAMS.get(template, ()) if k in data.params}
    return row


def _millis(stamp: int | None) -> str | None:
    return datetime.fromtimestamp(stamp / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if stamp else None


def model_summary(model_name: str, template: str, settings: LooplineSettings | None = None,
                  recent: int = RECENT_VERSIONS) -> dict[str, Any]:
    """The champion of ``model_name`` and its latest versions.

    Returns:
        ``{"name", "champion": version row or None, "versions": [version rows, newest first]}``; a version row
        has ``version, run_id, created, champion, promotion, reason, family, metrics, params``.
    """
    settings = settings or get_settings()
    summary: dict[str, Any] = {"name": model_name, "template": template, "champion": None, "versions": []}
    if not _mlflow_store_exists(settings):
        return summary
    from mlflow.exceptions import MlflowException

    from pipelines.core import tracking
    client = tracking.client(settings)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return summary
    try:
        champion = str(client.get_model_version_by_alias(model_name, tracking.CHAMPION).version)
    except MlflowException:
        champion = None
    newest = sorted(versions, key=lambda v: int(v.version), reverse=True)
    summary["versions"] = [_version_row(client, v, template, champion) for v in newest[:recent]]
    summary["champion"] = next((r for r in summary["versions"] if r["champion"]), None)
    if champion and summary["champion"] is None:  # an older version still holds the alias
        held = next((v for v in newest if str(v.version) == champion), None)
        summary["champion"] = _version_row(client, held, template, champion) if held else None
    return summary


# --- drift (history under the data home) --------------------------------------------------------------------

# reports/<instance>/<kind>/…: which template's DAGs write the reports of a kind (pipelines/core/home.py).
REPORT_WRITERS = {"drift": "drift_check", "validation": "features", "llm_eval": "llm_eval"}


def report_link(report_uri: Any, settings: LooplineSettings, *, root: Path | None = None) -> str | None:
    """The path below the data home's ``reports/`` of an HTML report (what the page links to), or None.

    ``report_uri`` may come from an Asset event's extra, which anyone may write: only a string that is a
    ``file://`` URI (no host) or an absolute path, ends in ``.html`` and lies inside ``reports/`` once symlinks
    and ``..`` are resolved gives a link; anything else is None (the page shows it as text).
    """
    if not isinstance(report_uri, str) or not report_uri or len(report_uri) > MAX_PATH_CHARS:
        return None
    try:
        parts = urlsplit(report_uri)
    except ValueError:
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return None
        raw = unquote(parts.path)  # Path.as_uri() percent-encodes
    elif not parts.scheme:
        raw = report_uri
    else:
        return None
    if "\x00" in raw or not Path(raw).is_absolute():  # a relative path would resolve against the cwd
        return None
    try:
        relative = Path(raw).resolve().relative_to(root or DataHome(settings).reports.resolve())
    except (ValueError, OSError, RuntimeError):
        return None
    return relative.as_posix() if relative.suffix == ".html" else None


def report_owners(path: str, cases: Iterable[UseCase]) -> set[str]:
    """The DAGs that write the report at ``path`` (below ``reports/``: ``<instance>/<kind>/<file>``).

    The drift checks of ``<instance>`` write ``drift/``, its features DAGs ``validation/``; any other folder has
    no owner (an empty set), and nobody is shown what is in it.
    """
    parts = PurePosixPath(path).parts
    template = REPORT_WRITERS.get(parts[1]) if len(parts) >= 3 else None
    if template is None:
        return set()
    return {c.dag_id for case in cases if case.name == parts[0] for c in case.of(template)}


def drift_verdicts(instance: str, settings: LooplineSettings | None = None,
                   limit: int = RECENT_VERDICTS) -> list[dict[str, Any]]:
    """The last ``limit`` drift checks of ``instance``, newest first, each with ``report`` (a path under
    ``reports/``, or None) beside the history's columns."""
    from pipelines.drift.history import DriftHistory, history_path

    settings = settings or get_settings()
    path = history_path(settings)
    if not path.exists():
        return []
    rows = DriftHistory(path).checks(instance)[-limit:][::-1]
    for row in rows:
        row["report"] = report_link(row.get("report_uri"), settings)
        row.pop("reference", None)  # long; the MLflow run has it
    return rows


# --- RAG index versions (catalog under the data home) -------------------------------------------------------

def index_versions(rag_config, settings: LooplineSettings | None = None) -> list[dict[str, Any]]:
    """The catalogued versions of one index, newest first: status, live, model, evaluation metrics, gate."""
    from pipelines.rag.versions import VersionCatalog, catalog_path, version_number

    settings = settings or get_settings()
    path = catalog_path(rag_config, settings)
    if not path.exists():
        return []
    catalog = VersionCatalog(path)
    rows = []
    for name in sorted(catalog.versions, key=version_number, reverse=True):
        record = catalog.versions[name]
        evaluation = record.get("evaluation") or {}
        rows.append({
            "version": name, "status": record.get("status"), "live": record.get("status") == "live",
            "model_id": record.get("model_id"), "chunker": {k: v for k, v in (record.get("chunker") or {}).items()
                                                           if k != "digest"},
            "k": evaluation.get("k"), "metrics": evaluation.get("metrics") or {},
            "gate": record.get("gate"), "went_live_because": record.get("went_live_because"),
            "built_by": record.get("built_by"),
        })
    return rows


# --- lineage (OpenLineage events under the data home) -------------------------------------------------------

LINEAGE_LISTED = 200  # raw inputs listed per kind; the count says how many there are


def lineage_summary(uri: str, runs: list | None, settings: LooplineSettings | None = None) -> dict[str, Any] | None:
    """How dataset ``uri`` (a champion, a live index version) was made, from the OpenLineage events.

    Returns:
        None when no event names it (lineage is recorded from the OpenLineage provider's install on); else
        ``{"uri", "steps": [{"job", "dag_id", "dag_run_id", "at", "outputs"}], "sources": {kind: [uri, ...]},
        "source_counts": {kind: n}, "datasets": n, "flow"}``: the task runs that made it and its inputs, newest
        first, the raw inputs (read, never written by a task) grouped by kind (``file``, ``corpus``, ``model``…),
        and the picture's nodes and edges (:meth:`pipelines.lineage.graph.LineageNode.flow`).
    """
    from pipelines.lineage.graph import lineage_of, read_runs

    graph = lineage_of(uri, read_runs(settings) if runs is None else runs)
    if graph.made_by is None:
        return None
    sources: dict[str, set[str]] = {}
    for node in graph.walk():
        if node.made_by is None:
            sources.setdefault(node.uri.split("://", 1)[0], set()).add(node.uri)
    steps = [{"job": run.job, "dag_id": run.dag_id, "dag_run_id": run.dag_run_id, "at": run.at.isoformat(),
              "outputs": list(run.outputs)} for run in graph.runs()]
    unique = {kind: sorted(found) for kind, found in sources.items()}
    return {"uri": uri, "steps": steps, "sources": {kind: found[:LINEAGE_LISTED] for kind, found in unique.items()},
            "source_counts": {kind: len(found) for kind, found in unique.items()}, "datasets": len(graph.uris()),
            "flow": graph.flow()}


# --- asset-triggered runs (Airflow's metadata database) -----------------------------------------------------

def bounded(value: Any, depth: int = 0) -> Any:
    """A JSON value from an untrusted source, cut to what a page can show: strings to ``MAX_EXTRA_TEXT``
    characters, lists and mappings to ``MAX_EXTRA_ITEMS`` items and ``MAX_EXTRA_DEPTH`` levels (a cut says so),
    non-finite floats as text (a JSON response refuses NaN). A small, well-formed value comes back unchanged."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _clip(value, MAX_EXTRA_TEXT)
    if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_EXTRA_DEPTH:
        return f"({type(value).__name__} nested deeper than {MAX_EXTRA_DEPTH} levels, not shown)"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {_clip(str(k), 200): bounded(v, depth + 1) for k, v in items[:MAX_EXTRA_ITEMS]}
        if len(items) > MAX_EXTRA_ITEMS:
            out["…"] = f"{len(items) - MAX_EXTRA_ITEMS} more keys not shown"
        return out
    if isinstance(value, (list, tuple)):
        out = [bounded(v, depth + 1) for v in value[:MAX_EXTRA_ITEMS]]
        if len(value) > MAX_EXTRA_ITEMS:
            out.append(f"… {len(value) - MAX_EXTRA_ITEMS} more items not shown")
        return out
    return _clip(str(value), MAX_EXTRA_TEXT)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters, cut)"


def read_extra(raw: str | None) -> tuple[Any, str | None]:
    """An Asset event's extra from its stored JSON text: ``(bounded value, None)``, or ``({}, why)`` when the text
    does not parse (``why``: nested too deep for the parser, a number too long, not JSON)."""
    if raw is None:
        return {}, None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return {}, f"extra is not readable JSON ({type(exc).__name__}, {len(raw):,} characters)"
    return bounded(value), None


def asset_triggered_runs(dag_ids: Iterable[str], limit: int = RECENT_RUNS, session=None,
                         settings: LooplineSettings | None = None) -> list[dict[str, Any]]:
    """The latest asset-triggered runs of ``dag_ids``, newest first, with the events they consumed.

    Each run: ``dag_id, run_id, state, queued_at, start_date, end_date`` and ``events``: for each consumed
    Asset event ``asset, source_dag_id, source_run_id, source_task_id, timestamp``, ``extra`` (bounded, see
    :func:`bounded`: any JSON value, a mapping when its producer behaved), ``reason`` (:func:`trigger_reason`)
    and ``report``: the extra's ``report_uri`` as a path below ``reports/`` when it lies there (:func:`report_link`),
    else None. Reads Airflow's ORM; pass the api-server's session or let one be created.
    """
    from airflow.models.asset import AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType
    from sqlalchemy import Text, cast, select
    from sqlalchemy.orm import configure_mappers, defer, selectinload

    configure_mappers()  # DagRun.consumed_asset_events is a backref: it exists once the mappers are configured
    settings = settings or get_settings()
    dag_ids = list(dag_ids)
    if not dag_ids:
        return []
    # The extras are not loaded with the events: one that the JSON parser cannot read (nested 100,000 deep)
    # would fail the whole query. They are read as text and parsed one by one.
    query = (select(DagRun).where(DagRun.dag_id.in_(dag_ids), DagRun.run_type == DagRunType.ASSET_TRIGGERED)
             .order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(limit)
             .options(selectinload(DagRun.consumed_asset_events).options(defer(AssetEvent.extra),
                                                                         selectinload(AssetEvent.asset))))

    reports = DataHome(settings).reports.resolve()  # once, not per event

    def read(s) -> list[dict[str, Any]]:
        runs = []
        dag_runs = list(s.scalars(query))
        event_ids = [e.id for run in dag_runs for e in run.consumed_asset_events]
        raw_extras = dict(s.execute(select(AssetEvent.id, cast(AssetEvent.extra, Text))
                                    .where(AssetEvent.id.in_(event_ids))).all()) if event_ids else {}
        for run in dag_runs:
            events = []
            for event in sorted(run.consumed_asset_events, key=lambda e: e.timestamp):
                extra, unreadable = read_extra(raw_extras.get(event.id))
                report_uri = extra.get("report_uri") if isinstance(extra, Mapping) else None
                events.append({
                    "asset": event.asset.name if event.asset else str(event.asset_id),
                    "uri": event.asset.uri if event.asset else None,
                    "source_dag_id": event.source_dag_id, "source_run_id": event.source_run_id,
                    "source_task_id": event.source_task_id, "timestamp": _iso(event.timestamp),
                    "extra": extra, "reason": f"an Asset event whose {unreadable}" if unreadable
                    else trigger_reason(extra),
                    "report": report_link(report_uri, settings, root=reports),
                })
            runs.append({"dag_id": run.dag_id, "run_id": run.run_id, "state": str(run.state),
                         "queued_at": _iso(run.queued_at), "start_date": _iso(run.start_date),
                         "end_date": _iso(run.end_date), "events": events})
        return runs

    if session is not None:
        return read(session)
    with create_session() as s:
        return read(s)


def _iso(value) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else None


def _texts(value: Any) -> list[str]:
    """A field of an extra that should be a list of strings, as one: a lone string or number is one item."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) else json.dumps(v, default=str) for v in value[:MAX_EXTRA_ITEMS]]
    return [value if isinstance(value, str) else json.dumps(value, default=str)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trigger_reason(extra: Any) -> str:
    """One line a person reads: why an Asset event asked for a run, from what its producer put in its extra.

    The extra is untrusted: a value of an unexpected type is shown as text (``drift share 'abc' (not a
    number)``), never raised on; the line is at most ``MAX_REASON_CHARS`` characters.
    """
    if not isinstance(extra, Mapping):
        if extra in (None, "", []):
            return "an Asset event without details"
        shown = json.dumps(extra, default=str)
        return _clip(f"an Asset event whose extra is not a mapping: {_clip(shown, 300)}", MAX_REASON_CHARS)
    if not extra:
        return "an Asset event without details"
    parts = []
    reasons, signals = _texts(extra.get("reasons")), _texts(extra.get("signals"))
    if reasons:
        parts.append("; ".join(reasons))
    elif signals:
        parts.append("signals: " + ", ".join(signals))
    share = extra.get("drift_share")
    if share is not None and not any("share" in p for p in parts):
        parts.append(f"drift share {share:.2f}" if _is_number(share)
                     else f"drift share {_clip(json.dumps(share, default=str), 60)} (not a number)")
    columns = _texts(extra.get("drifted_columns"))
    if columns and not any(columns[0] in p for p in parts):
        parts.append("drifted: " + ", ".join(columns))
    if not parts and extra.get("version") and extra.get("mode"):  # an index went live (rag_index's event)
        mode = {"full": "a full build", "incremental": "an in-place update"}.get(str(extra["mode"]), extra["mode"])
        parts.append(f"index version {extra['version']} went live after {mode}"
                     + (f" with {extra['model_id']}" if extra.get("model_id") else ""))
    if not parts:
        parts.append(_clip(json.dumps(extra, sort_keys=True, default=str), 300))
    return _clip("; ".join(parts), MAX_REASON_CHARS)


# --- assistants (query log under the data home, feedback on MLflow traces) ---------------------------------

ASSISTANT_DAYS = 7
MAX_FEEDBACK_TRACES = 10_000  # traces with feedback read per page view at most: a bound on its cost


def assistant_days(config, settings: LooplineSettings | None = None, *, today: date,
                   days: int = ASSISTANT_DAYS) -> list[dict[str, Any]]:
    """The assistant's last ``days`` UTC days up to ``today``, newest first, from its query-log rows.

    Returns:
        One :func:`pipelines.assistant.query_log.day_summary` per day: ``day, answers, refused, checks,
        tokens_in, tokens_out, tokens, latency_p50_ms, latency_p95_ms, budget_share``.
    """
    from pipelines.assistant import query_log
    from pipelines.assistant.retrieval import index_config

    rag = index_config(config)
    return [query_log.day_summary(rag.instance, config.dag_id, today - timedelta(days=n), settings,
                                  max_tokens_per_day=config.budgets.max_tokens_per_day) for n in range(days)]


def assistant_feedback(config, settings: LooplineSettings | None = None, *, first_day: date, last_day: date,
                       limit: int = MAX_FEEDBACK_TRACES) -> dict[str, dict[str, int]]:
    """Thumbs up and down per UTC day of the answer (:func:`pipelines.assistant.feedback.thumbs_by_day`);
    nothing when the MLflow store does not exist yet."""
    settings = settings or get_settings()
    if not _mlflow_store_exists(settings):
        return {}
    from pipelines.assistant.feedback import thumbs_by_day

    return thumbs_by_day(config.experiment_name, first_day, last_day, settings, limit=limit)


def assistant_summary(config, settings: LooplineSettings, errors: list[str], *, today: date) -> dict[str, Any]:
    """One assistant's entry on the page: its budget and :func:`assistant_days`, each day with its thumbs
    (``thumbs_up``/``thumbs_down``; None when the feedback could not be read: the error says why)."""
    days = _section(errors, f"query log of {config.dag_id}", assistant_days, config, settings, today=today) or []
    thumbs = None
    if days:
        thumbs = _section(errors, f"feedback on the traces of {config.dag_id}", assistant_feedback, config, settings,
                          first_day=date.fromisoformat(days[-1]["day"]), last_day=today)
    for day in days:
        counts = (thumbs or {}).get(day["day"], {"up": 0, "down": 0})
        day["thumbs_up"] = counts["up"] if thumbs is not None else None
        day["thumbs_down"] = counts["down"] if thumbs is not None else None
    return {"dag_id": config.dag_id, "experiment": config.experiment_name,
            "max_tokens_per_day": config.budgets.max_tokens_per_day, "days": days}


def prompt_version(config, settings: LooplineSettings) -> int | None:
    """The prompt version answers load (``prompt.alias``), or None before one is registered."""
    if not _mlflow_store_exists(settings):
        return None
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import alias_version

    return alias_version(tracking.client(settings), "prompt", config.prompt.name, config.prompt.alias)


# --- LLM evaluations and the release gate (MLflow evaluation runs) ---------------------------------------------

RECENT_EVALUATIONS = 6
# The evaluation metrics the page shows (names of pipelines.llm_eval.steps.SUMMARY_METRICS).
EVALUATION_METRICS = ("hit_at_k", "fact_recall", "hallucination_rate", "refusal_accuracy", "attack_success_rate",
                      "latency_p95_ms")


def evaluation_summary(config, settings: LooplineSettings | None = None,
                       recent: int = RECENT_EVALUATIONS) -> dict[str, Any]:
    """The latest evaluation runs of an llm_eval pipeline, each with what it evaluated and the gate's decision.

    Returns:
        ``{"dag_id", "assistant", "prompt", "champion_prompt_version", "runs": [...]}``, newest first; a run has
        ``run_id, started, role (champion|candidate), candidate, prompt_version, index_version, golden_digest,
        metrics, decision, reason, report`` (the report's path below ``reports/``, or None).
    """
    from pipelines.core import tracking
    from pipelines.llm_eval.candidates import CHAMPION, DECISION_TAG, REASON_TAG, alias_version
    from pipelines.llm_eval.steps import ROLE_TAG, SUMMARY_METRICS, assistant_config

    settings = settings or get_settings()
    summary: dict[str, Any] = {"dag_id": config.dag_id, "assistant": config.assistant, "prompt": None,
                               "champion_prompt_version": None, "runs": []}
    if not _mlflow_store_exists(settings):
        return summary
    assistant = assistant_config(config)
    client = tracking.client(settings)
    summary["prompt"] = assistant.prompt.name
    summary["champion_prompt_version"] = alias_version(client, "prompt", assistant.prompt.name, CHAMPION)
    experiment = client.get_experiment_by_name(assistant.experiment_name)
    if experiment is None:
        return summary
    runs = client.search_runs([experiment.experiment_id], f"tags.`loopline.llm_eval` = '{config.dag_id}'",
                              order_by=["attributes.start_time DESC"], max_results=recent)
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        summary["runs"].append({
            "run_id": run.info.run_id, "started": _millis(run.info.start_time),
            "role": tags.get(ROLE_TAG, "champion"), "candidate": tags.get("loopline.candidate"),
            "prompt_version": tags.get("loopline.prompt_version"), "index_version": tags.get("loopline.index_version"),
            "golden_digest": (tags.get("loopline.golden_digest") or "")[:12],
            "metrics": {name: round(float(metrics[SUMMARY_METRICS[name]]), 4) for name in EVALUATION_METRICS
                        if SUMMARY_METRICS[name] in metrics},
            "decision": tags.get(DECISION_TAG), "reason": tags.get(REASON_TAG),
            "report": report_link(tags.get("loopline.llm_eval.report"), settings)})
    return summary


# --- the whole page -----------------------------------------------------------------------------------------

def _section(errors: list[str], what: str, call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # one broken store must not take the page down: say what failed instead
        log.warning("Loopline page: %s failed", what, exc_info=True)
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        errors.append(f"{what}: {type(exc).__name__}: {first_line}")
        return None


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float as text: a JSON response refuses NaN and infinities."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def gather(settings: LooplineSettings | None = None, *, config_dir: Path = CONFIG_DIR,
           allowed_dag_ids: set[str] | None = None, session=None,
           environ: Mapping[str, str] | None = None, today: date | None = None) -> dict[str, Any]:
    """Everything the page shows to a viewer, JSON-ready and scrubbed of secrets.

    Args:
        allowed_dag_ids: the DAGs the viewer may read (None: all). Each use case keeps only the pipelines of
            these DAGs: their DAG chips, models, drift checks, index versions, assistants and runs, and a report
            link only when the viewer may read a DAG that writes it; a use case with none is left out. Configs
            that do not load are listed only to a viewer who may read every DAG of the configs that do.
        session: a SQLAlchemy session of Airflow's metadata database (the api-server's), or None to open one.
        today: the last UTC day of the assistants' accounting (default: today).
    """
    settings = settings or get_settings()
    today = today or datetime.now(UTC).date()
    all_cases, config_errors = use_cases(config_dir)

    def readable(dag_id: str) -> bool:
        return allowed_dag_ids is None or dag_id in allowed_dag_ids

    # A broken config has no DAG in Airflow's database, so no auth manager can grant it: its error (which names
    # the file and its fields) goes only to those who may read every DAG of the configs that load.
    sees_all = all(readable(d) for case in all_cases for d in case.dag_ids)
    cases = [UseCase(case.name, [c for c in case.configs if readable(c.dag_id)]) for case in all_cases]
    page: dict[str, Any] = {
        "data_home": str(settings.data_home),
        "mlflow": redact_uri(settings.mlflow_uri),
        "errors": list(config_errors) if sees_all else [],
        "use_cases": [],
    }

    @functools.cache
    def lineage_runs() -> list:  # the events file is read once per page, when a champion needs it
        from pipelines.lineage.graph import read_runs

        return read_runs(settings)

    def linkable(report: str | None) -> str | None:  # no link to a report the viewer would be refused
        return report if report and any(readable(d) for d in report_owners(report, all_cases)) else None

    for case in cases:
        if not case.configs:
            continue
        errors: list[str] = []
        entry: dict[str, Any] = {"name": case.name, "dags": [], "models": [], "drift": [], "indexes": [],
                                 "assistants": [], "evaluations": [], "runs": [], "errors": errors}
        for config in case.configs:
            entry["dags"].append({"dag_id": config.dag_id, "template": config.template,
                                  "description": config.description})
        for config in case.of("training") + case.of("lora_tune"):
            summary = _section(errors, f"model {config.model_name}", model_summary, config.model_name,
                               config.template, settings)
            if summary:
                summary["dag_id"] = config.dag_id
                if summary["champion"]:
                    summary["lineage"] = _section(
                        errors, f"lineage of {config.model_name}", lineage_summary,
                        uris.model_version(config.model_name, summary["champion"]["version"]), lineage_runs())
                entry["models"].append(summary)
        for config in case.of("drift_check"):
            verdicts = _section(errors, f"drift history of {config.dag_id}", drift_verdicts, config.instance,
                                settings) or []
            for verdict in verdicts:
                verdict["report"] = linkable(verdict.get("report"))
            # The share the chart draws its line at: columns drifting (tabular), chunks changed (rag).
            threshold = config.tabular.drift_share if config.kind == "tabular" else config.rag.corpus_change_share
            entry["drift"].append({"dag_id": config.dag_id, "kind": config.kind, "checks": verdicts,
                                   "threshold": threshold})
        for config in case.of("rag_index"):
            versions = _section(errors, f"index versions of {config.dag_id}", index_versions, config, settings)
            live = next((v["version"] for v in versions or [] if v["live"]), None)
            entry["indexes"].append({
                "dag_id": config.dag_id, "backend": config.index.backend, "versions": versions or [],
                "lineage": live and _section(errors, f"lineage of {config.dag_id}", lineage_summary,
                                             uris.index_version(config.instance, live), lineage_runs())})
        for config in case.of("assistant"):
            assistant = assistant_summary(config, settings, errors, today=today)
            served = _section(errors, f"prompt of {config.dag_id}", prompt_version, config, settings)
            assistant["prompt_lineage"] = served and _section(
                errors, f"lineage of prompt {config.prompt.name}", lineage_summary,
                uris.prompt_version(config.prompt.name, served), lineage_runs())
            entry["assistants"].append(assistant)
        for config in case.of("llm_eval"):
            evaluations = _section(errors, f"evaluations of {config.dag_id}", evaluation_summary, config, settings)
            if evaluations:
                for run in evaluations["runs"]:
                    run["report"] = linkable(run["report"])
                entry["evaluations"].append(evaluations)
        for lineage in ([m.get("lineage") for m in entry["models"]] + [i["lineage"] for i in entry["indexes"]]
                        + [a.get("prompt_lineage") for a in entry["assistants"]]):
            for step in (lineage or {}).get("steps", []):
                if not readable(step["dag_id"]):  # the run exists, but this viewer may not open it
                    step["dag_run_id"] = None
        entry["runs"] = _section(errors, "asset-triggered runs", asset_triggered_runs, case.dag_ids,
                                 session=session, settings=settings) or []
        for run in entry["runs"]:
            for event in run["events"]:
                event["report"] = linkable(event["report"])
        page["use_cases"].append(entry)
    return json_ready(scrub(page, secrets_of(settings, environ)))
