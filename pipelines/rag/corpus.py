"""Load a folder of Markdown, HTML and text documents, normalise them, and chunk them along their structure.

A document's id is its path relative to the corpus folder (POSIX, e.g. ``guides/setup.md``). Chunks never
cross a heading: a document is cut into sections by its headings, a section into paragraphs (a fenced
code block is one paragraph), and only a paragraph longer than the chunk size is cut further, at line,
sentence, word and, last, character boundaries. Consecutive pieces of a section are packed into chunks of
at most ``size_chars`` characters, each starting with up to ``overlap_chars`` characters of the previous
one. Every chunk's text starts with its heading path (``Architecture > The features template``), which is
also kept as metadata.

Bad input (binary, undecodable, empty or oversized files) is skipped with a reason, or fails the load when
``bad_files="fail"``; a corpus with no readable document is an error. Nothing here writes anywhere.

The folder is untrusted input too: a file's size is checked on the open file before a byte is read (an
oversized file is skipped, never read), and a symlinked file or folder whose target lies outside the corpus
folder is skipped with a warning naming it (one whose target lies inside is read as usual). ``**`` does not
descend into symlinked folders (Python's own glob); a pattern naming one (``linked/*.md``) does, and the
files found there are checked like any other.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from pipelines.core.errors import NotRetryable

log = logging.getLogger(__name__)

# Bump when the chunking algorithm changes in a way that changes chunk texts: it is part of every chunk id,
# so the next run rebuilds the index as a new version instead of mixing old and new chunks.
CHUNKER_VERSION = 1
HEADING_SEPARATOR = " > "
CHUNKER_STRATEGIES = ("structure", "symbol")

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


class CorpusError(NotRetryable, ValueError):
    """The corpus cannot be indexed as it is; the message says which folder or file, why, and what to do."""


@dataclass(frozen=True)
class Document:
    """One normalised document. ``doc_id`` is its path relative to the corpus folder."""

    doc_id: str
    kind: str  # markdown | html | text
    text: str
    content_hash: str


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed, and why; ``kind`` is ``bad_input``, ``too_large`` or ``outside_corpus``."""

    doc_id: str
    reason: str
    kind: str = "bad_input"


