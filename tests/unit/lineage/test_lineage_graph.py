"""Reading OpenLineage events back into a lineage: the latest write before the reader, failed and cut events
ignored, and the folded picture's columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.lineage.extractor import dataset
from pipelines.lineage.graph import lineage_of, read_runs, uri_of

pytestmark = pytest.mark.unit


def event(job: str, at: str, inputs: list[str], outputs: list[str], kind: str = "COMPLETE") -> str:
    def shown(uri: str) -> dict:
        d = dataset(uri)
        return {"namespace": d.namespace, "name": d.name}

    return json.dumps({"eventType": kind, "eventTime": at, "job": {"namespace": "loopline", "name": job},
                       "run": {"runId": f"{job}@{at}", "facets": {"airflow": {"dagRun": {
                           "dag_id": job.split(".")[0], "run_id": f"manual__{at}"}}}},
                       "inputs": [shown(u) for u in inputs], "outputs": [shown(u) for u in outputs]})


@pytest.mark.parametrize("uri", ["file:///landing/ds=2026-11-20/events.parquet", "dbt://proj/stg_events/ds=2026-11-20",
                                 "mlflow://registry/models/churn/versions/3", "index://docs/docs_v2"])
def test_an_extracted_dataset_reads_back_as_the_uri_declared(uri):
    d = dataset(uri)
    assert uri_of({"namespace": d.namespace, "name": d.name}) == uri


def test_the_latest_complete_write_before_the_reader_made_it(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        event("f.build", "2026-12-01T01:00:00+00:00", ["file:///raw/a"], ["dbt://p/m/ds=1"]),
        event("f.build", "2026-12-01T02:00:00+00:00", ["file:///raw/b"], ["dbt://p/m/ds=1"]),  # rebuilt: this one
        event("t.train", "2026-12-01T03:00:00+00:00", ["dbt://p/m/ds=1"], ["mlflow://registry/models/m/versions/1"]),
        event("f.build", "2026-12-01T04:00:00+00:00", ["file:///raw/c"], ["dbt://p/m/ds=1"]),  # after: not it
        event("f.build", "2026-12-01T05:00:00+00:00", ["file:///raw/d"], ["dbt://p/m/ds=1"], kind="FAIL"),
        '{"eventType": "COMPLETE", "eventTi',  # a line cut by a killed writer
    ]) + "\n")
    runs = read_runs(path=path)
    assert [r.job for r in runs] == ["f.build", "f.build", "t.train", "f.build"]
    graph = lineage_of("mlflow://registry/models/m/versions/1", runs)
    assert graph.made_by.job == "t.train" and graph.made_by.dag_run_id == "manual__2026-12-01T03:00:00+00:00"
    assert graph.uris() == {"mlflow://registry/models/m/versions/1", "dbt://p/m/ds=1", "file:///raw/b"}
    flow = graph.flow()
    assert {n["id"]: n["depth"] for n in flow["nodes"]} == {
        "data:raw file": 0, "job:f.build": 1, "data:dbt": 2, "job:t.train": 3, "data:mlflow": 4}
    assert ["data:raw file", "job:f.build"] in flow["edges"] and ["job:t.train", "data:mlflow"] in flow["edges"]
    assert lineage_of("index://nothing/v1", runs).made_by is None


def test_no_events_file_means_no_lineage(tmp_path):
    assert read_runs(path=Path(tmp_path / "none.jsonl")) == []
