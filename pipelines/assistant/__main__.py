"""``python -m pipelines.assistant``: ask a question, record feedback on an answer, seed the prompt.

```
python -m pipelines.assistant ask "How do I roll the index back?" [--json] [--config docs_assistant]
python -m pipelines.assistant feedback TRACE_ID up|down [--comment TEXT]
python -m pipelines.assistant seed-prompt [--config docs_assistant]
```

An error a person must act on prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from typing import Any

EXIT_ERROR = 2


def _quiet() -> None:
    """No model download, no progress bars, no library chatter on the terminal: the answer is the output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("mlflow", "transformers", "sentence_transformers", "lancedb", "alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def load_assistant_config(name: str) -> Any:
    """An assistant config by name (``dags/configs/<name>.yaml``) or YAML path."""
    from pipelines.templates import config_path, load_config

    path = config_path(name)
    if not path.exists():
        raise FileNotFoundError(f"no assistant config {name!r} (looked for {path})")
    return load_config(path, "assistant")


def _print_answer(result) -> None:
    print(result.answer)
    print()
    if result.refused:
        print(f"(declined: {result.refusal_reason})")
    else:
        print("Sources:")
        for source in result.sources:
            heading = f" — {source['heading']}" if source["heading"] else ""
            print(f"  {source['doc_id']}{heading}")
    print()
    print(f"Tokens: {result.tokens_in} in, {result.tokens_out} out · latency {result.latency_ms:,.0f} ms · "
          f"prompt v{result.prompt_version} · index {result.index_version} · model {result.model}"
          + (f" · adapter {result.adapter_version}" if result.adapter_version else ""))
    print(f"Trace: {result.trace_id}  (feedback: python -m pipelines.assistant feedback {result.trace_id} up|down)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.assistant",
                                     description="The docs assistant: ask, give feedback, seed the prompt.")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question from the live docs index")
    ask.add_argument("question")
    ask.add_argument("--json", action="store_true", help="print the answer as one JSON object")
    ask.add_argument("--config", default="docs_assistant", help="assistant config: a name in dags/configs/ or a path")
    feedback = sub.add_parser("feedback", help="thumbs up or down on an answer's trace")
    feedback.add_argument("trace_id")
    feedback.add_argument("thumbs", choices=["up", "down"])
    feedback.add_argument("--comment", default=None)
    seed = sub.add_parser("seed-prompt", help="register the prompt file in MLflow; set the alias if none")
    seed.add_argument("--config", default="docs_assistant")
    args = parser.parse_args(argv)

    _quiet()
    from pipelines.core.errors import NotRetryable
    from pipelines.templates import PipelineConfigError

    try:
        if args.command == "ask":
            from pipelines.assistant.answer import answer

            result = answer(args.question, load_assistant_config(args.config))
            if args.json:
                print(json.dumps(result.to_json(), ensure_ascii=False))
            else:
                _print_answer(result)
        elif args.command == "feedback":
            from pipelines.assistant.feedback import record_feedback

            record_feedback(args.trace_id, args.thumbs == "up", args.comment)
            print(f"Recorded thumbs {args.thumbs} on trace {args.trace_id}")
        else:
            from pipelines.assistant.prompts import seed_prompt

            seeded = seed_prompt(load_assistant_config(args.config))
            print(f"Prompt {seeded['name']}: file is version {seeded['version']} "
                  f"({'registered now' if seeded['registered'] else 'already registered'}); "
                  f"@{seeded['alias']} is version {seeded['alias_version']}"
                  + (" (set now)" if seeded["alias_set"] else ""))
    except (NotRetryable, PipelineConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
