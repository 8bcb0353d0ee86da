"""Files written whole or not at all: a reader (another task, the Loopline page, Feast) never sees half a file.

Every file Loopline publishes under the data home goes through :func:`write_atomic`, every published
folder through :func:`publish_folder`. Temporary names are unique per call, so two writers of the same
target never share a temporary file; the last complete write wins.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Writer = Callable[[Path], Any]


def write_atomic(target: Path, content: str | bytes | Writer, *, mode: int = 0o644) -> Path:
    """Write ``target`` through a unique temporary file beside it, then ``os.replace`` it into place.

    Args:
        target: the file to (re)place; its folder is created if missing.
        content: text, bytes, or a function that writes the file at the path it is given (e.g.
            ``lambda p: frame.to_parquet(p)``).
        mode: the file's permissions (``mkstemp`` makes files private; readers may run as another user).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(name)
    try:
        if isinstance(content, (str, bytes)):
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode() if isinstance(content, str) else content)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            os.close(fd)
            content(partial)
        os.chmod(partial, mode)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(target: Path, payload: Any, *, indent: int | None = 2, sort_keys: bool = True) -> Path:
    """:func:`write_atomic` of ``payload`` as JSON (a trailing newline, keys sorted by default)."""
    return write_atomic(target, json.dumps(payload, indent=indent, sort_keys=sort_keys, default=str) + "\n")


@contextmanager
def publish_folder(target: Path) -> Iterator[Path]:
    """Build a folder under a unique temporary name and rename it to ``target`` when the block succeeds.

    Yields the temporary folder to fill. An existing ``target`` is replaced only after the new one is
    complete; if the block raises, ``target`` stays as it was and the temporary folder is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        yield partial
        os.chmod(partial, 0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".retired"))
            retired.rmdir()
            target.rename(retired)
            partial.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
