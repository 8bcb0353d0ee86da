"""Errors by kind: what a retry cannot fix is a :class:`NotRetryable`.

Bad data stays bad on a retry (a quarantined partition, a training set below its checks, a gate that
blocks a version); a fault (a lock, a dropped connection, a killed worker) may pass on the next try. Every
domain error a person must act on derives from :class:`NotRetryable`; the templates turn it into a failure
Airflow does not retry, and let every other exception retry as configured.
"""

from __future__ import annotations


class NotRetryable(Exception):
    """A failure that a retry cannot fix; its message says what is wrong and what to do."""
