"""Features: landing partitions → dbt (DuckDB or Postgres) → Great Expectations → Feast, one day per run.

``config`` is the ``features`` template's model, ``steps`` holds one function per task; ``landing`` checks and
quarantines raw partitions, ``dbt`` runs the dbt project, ``warehouse`` reads and writes mart days on DuckDB or
Postgres, ``feast_store`` publishes, applies and materializes through Feast; ``entity`` knows the entity
key's types (int64 or string, one or several join keys) and checks the mart's grain, one row per entity per day.
"""
