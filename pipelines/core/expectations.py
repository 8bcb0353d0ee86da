"""Data validation with Great Expectations 1.x.

A batch (one day of a mart, as a pandas DataFrame) is checked against an expectation suite kept
as JSON in the repo, e.g. ``dags/expectations/customer_daily_features.json``. The result comes
back as a small, JSON-serialisable :class:`ValidationReport` whose lines a person can read in the
task log, and :func:`raise_for_failures` turns a failed report into a :class:`DataValidationError`
that says what was wrong and where the batch was quarantined.

Great Expectations and pandas are imported inside the functions that need them, so importing this
module (from a DAG file, say) costs nothing.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

__all__ = [
    "DataValidationError",
    "ExpectationFailure",
    "ValidationReport",
    "load_suite",
    "raise_for_failures",
    "validate_dataframe",
]

# Values of an offending column quoted in a summary line; GX's SUMMARY result keeps up to 20.
_MAX_QUOTED_VALUES = 5

_DATASOURCE_NAME = "loopline_validation"
_ASSET_NAME = "dataframes"
_BATCH_DEFINITION_NAME = "whole_dataframe"


@dataclass(frozen=True)
class ExpectationFailure:
    """One expectation that a batch did not meet.

    Attributes:
        expectation_type: The GX expectation type, e.g. ``expect_column_values_to_not_be_null``.
        column: The column it checks; several columns are joined with ``", "``; ``None`` for a
            table-level expectation.
        summary: One human-readable line, e.g.
            ``monthly_charges has 150 nulls out of 500 rows (allowed 0)``.
    """

    expectation_type: str
    column: str | None
    summary: str

    def to_dict(self) -> dict[str, str | None]:
        """Returns the failure as a JSON-serialisable dict."""
        return {
            "expectation_type": self.expectation_type,
            "column": self.column,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one batch against one suite.

    Attributes:
        batch_name: What was validated, e.g. ``churn 2026-11-03``.
        success: True when every expectation was met.
        evaluated: How many expectations were evaluated.
        failures: The expectations that were not met, in suite order.
    """

    batch_name: str
    success: bool
    evaluated: int
    failures: tuple[ExpectationFailure, ...]

    def summary(self) -> str:
        """Returns one line per failed expectation.

        Returns:
            The failures' summaries joined by newlines, or a single line saying the batch passed
            when nothing failed.
        """
        if not self.failures:
            return f"batch {self.batch_name} passed all {self.evaluated} expectations"
        return "\n".join(failure.summary for failure in self.failures)

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as a JSON-serialisable dict, to save beside quarantined data."""
        return {
            "batch_name": self.batch_name,
            "success": self.success,
            "evaluated": self.evaluated,
            "failed": len(self.failures),
            "failures": [failure.to_dict() for failure in self.failures],
        }


class DataValidationError(Exception):
    """A batch failed its expectation suite.

    Attributes:
        report: The full validation report.
        quarantined_to: Where the failed batch was moved, if it was.
    """

    def __init__(self, report: ValidationReport, *, quarantined_to: Path | None = None) -> None:
        self.report = report
        self.quarantined_to = quarantined_to
        lines = "; ".join(failure.summary for failure in report.failures)
        message = (
            f"batch {report.batch_name} failed {len(report.failures)} of {report.evaluated} "
            f"expectations: {lines}"
        )
        if quarantined_to is not None:
            message += f"; quarantined to {quarantined_to}"
        super().__init__(message)


def raise_for_failures(report: ValidationReport, *, quarantined_to: Path | None = None) -> None:
    """Raises when a report has failures; does nothing when the batch passed.

    Args:
        report: The report from :func:`validate_dataframe`.
        quarantined_to: Where the failed batch was moved; named at the end of the message so the
            person reading it knows where to look.

    Raises:
        DataValidationError: If ``report.success`` is false. Its message reads
            ``batch churn 2026-11-03 failed 2 of 26 expectations: monthly_charges has 150 nulls
            out of 500 rows (allowed 0); ...; quarantined to <path>``.
    """
    if not report.success:
        raise DataValidationError(report, quarantined_to=quarantined_to)


def load_suite(suite_path: Path | dict[str, Any]) -> ExpectationSuite:
    """Loads an expectation suite from its JSON file.

    Unlike ``ExpectationSuite(**json)``, which logs and silently drops an expectation it cannot
    build, this raises, so a typo in the suite cannot quietly turn a check off.

    Args:
        suite_path: A GX 1.x suite JSON file: ``name``, ``expectations`` (each with ``type`` and
            ``kwargs``), optional ``meta`` and ``notes``.

    Returns:
        The suite, not attached to any data context.

    Raises:
        ValueError: If the file is not a suite or one of its expectations is not valid.
    """
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    if isinstance(suite_path, dict):  # a suite built in code, e.g. from a pipeline's config
        raw, suite_path = suite_path, f"suite {suite_path.get('name')!r}"
    else:
        raw = json.loads(Path(suite_path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not raw.get("name") or "expectations" not in raw:
        raise ValueError(
            f"{suite_path} is not a GX expectation suite: expected a JSON object with "
            "'name' and 'expectations'"
        )
    expectations = []
    for index, entry in enumerate(raw["expectations"]):
        # Suites exported from a GX context carry ids; a suite refuses expectations that have one.
        config = {key: value for key, value in entry.items() if key != "id"}
        try:
            expectations.append(ExpectationConfiguration(**config).to_domain_obj())
        except Exception as exc:  # GX raises its own errors, pydantic's and TypeError here
            raise ValueError(
                f"{suite_path}: expectation #{index} ({entry.get('type')!r}) is not valid: {exc}; "
                "fix the suite JSON"
            ) from exc
    return ExpectationSuite(
        name=raw["name"],
        expectations=expectations,
        meta=raw.get("meta"),
        notes=raw.get("notes"),
    )


class _PandasValidator:
    """One ephemeral GX context with one pandas dataframe asset, reused for every call.

    Building the context is cheap but each datasource and asset added to it stays for the life of
    the process, so one asset is reused and each DataFrame arrives as a batch parameter. The lock
    serialises validations because the datasource's execution engine keeps the loaded batch as
    state.
    """

    _instance: _PandasValidator | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        context = gx.get_context(project_config=config, mode="ephemeral")
        asset = context.data_sources.add_pandas(_DATASOURCE_NAME).add_dataframe_asset(_ASSET_NAME)
        self._batch_definition: BatchDefinition = asset.add_batch_definition_whole_dataframe(
            _BATCH_DEFINITION_NAME
        )
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> _PandasValidator:
        """Returns the process-wide instance, building it on first use."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def validate(
        self, df: pd.DataFrame, suite: ExpectationSuite
    ) -> list[ExpectationValidationResult]:
        """Runs the suite on the DataFrame and returns one result per expectation."""
        with self._lock:
            batch = self._batch_definition.get_batch(batch_parameters={"dataframe": df})
            result = batch.validate(suite, result_format="SUMMARY")
        return list(result.results)


