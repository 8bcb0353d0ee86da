"""The files a scaffold writes: rendered from ``templates/``, never overwriting what exists without ``force``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from pipelines.core import REPO_ROOT

TEMPLATES = Path(__file__).resolve().parent / "templates"


class ScaffoldError(ValueError):
    """The scaffold cannot write the use case; the message names what is wrong and what to do."""


def render(template_file: str, /, **values: object) -> str:
    """``templates/<template_file>`` with its ``${name}`` placeholders filled (a missing value is a KeyError)."""
    return Template((TEMPLATES / template_file).read_text()).substitute({k: str(v) for k, v in values.items()})


def config_reference(path: Path) -> str:
    """How a YAML names a path: relative to the repository when inside it (portable), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class FileSet:
    """The files of one scaffold, by path, written together or not at all."""

    files: dict[Path, str] = field(default_factory=dict)

    def add(self, path: Path, text: str) -> None:
        self.files[Path(path)] = text

    def write(self, force: bool = False) -> list[Path]:
        """Write every file (folders created); refuse before writing anything if one exists and not ``force``.

        Raises:
            ScaffoldError: naming the files that exist.
        """
        existing = sorted(str(path) for path in self.files if path.exists())
        if existing and not force:
            raise ScaffoldError("these files exist already, nothing was written: " + ", ".join(existing)
                                + "; pick another name, or pass --force to overwrite them")
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return sorted(self.files)
