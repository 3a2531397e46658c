"""`translate(engine, texts, options)`: what every command, training-time evaluation, the server and its web page
translate with.

A text is translated line by line: a blank line gives a blank line without running the engine, and a line's leading
and trailing white space (the indentation of a program's help text, a trailing space before a placeholder) is put
back around its translation, since the tokenizer drops it; a line longer than the
engine's `source_limit` tokens is split at sentence boundaries (between words if one sentence is that long) and the
pieces' translations are joined with a space. Every piece gets its own §6.1 limit of new tokens, so the result of a
sentence does not depend on what else is translated with it (its batch, the batch size, other requests).

The server does the same in three steps, with its batcher in the middle: `plan` (texts → pieces), the engine's
`generate` on batches of pieces, `assemble` (pieces' translations → texts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .engine import TranslationEngine
from .options import DecodingOptions, DecodingOptionsError

# Where a text may be cut into sentences: after . ! ? ; : … (and their full-width forms) followed by white space.
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?;:…。！？；：])\s+")


@dataclass
class Plan:
    """The pieces an engine decodes for some texts, and how to put their translations back together."""

    lines: list[list[str]]  # each text's lines
    rows: list[list[int]]  # the pieces' source token ids
    limits: list[int]  # the pieces' limits of new tokens
    owner: list[int]  # the line (counted over all texts) each piece belongs to


def plan(engine: TranslationEngine, texts: list[str], options: DecodingOptions) -> Plan:
    """Split `texts` into the pieces `engine` decodes (see the module docstring). DecodingOptionsError when the
    engine cannot decode with `options`."""
    problem = engine.unsupported(options)
    if problem:
        raise DecodingOptionsError(problem)
    lines = [[line.rstrip("\r") for line in text.split("\n")] for text in texts]
    flat = [line for text_lines in lines for line in text_lines]
    kept = [index for index, line in enumerate(flat) if line.strip()]
    tokenizer, limit = engine.tokenizer, engine.source_limit
    rows, owner = [], []
    with engine.tokenizer_lock:
        encoded = tokenizer([flat[i] for i in kept], truncation=False, verbose=False)["input_ids"] if kept else []
        for index, ids in zip(kept, encoded):
            if limit and len(ids) > limit:
                parts = split_to_fit(flat[index], tokenizer, limit)
                rows += tokenizer(parts, truncation=False, verbose=False)["input_ids"]
                owner += [index] * len(parts)
            else:
                rows.append(ids)
                owner.append(index)
    limits = [engine.new_token_limit(len(ids)) for ids in rows]
    if options.max_new_tokens:
        limits = [min(tokens, options.max_new_tokens) for tokens in limits]
    return Plan(lines, rows, limits, owner)


def assemble(plan: Plan, results: list[list[str]], n_best: int) -> list[list[str]]:
    """The `n_best` translations of each text from its pieces' (`results[i]`: piece i's `n_best` translations)."""
    pieces: list[list[list[str]]] = [[] for text_lines in plan.lines for _ in text_lines]  # each line's pieces
    for index, alternatives in zip(plan.owner, results):
        pieces[index].append(alternatives)
    outputs, position = [], 0
    for text_lines in plan.lines:
        alternatives = []
        for rank in range(n_best):
            translated = [keep_margins(line, " ".join(part[rank] for part in pieces[index] if part[rank]))
                          for line, index in zip(text_lines, range(position, position + len(text_lines)))]
            alternatives.append("\n".join(translated))
        outputs.append(alternatives)
        position += len(text_lines)
    return outputs


def keep_margins(line: str, translation: str) -> str:
    """`translation` with the white space `line` begins and ends with (a blank line stays as it was)."""
    if not line.strip():
        return line if not translation else translation
    text = line.strip()
    start = line.index(text)
    return line[:start] + translation + line[start + len(text):]


def translate_alternatives(engine: TranslationEngine, texts: list[str], options: DecodingOptions | None = None,
                           batch_size: int = 64, progress: bool = False) -> list[list[str]]:
    """The `options.n_best` translations (best first) of each text, in the order of `texts`; the engine decodes
    batches of at most `batch_size` pieces of similar length."""
    options = options or DecodingOptions()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    work = plan(engine, texts, options)
    order = sorted(range(len(work.rows)), key=lambda i: len(work.rows[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if getattr(engine, "synced_gpus", False):  # every process runs as many generate calls, with work or not
        batches += [[]] * (_most_batches_of_any_process(len(batches), engine.device) - len(batches))
    results: list[list[str]] = [[] for _ in work.rows]
    for batch in _progress(batches, progress):
        if not batch:  # a process with nothing left keeps its peers company
            engine.generate([[engine.tokenizer.eos_token_id]], [1], options)
            continue
        for index, alternatives in zip(batch, engine.generate([work.rows[i] for i in batch],
                                                              [work.limits[i] for i in batch], options)):
            results[index] = alternatives
    return assemble(work, results, options.n_best)


def translate(engine: TranslationEngine, texts: list[str], options: DecodingOptions | None = None,
              batch_size: int = 64, progress: bool = False) -> list[str]:
    """The best translation of each text, in the order of `texts` (see `translate_alternatives`)."""
    return [alternatives[0] for alternatives in translate_alternatives(engine, texts, options, batch_size, progress)]


def split_to_fit(text: str, tokenizer, limit: int) -> list[str]:
    """`text` as consecutive pieces of at most `limit` tokens each (end of sequence included): whole sentences
    packed together, a sentence longer than `limit` cut between words, a word longer than that cut between
    tokens."""

    def length(piece: str) -> int:  # (verbose=False: no warning about a text longer than the model's length)
        return len(tokenizer(piece, truncation=False, verbose=False)["input_ids"])

    if length(text) <= limit:
        return [text]
    units = []
    for sentence in SENTENCE_BOUNDARY.split(text.strip()):
        if length(sentence) <= limit:
            units.append(sentence)
            continue
        for word in sentence.split():
            if length(word) <= limit:
                units.append(word)
                continue
            ids = tokenizer(word, add_special_tokens=False, verbose=False)["input_ids"]
            step = max(limit - 1, 1)  # room for the end-of-sequence token
            units += [tokenizer.decode(ids[i:i + step]) for i in range(0, len(ids), step)]
    pieces, current = [], ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if current and length(candidate) > limit:
            pieces.append(current)
            current = unit
        else:
            current = candidate
    return pieces + [current] if current else pieces


def _most_batches_of_any_process(count: int, device) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return count
    value = torch.tensor([count], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="translating", leave=False)