@dataclass
class Corpus:
    """The readable documents of a folder, and the files that were skipped."""

    root: Path
    documents: list[Document]
    skipped: list[SkippedFile] = field(default_factory=list)

    def skipped_by_kind(self) -> dict[str, int]:
        """How many files were skipped, per :attr:`SkippedFile.kind`."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        return counts

    @property
    def digest(self) -> str:
        """sha256 over every document id and content hash: equal digests, equal corpora."""
        h = hashlib.sha256()
        for doc in sorted(self.documents, key=lambda d: d.doc_id):
            h.update(f"{doc.doc_id}\0{doc.content_hash}\n".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Section:
    """A run of paragraphs under one heading path; ``blocks`` are (start, end) offsets into the text."""

    heading_path: tuple[str, ...]
    blocks: list[tuple[int, int]]


# --- loading ------------------------------------------------------------------------------------------------

def document_kind(path: str | Path) -> str:
    suffix = PurePosixPath(str(path)).suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in HTML_SUFFIXES:
        return "html"
    return "text"


def _matches(rel: str, patterns: list[str]) -> bool:
    path = PurePosixPath(rel)
    for pattern in patterns:
        # PurePath.match anchors at the right; "**/*.md" should also match a top-level "a.md".
        if path.match(pattern) or fnmatch.fnmatch(rel, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(rel, pattern[3:])):
            return True
    return False


def corpus_files(root: Path, include: list[str], exclude: list[str]) -> list[tuple[str, Path]]:
    """(document id, path) of each file under ``root`` matching ``include`` and not ``exclude``, sorted."""
    found: dict[str, Path] = {}
    for pattern in include:
        for path in root.glob(pattern):
            if path.is_file():
                found[path.relative_to(root).as_posix()] = path
    return [(rel, found[rel]) for rel in sorted(found) if not _matches(rel, exclude)]


def _too_large(doc_id: str, size: int, max_bytes: int) -> SkippedFile:
    return SkippedFile(doc_id, f"is {size / 1e6:.1f} MB, over corpus.max_file_mb ({max_bytes / 1e6:g} MB): not "
                               "read; split it or raise the limit", kind="too_large")


def read_file(doc_id: str, path: Path, root: Path, max_bytes: int) -> Document | SkippedFile:
    """Read one corpus file, if it lies inside ``root`` (symlinks resolved) and is at most ``max_bytes``.

    Args:
        root: the corpus folder, resolved.

    Returns:
        The document, or why it was skipped: outside the folder and oversized files are never opened for reading
        past their size, and the size is taken from the open file, so a file swapped after the check is caught.
    """
    target = path.resolve()
    if not target.is_relative_to(root):
        return SkippedFile(doc_id, f"is a symlink (or lies under one) to {target}, outside the corpus folder {root}: "
                                   "not read; copy the file into the folder if it belongs in the index",
                           kind="outside_corpus")
    # O_NOFOLLOW: the checked path is the real one, so a symlink there now was put in since; O_NONBLOCK: a
    # FIFO put in its place does not hang the open (it is refused below as not a regular file).
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        return SkippedFile(doc_id, f"cannot be opened ({exc.strerror}): fix its permissions or exclude it")
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return SkippedFile(doc_id, "is not a regular file: exclude it with corpus.exclude")
        if info.st_size > max_bytes:
            return _too_large(doc_id, info.st_size, max_bytes)
        raw = handle.read(max_bytes + 1)  # never more than the limit, even if the file grew since fstat
    return read_document(doc_id, raw, max_bytes)


def read_document(doc_id: str, raw: bytes, max_bytes: int) -> Document | SkippedFile:
    """Decode and normalise one file's bytes, or say why it cannot be a document."""
    if len(raw) > max_bytes:
        return _too_large(doc_id, len(raw), max_bytes)
    if not raw.strip():
        return SkippedFile(doc_id, "is empty")
    if b"\x00" in raw[:8192]:
        return SkippedFile(doc_id, "is a binary file (NUL bytes): exclude it with corpus.exclude")
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1]
        return SkippedFile(doc_id, f"is not valid UTF-8 (byte {exc.start}: {bad!r}): save it as UTF-8 or "
                                   "exclude it")
    kind = document_kind(doc_id)
    text = normalise_text(decoded, kind)
    if not text:
        return SkippedFile(doc_id, "has no text after normalisation")
    return Document(doc_id, kind, text, hashlib.sha256(text.encode()).hexdigest()[:16])


def load_corpus(root: Path, include: list[str], exclude: list[str] | None = None, *,
                max_bytes: int = 5_000_000, bad_files: str = "skip") -> Corpus:
    """Read every matching file of ``root`` into a normalised :class:`Document`.

    Args:
        root: The corpus folder.
        include: Glob patterns relative to ``root``.
        exclude: Glob patterns of files to leave out.
        max_bytes: Files larger than this are bad input, skipped without being read.
        bad_files: ``skip`` (log and leave out) or ``fail`` (raise) for binary, undecodable, empty and
            oversized files, and for symlinks whose target lies outside ``root``.

    Raises:
        CorpusError: the folder is missing, holds no readable document, or (``fail``) holds a bad file.
    """
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} does not exist or is not a folder: point corpus.path at a "
                          "folder of .md, .html or .txt documents")
    documents, skipped = [], []
    real_root = root.resolve()
    for doc_id, path in corpus_files(root, include, exclude or []):
        item = read_file(doc_id, path, real_root, max_bytes)
        if isinstance(item, SkippedFile):
            log.warning("Skipped %s: %s", path, item.reason)
            skipped.append(item)
        else:
            documents.append(item)
    if skipped and bad_files == "fail":
        listed = "; ".join(f"{s.doc_id} {s.reason}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise CorpusError(f"corpus {root} has {len(skipped)} bad file(s): {listed}{more}. Nothing was "
                          "indexed; fix or exclude them, or set corpus.bad_files: skip")
    if not documents:
        why = f"; {len(skipped)} file(s) skipped: " + "; ".join(
            f"{s.doc_id} {s.reason}" for s in skipped[:5]) if skipped else ""
        raise CorpusError(f"corpus {root} has no readable document matching {include}{why}. Nothing was "
                          "indexed and the live index is untouched: add documents or fix corpus.path/include")
    corpus = Corpus(root, documents, skipped)
    log.info("Corpus %s: %d documents, %d files skipped %s", root, len(documents), len(skipped),
             corpus.skipped_by_kind() or "")
    return corpus


