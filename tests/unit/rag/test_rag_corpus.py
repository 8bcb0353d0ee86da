"""Loading, normalising and chunking documents: structure kept, sizes held, bad files named."""

from __future__ import annotations

import re

import pytest

from pipelines.rag.corpus import (
    CorpusError,
    Document,
    chunk_document,
    html_to_markdown,
    load_corpus,
    normalise_text,
    sections,
)

pytestmark = pytest.mark.unit

GUIDE = """\
# Guide

Intro paragraph about the guide.

## Install

Run the installer. It takes a minute.

```bash
# not a heading: a comment in a code block
make install
```

### On Linux

Use the package manager.

## Use

Open the app and log in.
"""


def doc(text: str, kind: str = "markdown", doc_id: str = "guide.md") -> Document:
    return Document(doc_id, kind, normalise_text(text, kind), "x")


def test_normalise_line_ends_unicode_controls_and_blank_runs():
    raw = "Caf\u0065\u0301 \r\nline two   \rthree\x07\n\n\n\n\nfour\t \n"
    assert normalise_text(raw, "text") == "Caf\u00e9\nline two\nthree\n\nfour"


def test_markdown_front_matter_is_dropped():
    assert normalise_text("---\ntitle: x\n---\n# Title\n\nBody", "markdown") == "# Title\n\nBody"


def test_html_becomes_markdown_with_headings_paragraphs_and_code():
    html = """<html><head><title>Handbook</title><style>p {color: red}</style></head><body>
    <h2>Setup &amp; run</h2><p>First   paragraph,
    wrapped.</p><script>alert(1)</script><ul><li>one</li><li>two</li></ul>
    <pre>x = 1
    y = 2</pre></body></html>"""
    md = html_to_markdown(html)
    assert md.split("\n\n")[:5] == ["# Handbook", "## Setup & run", "First paragraph, wrapped.", "- one",
                                    "- two"]
    assert "alert" not in md and "color" not in md
    assert "```\nx = 1\n    y = 2\n```" in md


def test_sections_follow_headings_and_ignore_hashes_in_code():
    text = normalise_text(GUIDE, "markdown")
    found = sections(text, "markdown")
    assert [s.heading_path for s in found] == [
        ("Guide",), ("Guide", "Install"), ("Guide", "Install", "On Linux"), ("Guide", "Use")]
    install = found[1]
    assert [text[a:b] for a, b in install.blocks] == [
        "Run the installer. It takes a minute.",
        "```bash\n# not a heading: a comment in a code block\nmake install\n```"]


def test_plain_text_has_no_headings():
    text = "# not a heading in a .txt file\n\nsecond paragraph"
    assert [s.heading_path for s in sections(text, "text")] == [()]


def test_chunks_carry_their_heading_path_and_never_cross_a_heading():
    chunks = chunk_document(doc(GUIDE), size=200, overlap=30)
    assert [h for h, _ in chunks] == ["Guide", "Guide > Install", "Guide > Install > On Linux", "Guide > Use"]
    for heading, text in chunks:
        assert text.startswith(heading + "\n\n")
        outside_code = re.sub(r"```.*?```", "", text.split("\n\n", 1)[1], flags=re.S)
        assert not re.search(r"^#{1,6} ", outside_code, re.M), text


def test_small_paragraphs_are_packed_whole_into_one_chunk():
    chunks = chunk_document(doc(GUIDE), size=1000, overlap=100)
    install = dict(chunks)["Guide > Install"]
    assert "Run the installer. It takes a minute.\n\n```bash" in install


@pytest.mark.parametrize("size,overlap", [(100, 0), (100, 30), (250, 100), (1000, 150)])
def test_chunk_bodies_respect_the_size_and_cover_every_word(size, overlap):
    words = [f"w{i}" for i in range(600)]
    paragraphs = [" ".join(words[i:i + 40]) + "." for i in range(0, 600, 40)]
    long_line = "x" * (size * 2 + 7)  # a single word longer than a chunk: cut by characters
    text = "# Title\n\n" + "\n\n".join(paragraphs) + "\n\n" + long_line
    chunks = chunk_document(doc(text), size=size, overlap=overlap)
    bodies = [t.split("\n\n", 1)[1] for _, t in chunks]
    assert all(len(b) <= size for b in bodies)
    joined = " ".join(bodies)
    assert all(re.search(rf"\b{w}\b", joined) for w in words)
    assert joined.count("x") >= len(long_line)


