"""Run a container healthcheck under the environment its Loopline component runs with.

A Loopline container starts as ``python -m pipelines.core.production <component>``, which computes Airflow's
configuration (metadata database, Celery broker, hostname callable, shared secrets) from the
``LOOPLINE_*`` settings and then execs the real command. Docker starts a healthcheck as a separate process
with the container's plain environment, so ``airflow jobs check`` or ``celery inspect ping`` alone would
look at the wrong database or broker. This wrapper gives the check the same environment and execs it::

    python docker/healthcheck.py airflow jobs check --job-type TriggererJob --local
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python docker/healthcheck.py COMMAND [ARG...]")
    from pipelines.core.production import production_environment

    env = {**os.environ, **production_environment()}
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
