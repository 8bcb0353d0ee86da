"""Instruction/answer pairs built deterministically from a docs corpus, split into train and eval, validated.

Each section of each document (cut by its headings, as the RAG chunker does) makes one pair: the
instruction asks what that section of that document says, the answer is the section's text, cut at a
paragraph (or word) boundary to ``max_answer_chars``. Sections shorter than ``min_answer_chars`` make no pair,
and a pair whose answer repeats an earlier one is dropped, so no answer can sit in both splits.

A pair goes to eval when the hash of ``(seed, doc_id, instruction)`` falls below ``eval_fraction``: the
split of a pair never depends on the other pairs, so adding a document moves no existing pair between
the splits. Nothing here imports torch; the token-length check takes a tokenizer as an argument.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.core.errors import NotRetryable
from pipelines.core.files import write_atomic

log = logging.getLogger(__name__)

PROMPT = "### Instruction:\n{instruction}\n\n### Answer:\n"
# Every answer names its source first, as a grounded assistant should.
ANSWER_SOURCE = "From {doc_id}, {title}:\n\n"
TRAIN, EVAL = "train", "eval"


class DatasetError(NotRetryable, ValueError):
    """The instruction dataset is empty or invalid; nothing was tuned or registered."""


@dataclass(frozen=True)
class Pair:
    """One example: ``instruction`` (the prompt's question), ``answer`` (the target text), where it came from."""

    pair_id: str
    doc_id: str
    section: str
    instruction: str
    answer: str
    split: str


def read_corpus(root: Path, corpus: Any):
    """The documents of ``root`` that ``corpus`` (a ``CorpusSpec``: include and exclude globs) selects.

    Returns:
        A ``pipelines.rag.corpus.Corpus`` (``root``, ``documents``, ``digest``).

    Raises:
        DatasetError: the folder is missing or holds no readable document.
    """
    from pipelines.rag.corpus import CorpusError, load_corpus

    try:
        return load_corpus(root, corpus.include, corpus.exclude)
    except CorpusError as exc:
        raise DatasetError(f"the instruction dataset cannot be built: {exc}") from None


def format_prompt(instruction: str) -> str:
    """The plain-text prompt of a model without a chat template (the tiny test model)."""
    return PROMPT.format(instruction=instruction)


def prompt_ids(tokenizer, instruction: str) -> list[int]:
    """The token ids that come before the answer, for tuning, evaluation and serving alike.

    An instruction-tuned model (its tokenizer has a chat template, as SmolLM2's has) gets the instruction as
    a user turn and the opening of the assistant's turn, exactly as the assistant prompts it, so an adapter
    learns the format it is served in; a model without one gets :func:`format_prompt` after its BOS token.
    """
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": instruction}],
                                                 add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(rendered["input_ids"])
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(format_prompt(instruction), add_special_tokens=False)["input_ids"]


def _cut(paragraphs: list[str], limit: int) -> str:
    """Whole paragraphs up to ``limit`` characters; a first paragraph that is longer is cut at a word."""
    kept: list[str] = []
    for paragraph in paragraphs:
        candidate = "\n\n".join([*kept, paragraph])
        if len(candidate) <= limit:
            kept.append(paragraph)
            continue
        if not kept:
            words = paragraph[:limit + 1].rsplit(" ", 1)[0] if " " in paragraph[:limit] else paragraph[:limit]
            kept.append(words.rstrip())
        break
    return "\n\n".join(kept)


def _split_of(seed: int, doc_id: str, instruction: str, eval_fraction: float) -> str:
    digest = hashlib.sha256(f"{seed}\0{doc_id}\0{instruction}".encode()).digest()
    return EVAL if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else TRAIN


def build_pairs(documents: list[Any], spec: Any) -> list[Pair]:
    """Pairs from normalised documents (``doc_id``, ``kind``, ``text``), in document and section order.

    Args:
        documents: ``pipelines.rag.corpus.Document``-like objects.
        spec: ``DatasetSpec``: answer length bounds, eval fraction, split seed.
    """
    from pipelines.rag.corpus import sections

    pairs: list[Pair] = []
    seen_instructions: set[str] = set()
    seen_answers: set[str] = set()
    for doc in sorted(documents, key=lambda d: d.doc_id):
        for section in sections(doc.text, doc.kind):
            title = " > ".join(section.heading_path) or doc.doc_id
            paragraphs = [doc.text[start:end].strip() for start, end in section.blocks]
            source = ANSWER_SOURCE.format(doc_id=doc.doc_id, title=title)
            body = _cut([p for p in paragraphs if p], spec.max_answer_chars - len(source))
            if len(body) < spec.min_answer_chars or body in seen_answers:
                continue
            answer = source + body
            instruction = f'What does the section "{title}" of {doc.doc_id} say?'
            if len(instruction) > spec.max_instruction_chars:
                tail = title[-(spec.max_instruction_chars - 40):]
                instruction = f'What does the section "…{tail}" of {doc.doc_id} say?'
            base, n = instruction, 2
            while instruction in seen_instructions:
                instruction, n = f"{base} (part {n})", n + 1
            seen_instructions.add(instruction)
            seen_answers.add(body)
            pair_id = hashlib.sha256(f"{doc.doc_id}\0{instruction}".encode()).hexdigest()[:16]
            pairs.append(Pair(pair_id, doc.doc_id, title, instruction, answer,
                              _split_of(spec.seed, doc.doc_id, instruction, spec.eval_fraction)))
    return pairs


def dataset_digest(pairs: list[Pair]) -> str:
    """sha256 over every pair (text and split) in order: equal digests, equal datasets."""
    h = hashlib.sha256()
    for pair in pairs:
        h.update(json.dumps(asdict(pair), sort_keys=True).encode() + b"\n")
    return h.hexdigest()


def validate_pairs(pairs: list[Pair], spec: Any, source: str) -> dict[str, int]:
    """Non-empty splits of the minimum size, every text within its bounds, no text in both splits.

    Returns:
        ``train_pairs``, ``eval_pairs``.

    Raises:
        DatasetError: naming the first problems found.
    """
    train = [p for p in pairs if p.split == TRAIN]
    held_out = [p for p in pairs if p.split == EVAL]
    if not pairs:
        raise DatasetError(f"the instruction dataset from {source} is empty: no section has at least "
                           f"{spec.min_answer_chars} characters of text. Nothing was tuned or registered; add "
                           "documents with headed sections, or fix corpus.path/include")
    problems = []
    if len(train) < spec.min_train_pairs:
        problems.append(f"{len(train)} train pairs (at least {spec.min_train_pairs} needed)")
    if len(held_out) < spec.min_eval_pairs:
        problems.append(f"{len(held_out)} eval pairs (at least {spec.min_eval_pairs} needed)")
    for pair in pairs:
        if not pair.instruction.strip() or not pair.answer.strip():
            problems.append(f"pair {pair.pair_id} has an empty instruction or answer")
        elif not spec.min_answer_chars <= len(pair.answer) <= spec.max_answer_chars:
            problems.append(f"pair {pair.pair_id} has a {len(pair.answer)}-character answer (bounds "
                            f"[{spec.min_answer_chars}, {spec.max_answer_chars}])")
        elif len(pair.instruction) > spec.max_instruction_chars:
            problems.append(f"pair {pair.pair_id} has a {len(pair.instruction)}-character instruction "
                            f"(at most {spec.max_instruction_chars})")
    for field in ("instruction", "answer"):
        shared = {getattr(p, field) for p in train} & {getattr(p, field) for p in held_out}
        if shared:
            problems.append(f"{len(shared)} {field}(s) in both train and eval, e.g. {sorted(shared)[0][:60]!r}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DatasetError(f"the instruction dataset from {source} is invalid: {'; '.join(problems[:5])}{more}. "
                           "Nothing was tuned or registered")
    return {"train_pairs": len(train), "eval_pairs": len(held_out)}


def write_pairs(pairs: list[Pair], folder: Path) -> dict[str, str]:
    """``train.jsonl`` and ``eval.jsonl`` in ``folder`` (one pair a line), each written atomically; their paths."""
    paths = {}
    for split in (TRAIN, EVAL):
        lines = "".join(json.dumps(asdict(p), sort_keys=True) + "\n" for p in pairs if p.split == split)
        paths[split] = str(write_atomic(folder / f"{split}.jsonl", lines))
    return paths


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs of one ``.jsonl`` split file."""
    return [Pair(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def token_lengths(pairs: list[Pair], tokenizer) -> list[int]:
    """Prompt + answer + end-of-sequence tokens of each pair, as the tuning encodes them."""
    return [len(prompt_ids(tokenizer, p.instruction)) + len(tokenizer(p.answer, add_special_tokens=False)["input_ids"])
            + 1 for p in pairs]
