"""The lineage graph, read back from the OpenLineage events: which task run wrote a dataset, from which inputs.

:func:`lineage_of` walks back from a dataset (a champion model version, an index version, an adapter, a prompt)
through the runs that wrote each input to the datasets nobody wrote: the raw landing partitions and corpus files.
Only COMPLETE events count (a failed try's outputs were never published), and for a dataset written more than once
the latest write that precedes the reader is the one that made it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipelines.core.settings import LooplineSettings, get_settings

log = logging.getLogger(__name__)


def events_file(settings: LooplineSettings | None = None) -> Path:
    """Where the file transport appends OpenLineage events, one JSON document per line."""
    return (settings or get_settings()).path("lineage", "openlineage.jsonl")


@dataclass(frozen=True)
class RunWrite:
    """One COMPLETE task run: its job (``dag_id.task_id``), Airflow ids, time, inputs and outputs (URIs)."""

    job: str
    run_id: str
    dag_id: str
    dag_run_id: str
    at: datetime
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class LineageNode:
    """A dataset and how it was made: the run that wrote it (None: a raw input) and its inputs' nodes."""

    uri: str
    made_by: RunWrite | None = None
    inputs: list[LineageNode] = field(default_factory=list)

    def walk(self) -> Iterator[LineageNode]:
        yield self
        for node in self.inputs:
            yield from node.walk()

    def uris(self) -> set[str]:
        """Every dataset on the way back, and everything the runs on the way wrote beside it (a ``dbt build``
        writes the staging models the mart is made of in the same run)."""
        return {node.uri for node in self.walk()} | {uri for run in self.runs() for uri in run.outputs}

    def runs(self) -> list[RunWrite]:
        """The task runs on the way back, each once, newest first."""
        found = {node.made_by.run_id: node.made_by for node in self.walk() if node.made_by is not None}
        return sorted(found.values(), key=lambda run: run.at, reverse=True)

    def flow(self) -> dict:
        """The lineage folded to kinds of data and jobs, for a picture: ``{"nodes": [{"id", "label", "kind",
        "count", "depth"}], "edges": [[from, to], …]}``; data nodes are the kinds of dataset (``dbt``, ``feast``,
        raw ``file`` …), job nodes the tasks (``dag.task``), ``count`` how many datasets or runs each stands for,
        ``depth`` the column from the raw inputs (0) to the version itself."""
        written = {uri for run in self.runs() for uri in run.outputs}
        members: dict[str, set[str]] = {}
        edges: set[tuple[str, str]] = set()

        def kind(uri: str) -> str:
            scheme = uri.split("://", 1)[0]
            return f"data:{scheme}" if scheme != "file" else ("data:file" if uri in written else "data:raw file")

        for run in self.runs():
            job = f"job:{run.job}"
            members.setdefault(job, set()).add(run.run_id)
            for uri in run.inputs:
                members.setdefault(kind(uri), set()).add(uri)
                edges.add((kind(uri), job))
            for uri in run.outputs:
                members.setdefault(kind(uri), set()).add(uri)
                edges.add((job, kind(uri)))
        depth: dict[str, int] = {}

        def level(node: str, seen: frozenset[str] = frozenset()) -> int:
            if node not in depth:
                parents = [a for a, b in edges if b == node and a not in seen]
                depth[node] = 1 + max((level(p, seen | {node}) for p in parents), default=-1)
            return depth[node]

        nodes = [{"id": node, "label": node.split(":", 1)[1], "kind": node.split(":", 1)[0],
                  "count": len(found), "depth": level(node)} for node, found in sorted(members.items())]
        return {"nodes": nodes, "edges": sorted([a, b] for a, b in edges)}

    def to_json(self) -> dict:
        out: dict = {"uri": self.uri}
        if self.made_by is not None:
            out["made_by"] = {"job": self.made_by.job, "dag_run_id": self.made_by.dag_run_id,
                              "at": self.made_by.at.isoformat()}
            out["inputs"] = [node.to_json() for node in self.inputs]
        return out


def uri_of(dataset: dict) -> str:
    """The URI of an OpenLineage dataset (``namespace`` + ``name``, as :func:`pipelines.lineage.extractor.dataset`
    split it)."""
    namespace, name = dataset["namespace"], dataset["name"]
    return f"{namespace}{name}" if namespace.endswith("://") or name.startswith("/") else f"{namespace}/{name}"


def read_runs(settings: LooplineSettings | None = None, path: Path | None = None) -> list[RunWrite]:
    """Every COMPLETE task-run event that declared inputs or outputs, oldest first."""
    path = path or events_file(settings)
    if not path.exists():
        return []
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a killed writer: the rest of the file is still good
            log.warning("%s line %d is not JSON; skipped", path, number)
            continue
        if event.get("eventType") != "COMPLETE" or not (event.get("inputs") or event.get("outputs")):
            continue
        facets = event.get("run", {}).get("facets", {})
        airflow = facets.get("airflow", {})
        dag_run = airflow.get("dagRun", {})
        runs.append(RunWrite(
            job=event["job"]["name"], run_id=event["run"]["runId"],
            dag_id=dag_run.get("dag_id") or event["job"]["name"].split(".", 1)[0],
            dag_run_id=dag_run.get("run_id", ""), at=datetime.fromisoformat(event["eventTime"]),
            inputs=tuple(uri_of(d) for d in event.get("inputs") or []),
            outputs=tuple(uri_of(d) for d in event.get("outputs") or [])))
    return sorted(runs, key=lambda run: run.at)


def lineage_of(uri: str, runs: list[RunWrite] | None = None, settings: LooplineSettings | None = None,
               max_depth: int = 25) -> LineageNode:
    """The lineage tree of dataset ``uri``: who wrote it from what, back to the datasets nobody wrote."""
    runs = read_runs(settings) if runs is None else runs
    writers: dict[str, list[RunWrite]] = {}
    for run in runs:
        for output in run.outputs:
            writers.setdefault(output, []).append(run)

    def build(target: str, before: datetime | None, depth: int, seen: frozenset[str]) -> LineageNode:
        candidates = [run for run in writers.get(target, []) if before is None or run.at <= before]
        if not candidates or depth >= max_depth or target in seen:
            return LineageNode(target)
        writer = candidates[-1]
        return LineageNode(target, writer, [build(source, writer.at, depth + 1, seen | {target})
                                            for source in writer.inputs])

    return build(uri, None, 0, frozenset())