# --- normalising --------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n(?:---|\.\.\.)\n", re.S)


def normalise_text(raw: str, kind: str) -> str:
    """One text form for every input: NFC, ``\\n`` line ends, no control characters or trailing blanks.

    HTML becomes Markdown-like text first (headings as ``#`` lines, block elements as paragraphs, scripts
    and styles dropped); a Markdown front matter block is dropped.
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    if kind == "html":
        text = html_to_markdown(text)
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    if kind == "markdown":
        text = _FRONT_MATTER.sub("", text, count=1)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n").strip()


class _HtmlToMarkdown(HTMLParser):
    BLOCKS = {"p", "div", "section", "article", "header", "footer", "main", "aside", "blockquote", "ul",
              "ol", "li", "table", "tr", "form", "figure", "figcaption", "dl", "dt", "dd", "hr", "br", "nav",
              "body"}
    HIDDEN = {"script", "style", "noscript", "template", "svg", "head"}
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.title: list[str] = []
        self.in_title = False
        self.heading_level = 0
        self.saw_h1 = False

    def _flush(self, prefix: str = "") -> None:
        text = re.sub(r"\s+", " ", "".join(self.current)).strip()
        if text:
            self.blocks.append(prefix + text)
        self.current = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self.in_title = True
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.HEADINGS:
            self._flush()
            self.heading_level = self.HEADINGS[tag]
            self.saw_h1 |= tag == "h1"
        elif tag == "pre":
            self._flush()
            self.pre += 1
        elif tag in self.BLOCKS:
            self._flush()
            if tag == "li":
                self.current.append("- ")
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.HEADINGS and self.heading_level:
            self._flush("#" * self.heading_level + " ")
            self.heading_level = 0
        elif tag == "pre" and self.pre:
            self.pre -= 1
            code = "".join(self.current).strip("\n")
            if code.strip():
                self.blocks.append(f"```\n{code}\n```")
            self.current = []
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if not self.hidden:
            self.current.append(data)

    def markdown(self) -> str:
        self._flush()
        title = re.sub(r"\s+", " ", "".join(self.title)).strip()
        blocks = self.blocks if self.saw_h1 or not title else [f"# {title}", *self.blocks]
        return "\n\n".join(blocks)


def html_to_markdown(html: str) -> str:
    """The text of an HTML page as Markdown-like paragraphs, with its headings as ``#`` lines."""
    parser = _HtmlToMarkdown()
    parser.feed(html)
    parser.close()
    return parser.markdown()


# --- chunking -----------------------------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SPLIT_LEVELS = ("\n", ". ", " ")
_WHITESPACE = re.compile(r"\s+")


