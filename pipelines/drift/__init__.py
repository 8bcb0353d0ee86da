"""Drift checks (Evidently) that close the loop: a drifted model or index gets an Asset event that starts
its retraining or re-indexing. ``tabular`` and ``rag`` measure and check (one kind each), ``checks`` holds
what both share (window, skip reasons, evidence, report and MLflow run), ``policy`` decides (pure
functions), ``history`` remembers checks and emissions under the data home, ``targets`` names the Asset a
check emits, ``steps`` are the DAG's tasks.
"""