def test_consecutive_chunks_of_a_section_overlap():
    text = "# T\n\n" + " ".join(f"word{i}" for i in range(400))
    bodies = [t.split("\n\n", 1)[1] for _, t in chunk_document(doc(text), size=300, overlap=60)]
    assert len(bodies) > 3
    for first, second in zip(bodies, bodies[1:], strict=False):
        shared = second.split()[0]
        assert shared in first[-70:].split(), (first[-80:], second[:80])


def test_long_paragraph_is_cut_at_sentences_before_words():
    sentences = [f"Sentence number {i} says something short." for i in range(30)]
    text = "# T\n\n" + " ".join(sentences)
    bodies = [t.split("\n\n", 1)[1] for _, t in chunk_document(doc(text), size=200, overlap=0)]
    assert all(b.endswith(".") for b in bodies)


def test_chunking_is_deterministic():
    assert chunk_document(doc(GUIDE), 120, 40) == chunk_document(doc(GUIDE), 120, 40)


# --- loading ------------------------------------------------------------------------------------------------

def write(folder, name: str, data: bytes | str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def test_load_corpus_globs_excludes_and_ids_are_relative_posix_paths(tmp_path):
    write(tmp_path, "b.md", "# B\n\nbee")
    write(tmp_path, "sub/a.html", "<h1>A</h1><p>ay</p>")
    write(tmp_path, "sub/notes.txt", "plain")
    write(tmp_path, "drafts/x.md", "# draft")
    write(tmp_path, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    corpus = load_corpus(tmp_path, ["**/*.md", "**/*.html", "**/*.txt"], ["drafts/**"])
    assert [d.doc_id for d in corpus.documents] == ["b.md", "sub/a.html", "sub/notes.txt"]
    assert [d.kind for d in corpus.documents] == ["markdown", "html", "text"]
    assert corpus.skipped == []


def test_bad_files_are_skipped_with_a_reason(tmp_path):
    write(tmp_path, "good.md", "# Good\n\ntext")
    write(tmp_path, "binary.md", b"PK\x03\x04\x00\x00binary")
    write(tmp_path, "latin1.md", "caf\u00e9 cr\u00e8me".encode("latin-1"))
    write(tmp_path, "empty.md", "  \n")
    write(tmp_path, "huge.md", "# Huge\n\n" + "x" * 3000)
    corpus = load_corpus(tmp_path, ["*.md"], max_bytes=2000)
    assert [d.doc_id for d in corpus.documents] == ["good.md"]
    reasons = {s.doc_id: s.reason for s in corpus.skipped}
    assert reasons["binary.md"].startswith("is a binary file")
    assert reasons["latin1.md"].startswith("is not valid UTF-8 (byte 3")
    assert reasons["empty.md"] == "is empty"
    assert reasons["huge.md"].startswith("is 0.0 MB, over corpus.max_file_mb")


def test_bad_files_fail_the_load_when_asked(tmp_path):
    write(tmp_path, "good.md", "# Good\n\ntext")
    write(tmp_path, "binary.md", b"\x00\x01\x02")
    with pytest.raises(CorpusError, match=r"1 bad file\(s\): binary.md is a binary file .* Nothing was indexed"):
        load_corpus(tmp_path, ["*.md"], bad_files="fail")


def test_an_empty_corpus_is_an_error_that_names_the_folder(tmp_path):
    write(tmp_path, "only.bin", b"\x00")
    with pytest.raises(CorpusError, match=rf"corpus {tmp_path} has no readable document matching \['\*\*/\*.md"):
        load_corpus(tmp_path, ["**/*.md"])
    write(tmp_path, "blank.md", "")
    with pytest.raises(CorpusError, match=r"1 file\(s\) skipped: blank.md is empty"):
        load_corpus(tmp_path, ["**/*.md"])


def test_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus folder .*nope does not exist"):
        load_corpus(tmp_path / "nope", ["*.md"])


# --- the folder as untrusted input: symlinks out of it, oversized files -----------------------------------------

def test_symlinks_that_leave_the_corpus_folder_are_skipped_and_named(tmp_path, caplog):
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    write(corpus, "guide.md", "# Guide\n\ninside")
    write(outside, "secret.md", "# Secret\n\nthe worker's private notes")
    write(outside, "more/keys.md", "# Keys\n\nprivate")
    (corpus / "leak.md").symlink_to(outside / "secret.md")
    (corpus / "linked").symlink_to(outside / "more", target_is_directory=True)
    with caplog.at_level("WARNING", logger="pipelines.rag.corpus"):
        loaded = load_corpus(corpus, ["**/*.md", "linked/*.md"])
    assert [d.doc_id for d in loaded.documents] == ["guide.md"]
    assert all("private" not in d.text for d in loaded.documents)
    reasons = {s.doc_id: s for s in loaded.skipped}
    assert sorted(reasons) == ["leak.md", "linked/keys.md"]
    assert reasons["leak.md"].kind == "outside_corpus"
    assert reasons["leak.md"].reason.startswith(f"is a symlink (or lies under one) to {outside / 'secret.md'}, "
                                                f"outside the corpus folder {corpus}: not read")
    assert loaded.skipped_by_kind() == {"outside_corpus": 2}
    assert "Skipped " + str(corpus / "leak.md") in caplog.text and str(corpus / "linked" / "keys.md") in caplog.text
    with pytest.raises(CorpusError, match=r"2 bad file\(s\): leak.md is a symlink"):
        load_corpus(corpus, ["**/*.md", "linked/*.md"], bad_files="fail")


def test_symlinks_that_stay_inside_the_corpus_folder_are_read(tmp_path):
    corpus = tmp_path / "corpus"
    write(corpus, "shared/intro.md", "# Intro\n\nshared text")
    (corpus / "alias.md").symlink_to(corpus / "shared" / "intro.md")
    (corpus / "also").symlink_to(corpus / "shared", target_is_directory=True)
    loaded = load_corpus(corpus, ["*.md", "shared/*.md", "also/*.md"])
    assert [d.doc_id for d in loaded.documents] == ["alias.md", "also/intro.md", "shared/intro.md"]
    assert loaded.skipped == []
    # The corpus folder itself may be a symlink: its files are inside it.
    entry = tmp_path / "corpus-link"
    entry.symlink_to(corpus, target_is_directory=True)
    assert [d.doc_id for d in load_corpus(entry, ["shared/*.md"]).documents] == ["shared/intro.md"]


def _reads_update_atime(tmp_path) -> bool:
    import os
    import time

    probe = tmp_path / "probe.txt"
    probe.write_text("x")
    old = time.time() - 3 * 86400
    os.utime(probe, (old, old))
    probe.read_bytes()
    return probe.stat().st_atime > old + 86400


def test_an_oversized_file_is_skipped_from_its_size_and_never_read(tmp_path):
    import os
    import time

    corpus = tmp_path / "corpus"
    write(corpus, "good.md", "# Good\n\ntext")
    big = corpus / "dump.md"
    with open(big, "wb") as handle:  # a real 3 GB file (sparse: no disk spent), text where it is read from
        handle.write(b"# Dump\n\n")
        handle.truncate(3_000_000_000)
    old = time.time() - 3 * 86400
    os.utime(big, (old, old))
    loaded = load_corpus(corpus, ["*.md"], max_bytes=5_000_000)
    assert [d.doc_id for d in loaded.documents] == ["good.md"]
    (skipped,) = loaded.skipped
    assert (skipped.doc_id, skipped.kind) == ("dump.md", "too_large")
    assert skipped.reason == ("is 3000.0 MB, over corpus.max_file_mb (5 MB): not read; split it or raise the "
                              "limit")
    assert loaded.skipped_by_kind() == {"too_large": 1}
    if _reads_update_atime(tmp_path):  # relatime/strictatime: a read would have moved the access time
        assert big.stat().st_atime == pytest.approx(old, abs=1)
