"""Template ``features``: landing partition → dbt → Great Expectations → Feast, one day per run."""

from __future__ import annotations

from airflow.sdk import DAG, CronDataIntervalTimetable, dag, task

from loopline_templates.common import dag_arguments, fail_without_retry, start_date_guard
from pipelines.features.config import FeaturesConfig


def _doc(config: FeaturesConfig) -> str:
    return f"""\
# {config.dag_id}

{config.description or "Daily features for the " + config.instance + " use case."}

Each run handles one day, the run's data interval (`ds` = its start, UTC):

1. **wait_for_partition**: waits (mode `{config.sensor.mode}`, every {config.sensor.poke_interval_seconds} s, up to
   {config.sensor.timeout_hours} h) for `{config.landing.path}/{config.landing.partition}` to be complete.
2. **check_landing**: every raw file exists, reads as {config.landing.format} and has the contract's columns and types.
3. **build_mart**: `dbt build` of `{config.dbt.project}` for the day (staging → `{config.dbt.mart}`, dbt tests).
4. **validate_mart**: one row per entity per day (`{', '.join(config.feast.join_keys)}`, `ds`), then the Great
   Expectations suite `{config.validation.suite}` on the day's mart rows.
5. **publish_features**: the validated day is written where Feast's offline source reads it.
6. **apply_definitions**: `feast apply` of `{config.feast.repo}`, only when the definitions changed.
7. **materialize_interval**: exactly the day goes online (project `{config.feast.project}`), then the Asset
   `{config.features_asset.name}` is emitted for DAGs scheduled on it.

A bad partition fails steps 2–4 with a readable reason and is moved to the quarantine folder under the
data home (never deleted: each attempt keeps its copy); nothing downstream runs and the online store keeps
its values. A fault of the infrastructure (a lock, a dropped connection, a full disk, an I/O error) is not
bad data: the task retries and nothing is quarantined. Writers hold the instance's lock, materialization
the Feast project's. Re-running a day changes nothing.

Config: `dags/configs/{config.instance}_{config.template}.yaml`.
"""


def build_dag(config: FeaturesConfig) -> DAG:
    """Build the DAG ``{instance}_features`` from its config."""

    @dag(
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC"),
        max_active_runs=1,  # one writer per DuckDB warehouse and online store
        doc_md=_doc(config),
        **dag_arguments(config),
    )
    def features_pipeline() -> None:
        @task.sensor(
            poke_interval=config.sensor.poke_interval_seconds,
            timeout=config.sensor.timeout_hours * 3600,
            mode=config.sensor.mode,
        )
        def wait_for_partition(data_interval_start=None) -> bool:
            """Wait until the day's landing partition is complete."""
            from pipelines.features import steps
            return steps.partition_ready(config, data_interval_start.date())

        @task
        def check_landing(data_interval_start=None) -> dict:
            """Check the day's raw files against the contract in the YAML."""
            from pipelines.features import steps
            with fail_without_retry():
                return steps.check_landing(config, data_interval_start.date())

        @task
        def build_mart(data_interval_start=None) -> dict:
            """dbt build (staging → marts, with tests) for the day."""
            from pipelines.features import steps
            with fail_without_retry():
                return steps.build_mart(config, data_interval_start.date())

        @task
        def validate_mart(data_interval_start=None) -> dict:
            """One row per entity per day, then Great Expectations, on the day's mart rows."""
            from pipelines.features import steps
            with fail_without_retry():
                return steps.validate_mart(config, data_interval_start.date())

        @task
        def publish_features(data_interval_start=None) -> dict:
            """Write the validated day where Feast's offline source reads it."""
            from pipelines.features import steps
            return steps.publish_features(config, data_interval_start.date())

        @task
        def apply_definitions() -> dict:
            """feast apply, only when the definitions changed."""
            from pipelines.features import steps
            return steps.apply_definitions(config)

        @task(outlets=[config.features_asset.asset()])
        def materialize_interval(published: dict, data_interval_start=None) -> dict:
            """Materialize exactly the day's interval into the online store."""
            from pipelines.features import steps
            return steps.materialize_day(config, data_interval_start.date(), published["rows"])

        published = publish_features()
        (
            wait_for_partition()
            >> check_landing()
            >> build_mart()
            >> validate_mart()
            >> published
        )
        [published, apply_definitions()] >> materialize_interval(published)
        start_date_guard(config)  # a leaf of its own (see its docstring)

    return features_pipeline()
