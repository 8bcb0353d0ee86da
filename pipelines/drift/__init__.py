"""Drift checks (Evidently) that close the loop: a drifted model or index gets an Asset event that starts
its retraining or re-indexing. ``tabular`` and ``rag`` measure, ``policy`` decides (pure functions),
``history`` remembers checks and emissions under the data home, ``steps`` are the DAG's tasks.
"""
