"""What ``make demo`` runs: the simulator that lands data, and one script per domain that drives and prints it.

Nothing in the library imports this package; ``python -m pipelines.demo`` runs :func:`pipelines.demo.run.main`.
"""
