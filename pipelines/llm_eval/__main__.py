"""``python -m pipelines.llm_eval``: evaluate an assistant on its golden set from a shell, as the DAG does.

```
python -m pipelines.llm_eval run docs [--limit N]        # dags/configs/docs_llm_eval.yaml
python -m pipelines.llm_eval run path/to/x_llm_eval.yaml
python -m pipelines.llm_eval check docs                  # validate the golden set only
```

Prints the MLflow run, the headline metrics, the failed cases and the report's path. An error a person must act
on prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

EXIT_ERROR = 2


def load_eval_config(name: str):
    """An llm_eval config by instance (``docs`` → ``dags/configs/docs_llm_eval.yaml``), name or YAML path."""
    from pipelines.templates import config_path, load_config

    path = config_path(name)
    if not path.exists() and not name.endswith((".yaml", ".yml")):
        path = config_path(f"{name}_llm_eval")
    if not path.exists():
        raise FileNotFoundError(f"no llm_eval config {name!r} (looked for {path})")
    return load_config(path, "llm_eval")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.llm_eval",
                                     description="Evaluate an assistant on its golden set (MLflow evaluation run).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="answer and score the golden set; write the report")
    run.add_argument("config", help="instance (docs), config name (docs_llm_eval) or YAML path")
    run.add_argument("--limit", type=int, default=None, help="ask at most N cases, taken in turn from each category")
    check = sub.add_parser("check", help="validate the golden set and print its digest")
    check.add_argument("config")
    args = parser.parse_args(argv)
    if args.command == "run" and args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")

    from pipelines.assistant.__main__ import _quiet

    _quiet()
    import logging

    logging.getLogger("pipelines").setLevel(logging.INFO)
    from pipelines.core.errors import NotRetryable
    from pipelines.llm_eval import steps
    from pipelines.templates import PipelineConfigError

    try:
        config = load_eval_config(args.config)
        if args.command == "check":
            summary = steps.load_golden_set(config)
            print(f"{summary['path']}: {summary['cases']} cases ({summary['answerable']} answerable, "
                  f"{summary['unanswerable']} unanswerable, {summary['adversarial']} adversarial), sha256 "
                  f"{summary['digest']}")
            return 0
        evaluation = steps.evaluate_answers(config, limit=args.limit)
        report = steps.write_report(config, evaluation)
    except (NotRetryable, PipelineConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"Evaluation run {evaluation['run_id']} (experiment {evaluation['experiment']}): {evaluation['cases']} "
          f"cases · prompt v{evaluation['prompt_version']} · index {evaluation['index_version']} · "
          f"{evaluation['model']}")
    for name, value in evaluation["metrics"].items():
        print(f"  {name:<24} {'–' if value is None else round(value, 3)}")
    print(f"Failed a check: {', '.join(evaluation['failed_cases']) or 'none'}")
    print(f"Report: {report['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
