"""Export the docstrings of installed packages as Markdown documents: a larger, real corpus for benchmarks.

One document per public module: ``# <module>`` with the module's docstring, then ``## <Class>`` and
``### <Class>.<method>``, ``## <function>`` with theirs. Docstrings are read from the source with ``ast``
(``ast.get_docstring``, cleaned as ``inspect.getdoc`` cleans them) instead of importing the modules, so no
package code runs and a module that fails to import still counts. Nothing is invented: every word of the
corpus is in the installed packages. Private modules and names (leading ``_``) and test folders are left
out, and so are modules with less than ``--min-chars`` of documentation. A source file that is a symlink
resolving outside its package folder, or larger than ``--max-file-mb``, is skipped with a warning (its size is
checked before it is read) and counted in the result.

Run::

    python -m pipelines.rag.docstring_corpus           # airflow, feast, mlflow, peft → home:corpora/docstrings
    python -m pipelines.rag.docstring_corpus --packages mlflow --out /tmp/mlflow-docs --max-docs 500
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import shutil
from pathlib import Path

from pipelines.core.settings import get_settings

log = logging.getLogger(__name__)

DEFAULT_PACKAGES = ("airflow", "feast", "mlflow", "peft")
DEFAULT_MAX_FILE_MB = 5.0
DEFAULT_OUT = "home:corpora/docstrings"
SKIPPED_FOLDERS = {"tests", "test", "testing", "_vendor", "vendor", "migrations", "example_dags",
                   "node_modules"}


def package_files(package: str) -> list[tuple[str, Path]]:
    """(module name, source path) of every public module of an installed package, sorted.

    Symlinked files that resolve outside the package's folder are left out with a warning (``rglob`` does not
    descend into symlinked folders).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed (or is not a package): pick one from "
                         "pip list")
    out = []
    for location in spec.submodule_search_locations:
        root = Path(location)
        real_root = root.resolve()
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(p.startswith("_") and p != "__init__" for p in parts) or SKIPPED_FOLDERS & set(parts):
                continue
            if not path.resolve().is_relative_to(real_root):
                log.warning("Skipped %s: a symlink to %s, outside the package folder %s", path, path.resolve(),
                            real_root)
                continue
            module = ".".join([package, *[p for p in parts if p != "__init__"]])
            out.append((module, path))
    return sorted(set(out))


def module_markdown(module: str, source: str) -> str:
    """A module's docstrings as Markdown: module, public classes with their public methods, functions."""
    tree = ast.parse(source)
    parts = [f"# {module}"]
    if doc := ast.get_docstring(tree, clean=True):
        parts.append(doc)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            if doc := ast.get_docstring(node, clean=True):
                parts += [f"## class {node.name}", doc]
            for item in node.body:
                is_function = isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                if is_function and not item.name.startswith("_"):
                    if doc := ast.get_docstring(item, clean=True):
                        parts += [f"### {node.name}.{item.name}", doc]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            if doc := ast.get_docstring(node, clean=True):
                parts += [f"## {node.name}()", doc]
    return "\n\n".join(parts) + "\n"


def export(packages: list[str], out: Path, *, max_docs: int | None = None, min_chars: int = 300,
           max_file_mb: float = DEFAULT_MAX_FILE_MB) -> dict:
    """Write one Markdown document per documented public module under ``out`` (replaced whole).

    Returns:
        ``documents``, ``bytes``, ``per_package`` (documents per package), ``too_large`` (source files over
        ``max_file_mb``, skipped unread), ``out``.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    max_bytes = int(max_file_mb * 1_000_000)
    written, size, per_package, too_large = 0, 0, {}, 0
    for package in packages:
        count = 0
        for module, path in package_files(package):
            if max_docs is not None and written >= max_docs:
                break
            if (file_size := path.stat().st_size) > max_bytes:
                log.warning("Skipped %s (%s): %.1f MB, over --max-file-mb %g; not read", module, path,
                            file_size / 1e6, max_file_mb)
                too_large += 1
                continue
            try:
                text = module_markdown(module, path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
                log.warning("Skipped %s (%s): %s", module, path, exc)
                continue
            if len(text) - len(module) - 3 < min_chars:
                continue
            target = out / (module.replace(".", "/") + ".md")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written, size, count = written + 1, size + len(text.encode()), count + 1
        per_package[package] = count
    log.info("Exported %d documents (%.1f MB) to %s: %s; %d source files over %g MB skipped", written, size / 1e6,
             out, per_package, too_large, max_file_mb)
    return {"documents": written, "bytes": size, "per_package": per_package, "too_large": too_large,
            "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder; 'home:' = under the data home")
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--min-chars", type=int, default=300)
    parser.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB,
                        help="larger source files are skipped without being read")
    args = parser.parse_args(argv)
    out = get_settings().resolve(args.out)
    stats = export(args.packages, out, max_docs=args.max_docs, min_chars=args.min_chars,
                   max_file_mb=args.max_file_mb)
    print(f"{stats['documents']} documents, {stats['bytes'] / 1e6:.1f} MB in {stats['out']}: "
          f"{stats['per_package']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
