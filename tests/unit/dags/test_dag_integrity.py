"""DAG integrity: the DAG folder loads clean, every DAG follows the house rules, parse time stays light."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DAGS = REPO / "dags"
HEAVY = ["pandas", "numpy", "pyarrow", "torch", "transformers", "peft", "feast", "mlflow", "evidently",
         "great_expectations", "weaviate", "lancedb", "sentence_transformers", "dbt", "sklearn", "duckdb"]


def load_dagbag(folder: Path):
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(folder), bundle_path=folder)


@pytest.fixture(scope="module")
def dagbag():
    return load_dagbag(DAGS)


def test_dag_folder_loads_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "churn_features" in dagbag.dag_ids


def test_every_config_has_its_dag_file_and_back():
    configs = {p.stem for p in (DAGS / "configs").glob("*.y*ml")}
    dag_files = {p.stem for p in DAGS.glob("*.py")}
    assert configs == dag_files, "each dags/configs/<name>.yaml needs dags/<name>.py (a copy of any other)"


def test_each_dag_file_imports_only_its_own_template_builder():
    """A DAG file imports the builder of its YAML's template and nothing else of the templates."""
    import yaml

    problems = []
    for path in sorted(DAGS.glob("*.py")):
        template = yaml.safe_load((DAGS / "configs" / f"{path.stem}.yaml").read_text())["template"]
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module}
        if imported != {"loopline_templates.common", f"loopline_templates.{template}"}:
            problems.append(f"{path.name} ({template}) imports {sorted(imported)}")
    assert problems == []


@pytest.mark.parametrize("rule", ["doc_md", "tags", "owner", "retries", "timeout", "catchup"])
def test_every_dag_follows_the_house_rules(dagbag, rule):
    for dag_id, dag in dagbag.dags.items():
        if rule == "doc_md":
            assert dag.doc_md and len(dag.doc_md) > 200, dag_id
        elif rule == "tags":
            assert "loopline" in dag.tags, dag_id
        elif rule == "owner":
            assert all(t.owner not in ("", "airflow") for t in dag.tasks), dag_id
        elif rule == "retries":
            assert all(t.retries >= 1 for t in dag.tasks), dag_id
        elif rule == "timeout":  # a hung connection or lock fails the task (and retries) instead of hanging
            assert all(t.execution_timeout == timedelta(minutes=120) for t in dag.tasks), dag_id
        elif rule == "catchup":
            assert dag.catchup is False, dag_id


def test_the_task_timeout_comes_from_the_yaml():
    import yaml

    from pipelines.templates import load_config

    if str(DAGS) not in sys.path:
        sys.path.insert(0, str(DAGS))
    from loopline_templates.training import build_dag

    raw = yaml.safe_load((DAGS / "configs" / "churn_training.yaml").read_text())
    config = type(load_config(DAGS / "configs" / "churn_training.yaml", template="training")).model_validate(
        {**raw, "task_timeout_minutes": 7})
    assert {t.execution_timeout for t in build_dag(config).tasks} == {timedelta(minutes=7)}


def test_every_task_has_a_one_line_docstring(dagbag):
    for dag in dagbag.dags.values():
        for t in dag.tasks:
            doc = t.doc_md or getattr(t, "doc", None) or getattr(getattr(t, "python_callable", None), "__doc__", None)
            assert doc and doc.strip(), f"{dag.dag_id}.{t.task_id} has no docstring"


def test_churn_features_graph_shape(dagbag):
    dag = dagbag.dags["churn_features"]
    chain = ["wait_for_partition", "check_landing", "build_mart", "validate_mart", "publish_features"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert downstream in dag.task_dict[upstream].downstream_task_ids
    materialize = dag.task_dict["materialize_interval"]
    assert materialize.upstream_task_ids == {"publish_features", "apply_definitions"}
    assert [o.name for o in materialize.outlets] == ["churn_features"]
    assert dag.task_dict["wait_for_partition"].mode == "reschedule"
    assert dag.max_active_runs == 1


def test_dag_files_import_nothing_heavy_at_module_level():
    sources = [*DAGS.glob("*.py"), *(DAGS / "loopline_templates").glob("*.py")]
    offenders = []
    for path in sources:
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert offenders == []


def test_parsing_the_dag_folder_loads_no_heavy_library():
    """Parse in a fresh interpreter and look at what got imported, transitively."""
    code = (
        "import sys, json; from pathlib import Path;"
        "from airflow.dag_processing.dagbag import BundleDagBag;"
        f"b = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path=Path({str(DAGS)!r}));"
        f"print(json.dumps({{'dags': sorted(b.dag_ids), 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "churn_features" in result["dags"]
    assert result["heavy"] == []


BAD_CONFIGS = {
    "bad_yaml": (lambda text: "template: features\ninstance: [oops\n",
                 r"configs/bad_yaml.yaml: not valid YAML at line 3"),
    "unknown_template": (lambda text: text.replace("template: features", "template: nope"),
                         r"configs/unknown_template.yaml: template: unknown template 'nope'"),
    "missing_field": (lambda text: text.replace("instance: churn", "instance: other").replace(
        "  mart: customer_daily_features\n", ""), r"configs/missing_field.yaml: dbt.mart: field required"),
    "wrong_type": (lambda text: text.replace("instance: churn", "instance: typed").replace(
        "retries: 1", "retries: many"), r"configs/wrong_type.yaml: retries: Input should be a valid integer"),
}


def test_bad_configs_are_import_errors_of_their_own_file_only(tmp_path, dagbag):
    import re

    folder = tmp_path / "dags"
    shutil.copytree(DAGS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    churn = (folder / "configs" / "churn_features.yaml").read_text()
    stub = (folder / "churn_features.py").read_text()
    for name, (mutate, _) in BAD_CONFIGS.items():
        (folder / "configs" / f"{name}.yaml").write_text(mutate(churn))
        (folder / f"{name}.py").write_text(stub)
    (folder / "configs" / "second_features.yaml").write_text(churn.replace("instance: churn", "instance: second"))
    (folder / "second_features.py").write_text(stub)

    bag = load_dagbag(folder)

    assert sorted(bag.dag_ids) == sorted([*dagbag.dag_ids, "second_features"])
    assert sorted(bag.import_errors) == sorted(f"{name}.py" for name in BAD_CONFIGS)
    for name, (_, expected) in BAD_CONFIGS.items():
        assert re.search(expected, bag.import_errors[f"{name}.py"]), bag.import_errors[f"{name}.py"]