def validate_dataframe(
    df: pd.DataFrame, suite_path: Path | dict[str, Any], *, batch_name: str
) -> ValidationReport:
    """Validates a DataFrame against an expectation suite kept as JSON.

    Runs in an ephemeral GX context (no files, no GX progress bars, no usage statistics) that is
    built on the first call and reused afterwards, so calling this many times in one process is
    safe and cheap.

    Args:
        df: The batch to check; it is not modified.
        suite_path: The suite's JSON file, e.g. ``dags/expectations/customer_daily_features.json``,
            or the same content as a dict (for suites built from a config).
        batch_name: How the batch is named in the report and error, e.g. ``churn 2026-11-03``.

    Returns:
        The report; ``failures`` follow the order of the suite file.

    Raises:
        ValueError: If the suite file is not a valid suite.
    """
    suite = load_suite(suite_path)
    results = _PandasValidator.shared().validate(df, suite)

    # GX returns results in its metric-graph order, not suite order; put them back.
    order = {
        _config_key(exp.configuration.type, exp.configuration.kwargs): index
        for index, exp in enumerate(suite.expectations)
    }
    results.sort(key=lambda r: order.get(_result_key(r), len(order)))
    present = {str(column) for column in df.columns}
    failures = tuple(_describe_failure(r, present) for r in results if not r.success)
    return ValidationReport(
        batch_name=batch_name,
        success=not failures,
        evaluated=len(results),
        failures=failures,
    )


def _result_key(result: ExpectationValidationResult) -> str:
    config = result.expectation_config
    return "" if config is None else _config_key(config.type, config.kwargs)


def _config_key(expectation_type: str, kwargs: dict[str, Any]) -> str:
    # GX adds batch_id to the kwargs of a result's configuration.
    relevant = {key: value for key, value in kwargs.items() if key != "batch_id"}
    return expectation_type + json.dumps(relevant, sort_keys=True, default=str)


def _describe_failure(
    result: ExpectationValidationResult, present_columns: set[str]
) -> ExpectationFailure:
    """Turns one failed GX result into a line a person can act on."""
    config = result.expectation_config
    if config is None:  # a suite's results always carry their configuration
        return ExpectationFailure("unknown", None, f"an expectation failed: {result.result}")
    expectation_type = config.type
    kwargs = dict(config.kwargs)
    columns: list[str] = []
    if kwargs.get("column") is not None:
        columns = [str(kwargs["column"])]
    elif kwargs.get("column_list"):
        columns = [str(c) for c in kwargs["column_list"]]
    label = ", ".join(columns) if columns else None

    exception = _exception_message(result)
    if exception is not None:
        missing = [c for c in columns if c not in present_columns]
        if missing:
            summary = (
                f"{_quote_columns(missing)} missing, so {expectation_type} "
                f"on {label} could not run"
            )
        else:
            summary = f"{label or 'table'}: {expectation_type} could not run: {exception}"
        return ExpectationFailure(expectation_type, label, summary)

    details: dict[str, Any] = dict(result.result or {})
    describe = _DESCRIBERS.get(expectation_type, _describe_generic)
    return ExpectationFailure(expectation_type, label, describe(label, kwargs, details))


