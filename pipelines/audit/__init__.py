"""Governance: audit records of every promotion, rejection, rollback, approval and drift trigger, and the export
an auditor reads (docs/governance.md)."""
