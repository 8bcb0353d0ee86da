"""``python -m pipelines.audit``: what was promoted, refused, rolled back, approved and triggered, and why.

```
python -m pipelines.audit export --since 2026-11-01 [--until 2026-12-01] [--out audit/]
python -m pipelines.audit list --since 2026-11-01
python -m pipelines.audit rebuild <record run id>     # a model or index record: do its figures come back?
```

``export`` writes one self-contained HTML page and one JSON file (``audit-<since>.html``/``.json``, by default
under ``$LOOPLINE_HOME/audit/``) and prints their paths and counts. A bad date prints one line on stderr and
exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.audit",
                                     description="Audit records of promotions, rollbacks, approvals, drift triggers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("export", "write the HTML and JSON report of a period"), ("list", "print a line per event")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--since", required=True, help="first day (YYYY-MM-DD, UTC) or ISO time")
        command.add_argument("--until", default=None, help="end, exclusive (default: now)")
        if name == "export":
            command.add_argument("--out", type=Path, default=None, help="folder (default: $LOOPLINE_HOME/audit)")
    again = sub.add_parser("rebuild", help="rebuild a record's model or index and compare its figures")
    again.add_argument("record", help="the record's MLflow run id (list shows them)")
    args = parser.parse_args(argv)
    if args.command == "rebuild":
        return _rebuild(args.record)

    from pipelines.audit.export import describe, export, parse_day
    from pipelines.audit.records import events
    from pipelines.core.settings import get_settings

    try:
        since = parse_day(args.since)
        until = parse_day(args.until) if args.until else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if until is not None and until <= since:
        print(f"error: --until {args.until} is not after --since {args.since}", file=sys.stderr)
        return EXIT_ERROR
    settings = get_settings()
    if args.command == "list":
        for event in events(since, until, settings):
            print(describe(event))
        return 0
    written = export(since, args.out or settings.path("audit"), until, settings)
    print(f"{written.total} events ({', '.join(f'{n} {k}' for k, n in written.counts.items())})")
    print(f"HTML: {written.html}")
    print(f"JSON: {written.json}")
    return 0


def _rebuild(record_run: str) -> int:
    """Exit 0 when the record's figures come back within the tolerance, 1 when not, 2 when it cannot be rebuilt."""
    from pipelines.audit.rebuild import CannotRebuild, find_record, rebuild

    try:
        result = rebuild(find_record(record_run))
    except CannotRebuild as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(result.describe())
    return 0 if result.reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
