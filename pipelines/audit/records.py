"""Audit records: one for every promotion, gate rejection, rollback, approval and drift trigger, kept in MLflow.

Each event is one MLflow run of the experiment ``loopline_audit``: tags an auditor can search by (kind, subject,
version, decision, approver, time) and two artifacts, ``record/record.json`` (the whole record) and
``record/record.html`` (the same, readable in a browser with nothing else). The run is found again by the
event's key, so a retried task rewrites its own record instead of adding a second one.

What a record holds besides the decision (its ``provenance``) is whatever makes the version what it is: the git
commit, the config digest and the config itself, the data window and dataset digests, the feature service, the
corpus digest and embedding model; and its ``evidence``: the evaluation against the previous champion.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipelines.core.settings import REPO_ROOT, LooplineSettings

log = logging.getLogger(__name__)

EXPERIMENT = "loopline_audit"
KIND_TAG = "loopline.audit.kind"
SUBJECT_TAG = "loopline.audit.subject"
VERSION_TAG = "loopline.audit.version"
DECISION_TAG = "loopline.audit.decision"
AT_TAG = "loopline.audit.at"
APPROVER_TAG = "loopline.audit.approved_by"
# On a registered model version: the audit run of its promotion record.
RECORD_TAG = "loopline.promotion_record"
RECORD_FOLDER = "record"

EventKind = Literal["promotion", "rejection", "rollback", "approval", "drift_trigger"]
EVENT_KINDS: tuple[str, ...] = ("promotion", "rejection", "rollback", "approval", "drift_trigger")


@dataclass(frozen=True)
class AuditEvent:
    """One thing an auditor asks about: what changed (or was refused), when, why, on what evidence, by whom.

    Attributes:
        kind: promotion (an alias moved to a version), rejection (a gate or a person said no), rollback,
            approval (a person's answer to an approval request, or its timeout), drift_trigger (an Asset emitted).
        subject: what the event is about, ``<kind> <name>``: ``model churn``, ``prompt docs_answer``,
            ``adapter assistant_adapter``, ``index docs``, ``asset churn_retrain``.
        version: the version promoted, refused or restored (None for a drift trigger).
        decision: promoted, rejected, rolled_back, approved, timed_out, emitted.
        key: what makes the event unique (a retry of the same task writes the same key).
        previous: the champion before (a promotion, a rollback: the version moved from).
        approved_by: the person who answered an approval request (None: no person was asked, or nobody answered).
    """

    kind: EventKind
    subject: str
    version: str | None
    decision: str
    reason: str
    at: datetime
    key: str
    previous: str | None = None
    approved_by: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # dag_id, run_id, MLflow run of the candidate
    record_run: str | None = None  # the audit run that holds it (set when read back)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"audit event kind {self.kind!r} is not one of {', '.join(EVENT_KINDS)}")
        if self.at.tzinfo is None:
            raise ValueError(f"audit event {self.key}: its time {self.at} has no timezone (use UTC)")

    @property
    def title(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"{self.kind.replace('_', ' ')}: {self.subject}{version} ({self.decision})"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        out.pop("record_run")
        return out

    @classmethod
    def from_json(cls, payload: dict[str, Any], record_run: str | None = None) -> AuditEvent:
        fields = {k: v for k, v in payload.items() if k in cls.__dataclass_fields__ and k != "record_run"}
        fields["at"] = datetime.fromisoformat(payload["at"])
        return cls(**fields, record_run=record_run)


def git_commit() -> str:
    """The repository's commit (``unknown`` outside a git checkout: a built image records its own tag instead)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_digest(config: Any) -> str:
    """sha256 of a pipeline config as validated (the resolved values, keys sorted)."""
    return hashlib.sha256(json.dumps(config_snapshot(config), sort_keys=True, default=str).encode()).hexdigest()


def config_snapshot(config: Any) -> dict[str, Any]:
    """The config as plain JSON values (what a rebuild reads back)."""
    return json.loads(config.model_dump_json()) if hasattr(config, "model_dump_json") else dict(config)


def record(event: AuditEvent, settings: LooplineSettings | None = None) -> str:
    """Write ``event`` to the audit experiment (once per key: a retry rewrites it); return its MLflow run id."""
    payload = event.to_json()
    with tempfile.TemporaryDirectory() as folder:
        json_path = Path(folder) / "record.json"
        json_path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        html_path = Path(folder) / "record.html"
        html_path.write_text(render_page(event.title, [event]))
        tags = {KIND_TAG: event.kind, SUBJECT_TAG: event.subject, VERSION_TAG: event.version or "",
                DECISION_TAG: event.decision, AT_TAG: event.at.astimezone(UTC).isoformat(),
                APPROVER_TAG: event.approved_by or "", "mlflow.note.content": event.reason}
        run_id = _log_record(event, tags, json_path, html_path, settings)
    log.info("Audit record %s: %s — %s", run_id, event.title, event.reason)
    return run_id


def _log_record(event: AuditEvent, tags: dict[str, str], json_path: Path, html_path: Path,
                settings: LooplineSettings | None) -> str:
    from pipelines.core import tracking

    run_id = tracking.log_to_run_by_key(EXPERIMENT, event.key, event.title, tags=tags, settings=settings)
    client = tracking.client(settings)
    # Overwrite in place: a retried task's record replaces its first try's, never sits beside it.
    client.log_artifact(run_id, str(json_path), artifact_path=RECORD_FOLDER)
    client.log_artifact(run_id, str(html_path), artifact_path=RECORD_FOLDER)
    return run_id


def tag_model_version(model_name: str, version: str, record_run: str, settings: LooplineSettings | None = None) -> None:
    """Point a registered version at its promotion record (:data:`RECORD_TAG`)."""
    from pipelines.core import tracking

    tracking.client(settings).set_model_version_tag(model_name, str(version), RECORD_TAG, record_run)


def events(since: datetime, until: datetime | None = None, settings: LooplineSettings | None = None,
           kinds: tuple[str, ...] = EVENT_KINDS) -> list[AuditEvent]:
    """Every recorded event with ``since <= at < until``, oldest first."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    from pipelines.core import tracking

    client = tracking.client(settings)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    found: list[AuditEvent] = []
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=500, page_token=token)
        for run in page:
            at = datetime.fromisoformat(run.data.tags.get(AT_TAG, "1970-01-01T00:00:00+00:00"))
            if at < since or (until is not None and at >= until) or run.data.tags.get(KIND_TAG) not in kinds:
                continue
            with tempfile.TemporaryDirectory() as folder:
                path = download_artifacts(run_id=run.info.run_id, artifact_path=f"{RECORD_FOLDER}/record.json",
                                          dst_path=folder, tracking_uri=mlflow.get_tracking_uri())
                found.append(AuditEvent.from_json(json.loads(Path(path).read_text()), record_run=run.info.run_id))
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda e: (e.at, e.key))


# --- HTML: self-contained (no script, no stylesheet or font from elsewhere) ---------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2430;max-width:1200px}
h1{font-size:20px} h2{font-size:16px;margin:28px 0 6px}
table{border-collapse:collapse;width:100%;margin:6px 0 14px}
th,td{border:1px solid #d6dae1;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7;font-weight:600;width:22%} .kind{font-weight:600}
.promotion{color:#1a7f37} .rejection,.rollback{color:#b42318} .approval{color:#6941c6} .drift_trigger{color:#b54708}
code,pre{font:12px ui-monospace,monospace;white-space:pre-wrap;word-break:break-word}
"""


def render_page(title: str, page_events: list[AuditEvent], summary: str = "") -> str:
    """One self-contained HTML page of ``page_events``: a line each, then each in full."""
    rows = "".join(
        f"<tr><td>{_e(ev.at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S'))}</td>"
        f"<td class='kind {ev.kind}'>{_e(ev.kind.replace('_', ' '))}</td><td>{_e(ev.subject)}</td>"
        f"<td>{_e(ev.version or '')}</td><td>{_e(ev.decision)}</td><td>{_e(ev.approved_by or '')}</td>"
        f"<td><a href='#{_anchor(ev)}'>{_e(ev.reason[:160])}</a></td></tr>"
        for ev in page_events)
    details = "".join(_event_section(ev) for ev in page_events)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>"
            + (f"<p>{_e(summary)}</p>" if summary else "")
            + "<table><tr><th>when (UTC)</th><th>kind</th><th>subject</th><th>version</th><th>decision</th>"
            f"<th>approved by</th><th>reason</th></tr>{rows}</table>{details}</body></html>\n")


def _event_section(ev: AuditEvent) -> str:
    facts = {"when": ev.at.isoformat(), "decision": ev.decision, "reason": ev.reason, "previous": ev.previous,
             "approved by": ev.approved_by, "record": ev.record_run, "key": ev.key}
    blocks = "".join(f"<h3>{_e(name)}</h3>{_table(values)}"
                     for name, values in (("evidence", ev.evidence), ("provenance", ev.provenance),
                                          ("source", ev.source)) if values)
    return f"<h2 id='{_anchor(ev)}'>{_e(ev.title)}</h2>{_table(facts)}{blocks}"


def _table(values: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in values.items()
                   if v not in (None, "", {}, []))
    return f"<table>{rows}</table>"


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"<pre>{_e(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"
    return f"<code>{_e(str(value))}</code>" if isinstance(value, str) and len(value) >= 40 else _e(str(value))


def _anchor(ev: AuditEvent) -> str:
    return "ev-" + hashlib.sha1(ev.key.encode()).hexdigest()[:12]


def _e(text: str) -> str:
    return html.escape(text, quote=True)
