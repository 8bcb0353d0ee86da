"""Named points where the fault-injection suite kills a step (``tests/faults/``, docs/reliability.md).

A step calls :func:`crash_point` between two of its effects (``"quarantine:after-move"``,
``"materialize:before-ledger"``, …). Nothing happens unless the environment variable
``LOOPLINE_FAULT_CRASH_AT`` names that point, which only the tests set in a child process: the process then
exits at once with ``os._exit`` (no ``finally``, no flush), as a worker killed by the kernel would.
"""

from __future__ import annotations

import logging
import os

CRASH_AT_ENV = "LOOPLINE_FAULT_CRASH_AT"
CRASH_EXIT_CODE = 137  # what a SIGKILLed worker reports


def crash_point(name: str) -> None:
    """Exit the process immediately when ``LOOPLINE_FAULT_CRASH_AT`` equals ``name``; otherwise do nothing."""
    if os.environ.get(CRASH_AT_ENV) == name:
        logging.getLogger(__name__).warning("Fault injection: dying at %s", name)
        os._exit(CRASH_EXIT_CODE)