def sections(text: str, kind: str) -> list[Section]:
    """Cut a normalised document into sections by its headings (Markdown and converted HTML; ATX ``#``).

    Paragraphs are runs of non-blank lines; a fenced code block is one paragraph, and a ``#`` line inside
    it is not a heading. Sections without a paragraph (a heading right above a sub-heading) are dropped;
    their heading stays in the path of the sections below.
    """
    headings: list[tuple[int, str]] = []
    result: list[Section] = []
    blocks: list[tuple[int, int]] = []
    block_start = block_end = None
    fence: str | None = None

    def close_block() -> None:
        nonlocal block_start, block_end
        if block_start is not None:
            blocks.append((block_start, block_end))
        block_start = block_end = None

    def close_section() -> None:
        nonlocal blocks
        close_block()
        if blocks:
            result.append(Section(tuple(title for _, title in headings), blocks))
        blocks = []

    pos = 0
    for line in text.split("\n"):
        start, end = pos, pos + len(line)
        pos = end + 1
        if fence:
            block_end = end
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
                close_block()
            continue
        opening = _FENCE.match(line)
        if opening:
            close_block()
            fence = opening.group(1)
            block_start, block_end = start, end
            continue
        heading = _ATX_HEADING.match(line) if kind in ("markdown", "html") else None
        if heading:
            close_section()
            level, title = len(heading.group(1)), (heading.group(2) or "").strip()
            headings[:] = [(lv, t) for lv, t in headings if lv < level]
            if title:
                headings.append((level, title))
            continue
        if not line.strip():
            close_block()
            continue
        if block_start is None:
            block_start = start
        block_end = end
    close_section()
    return result


def _pieces(text: str, start: int, end: int, size: int, level: int = 0) -> list[tuple[int, int]]:
    """(start, end) spans of at most ``size`` characters covering text[start:end], cut at the coarsest
    boundary that works: lines, then sentences, then words, then characters."""
    if end - start <= size:
        return [(start, end)]
    if level >= len(_SPLIT_LEVELS):
        return [(i, min(i + size, end)) for i in range(start, end, size)]
    separator = _SPLIT_LEVELS[level]
    spans, cursor = [], start
    while cursor < end:
        found = text.find(separator, cursor, end)
        cut = end if found == -1 else found + len(separator)
        spans.append((cursor, cut))
        cursor = cut
    if len(spans) == 1:
        return _pieces(text, start, end, size, level + 1)
    out: list[tuple[int, int]] = []
    for a, b in spans:
        out.extend(_pieces(text, a, b, size, level + 1) if b - a > size else [(a, b)])
    return out


def _overlap_start(text: str, prev_start: int, prev_end: int, next_start: int, overlap: int) -> int:
    """Where the next chunk starts: up to ``overlap`` characters into the previous one, at a word start."""
    if overlap <= 0:
        return next_start
    p = max(prev_end - overlap, prev_start + 1)
    if not text[p - 1].isspace():
        gap = _WHITESPACE.search(text, p, prev_end)
        if gap is None:
            return next_start
        p = gap.end()
    return p if p < next_start else next_start


def chunk_spans(text: str, blocks: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Pack a section's paragraphs into (start, end) spans of at most ``size`` characters, with overlap."""
    pieces = [p for a, b in blocks for p in _pieces(text, a, b, size)]
    chunks: list[tuple[int, int]] = []
    cs = ce = None
    for s, e in pieces:
        if cs is None:
            cs, ce = s, e
        elif e - cs <= size:
            ce = e
        else:
            chunks.append((cs, ce))
            ns = _overlap_start(text, cs, ce, s, overlap)
            cs, ce = (ns if e - ns <= size else s), e
    if cs is not None:
        chunks.append((cs, ce))
    return chunks


def chunk_document(doc: Document, size: int, overlap: int) -> list[tuple[str, str]]:
    """The (heading path, chunk text) pairs of a document, in order.

    The chunk text is the heading path, a blank line, then the chunk's body (at most ``size`` characters);
    a document without headings has bare bodies.
    """
    return _pack(doc, sections(doc.text, doc.kind), size, overlap,
                 lambda section: HEADING_SEPARATOR.join(section.heading_path))


def _pack(doc: Document, parts: list[Section], size: int, overlap: int,
          header: Callable[[Section], str]) -> list[tuple[str, str]]:
    """(heading path, ``header(section)``, a blank line, the body) of every chunk of ``parts``, in order."""
    out = []
    for section in parts:
        heading, head = HEADING_SEPARATOR.join(section.heading_path), header(section)
        for a, b in chunk_spans(doc.text, section.blocks, size, overlap):
            body = doc.text[a:b].strip()
            if body:
                out.append((heading, f"{head}\n\n{body}" if head else body))
    return out


# --- chunking by code symbol --------------------------------------------------------------------------------

_HEADING_DECORATION = re.compile(r"^(?:class|def|function|method|module)\s+|\(\)$")
_IDENTIFIER_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)", re.S)


