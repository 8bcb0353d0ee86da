"""Start a use case in one command: ``python -m pipelines.scaffold features|training NAME …``.

``features`` reads the first partition of a landing folder and writes the YAML, its DAG file, a dbt project
(profile, landing macro, a staging model per table, a daily mart), a Great Expectations suite and Feast
definitions, all valid and runnable as they are; ``training`` writes a training YAML and its DAG file for a
features instance. Nothing existing is overwritten without ``--force``. The files come from
``pipelines/scaffold/templates/``; docs/adding-a-use-case.md walks through the result.
"""