def _exception_message(result: ExpectationValidationResult) -> str | None:
    # A result's exception_info is either {"raised_exception": bool, "exception_message": ...}
    # or, when a metric failed, a dict of those keyed by metric id.
    info = result.exception_info or {}
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("raised_exception")).lower() == "true":
            message = str(entry.get("exception_message") or "unknown error")
            return message.removeprefix("Error: ")
    return None


def _quote_columns(columns: list[str]) -> str:
    if len(columns) == 1:
        return f"column {columns[0]} is"
    return "columns " + ", ".join(columns) + " are"


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _distinct_values(details: dict[str, Any]) -> list[Any]:
    # partial_unexpected_counts is already distinct and most frequent first.
    counts = details.get("partial_unexpected_counts") or []
    values = [entry["value"] for entry in counts]
    if not values:
        for value in details.get("partial_unexpected_list") or []:
            if value not in values:
                values.append(value)
    return values[:_MAX_QUOTED_VALUES]


def _describe_not_null(label: str | None, kwargs: dict[str, Any], details: dict[str, Any]) -> str:
    nulls = details.get("unexpected_count", 0)
    rows = details.get("element_count", 0)
    mostly = kwargs.get("mostly")
    if mostly is None:
        mostly = 1.0
    allowed = math.floor(rows * (1 - mostly) + 1e-9)
    return f"{label} has {_count(nulls, 'null')} out of {_count(rows, 'row')} (allowed {allowed})"


def _describe_in_set(label: str | None, kwargs: dict[str, Any], details: dict[str, Any]) -> str:
    allowed = ", ".join(sorted(str(v) for v in kwargs.get("value_set", [])))
    count = details.get("unexpected_count", 0)
    return (
        f"{label} has {_count(count, 'value')} outside {{{allowed}}}: {_distinct_values(details)}"
    )


def _describe_between(label: str | None, kwargs: dict[str, Any], details: dict[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        bound = f"outside [{_number(low)}, {_number(high)}]"
    elif low is not None:
        bound = f"below {_number(low)}"
    else:
        bound = f"above {_number(high)}"
    count = details.get("unexpected_count", 0)
    return f"{label} has {_count(count, 'value')} {bound}: {_distinct_values(details)}"


def _describe_compound_unique(
    label: str | None, kwargs: dict[str, Any], details: dict[str, Any]
) -> str:
    count = details.get("unexpected_count", 0)
    summary = f"({label}) has {_count(count, 'duplicate row')}"
    examples = details.get("partial_unexpected_list") or []
    if examples and isinstance(examples[0], dict):
        key = ", ".join(f"{column}={value}" for column, value in examples[0].items())
        summary += f", e.g. {key}"
    return summary


def _describe_row_count(label: str | None, kwargs: dict[str, Any], details: dict[str, Any]) -> str:
    rows = details.get("observed_value")
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        expected = f"between {low} and {high}"
    elif low is not None:
        expected = f"at least {low}"
    else:
        expected = f"at most {high}"
    return f"batch has {_count(rows, 'row')} (expected {expected})"


def _describe_column_set(
    label: str | None, kwargs: dict[str, Any], details: dict[str, Any]
) -> str:
    expected = [str(c) for c in kwargs.get("column_set") or []]
    observed = [str(c) for c in details.get("observed_value") or []]
    mismatched = (details.get("details") or {}).get("mismatched") or {}
    missing = mismatched.get("missing", [c for c in expected if c not in observed])
    unexpected = mismatched.get("unexpected", [c for c in observed if c not in expected])
    parts = []
    if missing:
        parts.append(f"missing {sorted(missing)}")
    if unexpected:
        parts.append(f"unexpected {sorted(unexpected)}")
    return "columns do not match the contract: " + ", ".join(parts or ["order or set differs"])


def _describe_generic(label: str | None, kwargs: dict[str, Any], details: dict[str, Any]) -> str:
    subject = label or "table"
    if "unexpected_count" in details:
        return (
            f"{subject} has {_count(details['unexpected_count'], 'unexpected value')} out of "
            f"{_count(details.get('element_count'), 'row')}: {_distinct_values(details)}"
        )
    return f"{subject} failed: observed {details.get('observed_value')!r}"


def _describe_mean(label: str | None, kwargs: dict[str, Any], details: dict[str, Any]) -> str:
    observed = details.get("observed_value")
    shown = _number(round(observed, 4)) if isinstance(observed, (int, float)) else repr(observed)
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    return f"{label} has mean {shown}, expected between {_number(low)} and {_number(high)}"


_DESCRIBERS = {
    "expect_column_mean_to_be_between": _describe_mean,
    "expect_column_values_to_not_be_null": _describe_not_null,
    "expect_column_values_to_be_in_set": _describe_in_set,
    "expect_column_values_to_be_between": _describe_between,
    "expect_compound_columns_to_be_unique": _describe_compound_unique,
    "expect_table_row_count_to_be_between": _describe_row_count,
    "expect_table_columns_to_match_set": _describe_column_set,
}