def qualified_name(heading_path: tuple[str, ...]) -> str:
    """The dotted name of a symbol from its heading path in the docstring corpus.

    ``("mlflow.client", "class MlflowClient", "MlflowClient.set_registered_model_alias")`` →
    ``mlflow.client.MlflowClient.set_registered_model_alias``: the module (top heading) and the innermost
    heading, whose class prefix already names the enclosing class. Headings of other documents are joined
    with dots as they are.
    """
    names = [_HEADING_DECORATION.sub("", title).strip() for title in heading_path]
    names = [name for name in names if name]
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return f"{names[0]}.{names[-1]}"


def identifier_words(name: str) -> str:
    """A dotted or snake/camel-case name as lower-case words: ``MlflowClient.set_model_alias`` →
    ``mlflow client set model alias``; an embedding model matches words far better than identifiers."""
    words = []
    for part in re.split(r"[^A-Za-z0-9]+", name):
        words += [w.lower() for w in _IDENTIFIER_PART.findall(part)]
    return " ".join(dict.fromkeys(w for w in words if w))


def first_sentence(text: str, limit: int = 200) -> str:
    """The first sentence of a paragraph, whitespace collapsed, cut at ``limit`` characters."""
    paragraph = text.strip().split("\n\n", 1)[0]
    match = _FIRST_SENTENCE.match(paragraph)
    sentence = " ".join((match.group(1) if match else paragraph).split())
    return sentence[:limit]


def chunk_document_by_symbol(doc: Document, size: int, overlap: int) -> list[tuple[str, str]]:
    """The (heading path, chunk text) pairs of a document cut by code symbol (``chunker.strategy: symbol``).

    Sections and their packing are those of :func:`chunk_document` (a docstring corpus has one section per
    module, class and function); each chunk's text starts with a header that names the symbol instead of
    the bare heading path: the qualified name (``mlflow.client.MlflowClient.set_registered_model_alias``),
    the name as words (``set registered model alias``), and the first sentence of the document's first
    section (the module summary), so that a chunk of one method still says which module it belongs to.
    """
    parts = sections(doc.text, doc.kind)
    if not parts:
        return []
    first = parts[0]
    summary = first_sentence(doc.text[first.blocks[0][0]:first.blocks[0][1]]) if first.blocks else ""

    def header(section: Section) -> str:
        name = qualified_name(section.heading_path)
        lines = [name, identifier_words(name)] if name else []
        if summary and section is not first:
            lines.append(f"In {section.heading_path[0] if section.heading_path else doc.doc_id}: {summary}")
        return "\n".join(line for line in lines if line)

    return _pack(doc, parts, size, overlap, header)


def chunk_document_with(doc: Document, size: int, overlap: int, strategy: str = "structure") -> list[tuple[str, str]]:
    """:func:`chunk_document` (``structure``) or :func:`chunk_document_by_symbol` (``symbol``)."""
    if strategy == "structure":
        return chunk_document(doc, size, overlap)
    if strategy == "symbol":
        return chunk_document_by_symbol(doc, size, overlap)
    raise ValueError(f"unknown chunker strategy {strategy!r}: use one of {', '.join(CHUNKER_STRATEGIES)}")
