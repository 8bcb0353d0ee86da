"""Lineage: what each task read and wrote, as OpenLineage run events emitted by Airflow's OpenLineage provider.

A step declares its inputs and outputs with :func:`declare` (dataset URIs built by :mod:`pipelines.lineage.uris`);
the provider's listener turns them into the task's OpenLineage COMPLETE event through
:class:`pipelines.lineage.extractor.LooplineTaskExtractor`, and the transport writes it: a file under the data home
by default (``$LOOPLINE_HOME/lineage/openlineage.jsonl``), an HTTP endpoint such as Marquez when
``LOOPLINE_OPENLINEAGE_URL`` is set. :mod:`pipelines.lineage.graph` walks the events back from a champion to the
raw partitions and corpus files that made it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)


# What the running task declared, by task instance: the extractor pops its own entry when the task completes
# (``dag.test()`` runs every task in one process, so a process-wide collector would mix tasks).
_DECLARED: dict[tuple[str, str, str, int], tuple[dict[str, None], dict[str, None]]] = {}


def task_key(ti) -> tuple[str, str, str, int]:
    map_index = getattr(ti, "map_index", None)
    return ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else map_index


def declare(inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> None:
    """Record dataset URIs the running task read (``inputs``) and wrote (``outputs``); call it as often as needed.

    Outside an Airflow task it does nothing: the steps run the same from a shell or a test. A process that has not
    imported Airflow is not running a task, and is not made to import it here (seconds, and Airflow's logging
    set-up, for nothing).
    """
    if "airflow.sdk" not in sys.modules:
        return
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
    except Exception:  # no Airflow, or not inside a running task
        return
    read, wrote = _DECLARED.setdefault(task_key(ti), ({}, {}))
    read.update(dict.fromkeys(inputs))
    wrote.update(dict.fromkeys(outputs))


def declared(ti, *, pop: bool = True) -> tuple[list[str], list[str]]:
    """The inputs and outputs task instance ``ti`` declared (the extractor pops them)."""
    read, wrote = (_DECLARED.pop if pop else _DECLARED.get)(task_key(ti), ({}, {}))
    return list(read), list(wrote)
