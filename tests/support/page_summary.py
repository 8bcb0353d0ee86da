"""Reading the Loopline page's summary JSON in tests."""

from __future__ import annotations


def dag_ids_in(node) -> set[str]:
    """Every ``dag_id`` anywhere in the page's data (DAG chips, models, drift checks, indexes, runs); ``ask``
    only says whether the viewer may ask the assistant (checked on its own)."""
    if isinstance(node, dict):
        found = {node["dag_id"]} if isinstance(node.get("dag_id"), str) else set()
        return found.union(*(dag_ids_in(value) for key, value in node.items() if key != "ask"))
    if isinstance(node, list):
        return set().union(*(dag_ids_in(value) for value in node))
    return set()
