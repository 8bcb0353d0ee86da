"""Export the docstrings of installed packages as Markdown documents: a larger, real corpus for benchmarks.

One document per public module: ``# <module>`` with the module's docstring, then ``## <Class>`` and
``### <Class>.<method>``, ``## <function>`` with theirs. Docstrings are read from the source with ``ast``
(``ast.get_docstring``, cleaned as ``inspect.getdoc`` cleans them) instead of importing the modules, so no
package code runs and a module that fails to import still counts. Nothing is invented: every word of the
corpus is in the installed packages. Private modules and names (leading ``_``) and test folders are left
out, and so are modules with less than ``--min-chars`` of documentation.

Run::

    python -m pipelines.rag.docstring_corpus           # airflow, feast, mlflow → home:corpora/docstrings
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

DEFAULT_PACKAGES = ("airflow", "feast", "mlflow")
DEFAULT_OUT = "home:corpora/docstrings"
SKIPPED_FOLDERS = {"tests", "test", "testing", "_vendor", "vendor", "migrations", "example_dags",
                   "node_modules"}


def package_files(package: str) -> list[tuple[str, Path]]:
    """(module name, source path) of every public module of an installed package, sorted."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed (or is not a package): pick one from "
                         "pip list")
    out = []
    for location in spec.submodule_search_locations:
        root = Path(location)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(p.startswith("_") and p != "__init__" for p in parts) or SKIPPED_FOLDERS & set(parts):
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


def export(packages: list[str], out: Path, *, max_docs: int | None = None, min_chars: int = 300) -> dict:
    """Write one Markdown document per documented public module under ``out`` (replaced whole).

    Returns:
        ``documents``, ``bytes``, ``per_package`` (documents per package), ``out``.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written, size, per_package = 0, 0, {}
    for package in packages:
        count = 0
        for module, path in package_files(package):
            if max_docs is not None and written >= max_docs:
                break
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
    log.info("Exported %d documents (%.1f MB) to %s: %s", written, size / 1e6, out, per_package)
    return {"documents": written, "bytes": size, "per_package": per_package, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder; 'home:' = under the data home")
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--min-chars", type=int, default=300)
    args = parser.parse_args(argv)
    out = get_settings().resolve(args.out)
    stats = export(args.packages, out, max_docs=args.max_docs, min_chars=args.min_chars)
    print(f"{stats['documents']} documents, {stats['bytes'] / 1e6:.1f} MB in {stats['out']}: "
          f"{stats['per_package']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
