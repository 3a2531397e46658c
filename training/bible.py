"""The bundled Spanish–English corpus: the Bible, verse by verse.

Source: two public-domain SWORD modules shipped by Debian, read with `pysword`:

* ``sword-text-sparv`` — Reina-Valera 1909 (module ``spaRV1909eb``, formerly ``SpaRV``), KJV versification;
* ``sword-text-web`` — World English Bible (module ``engWEB2015eb``, formerly ``WEB``), NRSVA versification.

Verses are paired by reference (``"Gen.1.1"``). The raw OSIS text is cleaned here rather than with pysword's
``clean=True``, which deletes tags without leaving a space and so glues words ("Godcreated", "bornSon"):

* footnotes (``<note>`` with everything inside), speaker labels and non-canonical titles are removed;
  canonical Psalm titles are kept, since the Spanish text carries them inside verse 1 as well;
* word-level tags (``<w lemma=...>``, ``<transChange>``, ``<q>``, ``<name>`` ...) are dropped and their words kept;
  any other tag (``<l>``, ``<div>``, ``<milestone>``, ``<chapter>`` ...) becomes a space;
* whitespace is collapsed and spaces left before closing punctuation removed;
* the Spanish module sometimes has two Strong's-tagged words with no space between them
  (``<w>Rehum</w><transChange>y</transChange><w>Baana</w>``); such a junction gets a space, except an enclitic
  pronoun after a verb (``díjo`` + ``le``) that the module itself writes joined elsewhere (``díjole``).
* anything after the end of the last book (the WEB glossary) is dropped, and so are the subscriptions the
  Reina-Valera adds after the last "Amén." of some epistles ("Escrita de Roma á los Efesios por Tichîco.").

The two Bibles number some passages differently (e.g. Job 40, Numbers 13, Jonah 2), so a reference-aligned pair is
not always a translation pair. Two cheap checks drop most such pairs: a chapter whose verse lengths match much
better after shifting the Spanish side by a few verses is dropped whole, and a pair whose character lengths differ
by more than ``MAX_LENGTH_RATIO`` is dropped.

Validation and test are whole chapters chosen by a hash of the chapter id (see `chapter_split`), so no held-out
chapter is seen in training. The prepared `DatasetDict` is cached with ``save_to_disk``.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import html
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from ..base.files import save_dataset_atomically

logger = logging.getLogger(__name__)

SOURCE_LANG = "es"
TARGET_LANG = "en"


@dataclass(frozen=True)
class SwordText:
    lang: str
    package: str
    modules: tuple[str, ...]  # module names, newest Debian name first


TEXTS = (
    SwordText("es", "sword-text-sparv", ("spaRV1909eb", "SpaRV")),
    SwordText("en", "sword-text-web", ("engWEB2015eb", "WEB")),
)
DEFAULT_SWORD_PATH = "/usr/share/sword"

# Bump when the cleaning, alignment or split rules change, so stale caches are not reused.
CACHE_VERSION = "v2"

# Shares of chapters held out, by a hash of the chapter id.
VALIDATION_PER_MILLE = 30
TEST_PER_MILLE = 30

# A Spanish/English pair whose lengths (characters) differ by more than this factor is treated as misaligned;
# the median ratio over the whole Bible is about 0.96.
MAX_LENGTH_RATIO = 2.0
# A chapter is misnumbered when shifting the Spanish side by up to MAX_SHIFT verses makes the length ratios at
# least this much more regular (mean absolute deviation of log ratio), and it was irregular to begin with.
MAX_SHIFT = 5
SHIFT_GAIN = 0.6
SHIFT_MIN_DEVIATION = 0.2


class MissingBibleError(RuntimeError):
    """The Debian SWORD packages holding the Bible texts are not installed."""


# ----------------------------------------------------------------------------------------------------------------
# Packages


def sword_paths() -> list[str]:
    """SWORD library roots to search: ``$SWORD_PATH`` (if set), then Debian's ``/usr/share/sword``."""
    paths = [p for p in os.environ.get("SWORD_PATH", "").split(os.pathsep) if p]
    return paths + [DEFAULT_SWORD_PATH]


def _module_names(root: str) -> set[str]:
    """Names of the modules configured under a SWORD root (the ``[name]`` header of each mods.d/*.conf)."""
    names = set()
    conf_dir = Path(root) / "mods.d"
    if not conf_dir.is_dir():
        return names
    for conf in conf_dir.glob("*.conf"):
        try:
            text = conf.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        names.update(re.findall(r"^\[([^\]]+)\]\s*$", text, flags=re.M))
    return names


def find_modules(paths: list[str] | None = None) -> dict[str, tuple[str, str]] | None:
    """``{lang: (sword_root, module_name)}`` for both texts, or None if either is missing."""
    found = {}
    for text in TEXTS:
        for root in paths or sword_paths():
            names = _module_names(root)
            hit = next((m for m in text.modules if m in names), None)
            if hit:
                found[text.lang] = (root, hit)
                break
        else:
            return None
    return found


def install_command() -> str:
    return "apt-get install -y " + " ".join(t.package for t in TEXTS)


# ----------------------------------------------------------------------------------------------------------------
# Markup

# Everything after the end of a book (inside the last verse of Revelation: the WEB glossary) is not Bible text.
_BOOK_END = re.compile(r'<div\b[^>]*\beID="[^"]*"[^>]*\btype="book"[^>]*>|<div\b[^>]*\btype="book"[^>]*\beID="')
# Elements removed with their content: notes, speaker labels ("Beloved" in the Song), section headings.
_DROPPED = re.compile(
    r"<(note|speaker)\b[^>]*>.*?</\1\s*>|<title\b(?![^>]*canonical=\"true\")[^>]*>.*?</title\s*>", re.S
)
# Tags around words or phrases inside running text: removed without a space (the text has its own spaces).
_INLINE = (
    "w transChange q name hi foreign seg divineName rdg catchWord reference added abbr a b i u font span sup sub"
).split()
_INLINE_TAG = re.compile(r"<\s*/?\s*(?:%s)(?=[\s/>])[^>]*>" % "|".join(_INLINE))
_ANY_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE_CLOSING = re.compile(r"\s+([,.;:!?)\]”’»])")
# ” is always a closing quote: a note between it and the preceding word leaves "word, ”next" -> "word,” next".
_MISPLACED_CLOSE_QUOTE = re.compile(r"”(?=\w)")
# Word-level elements that close and open with no whitespace between them, followed by a word.
_JUNCTION = re.compile(r"</(?:w|transChange)\s*>(?:</(?:w|transChange)\s*>)*(?:<(?:w|transChange)\b[^>]*>)+(?=(\w+))")
_ENCLITIC = re.compile(r"(?:me|te|se|nos|os|le|les|lo|los|la|las)+", re.I)


# The Reina-Valera prints the KJV subscriptions of the epistles as part of their last verse ("... Amén. Escrita de
# Roma á los Efesios por Tichîco."); they are not in the English text.
_COLOPHON = re.compile(r"(?<=Amén\.)\s+[^.]*\b(?:[Ee]scrita|[Ee]nviada)\b.*$", re.S)


def _word_before(text: str, end: int) -> str:
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return text[start:end]


def _split_junctions(text: str, joined_words: Container[str]) -> str:
    if "</w><" not in text and "</transChange><" not in text and "</w></" not in text:
        return text

    def fix(m: re.Match) -> str:
        tags, right = m.group(0), m.group(1)
        left = _word_before(m.string, m.start())
        if not left or (_ENCLITIC.fullmatch(right) and (left + right).lower() in joined_words):
            return tags
        return " " + tags

    return _JUNCTION.sub(fix, text)


def clean_osis(text: str, joined_words: Container[str] = frozenset()) -> str:
    """Plain text of one verse of OSIS markup (see the module docstring for the rules).

    joined_words: lowercase words written as one word in the module; a verb + enclitic pronoun split over two
        tags with no space is joined only if the joined form is among them (see `module_words`).
    """
    end = _BOOK_END.search(text) if 'type="book"' in text else None
    if end:
        text = text[: end.start()]
    text = _split_junctions(text, joined_words)
    text = _DROPPED.sub(" ", text)
    text = _INLINE_TAG.sub("", text)
    text = _ANY_TAG.sub(" ", text)
    text = html.unescape(text)
    text = " ".join(text.split())
    text = _SPACE_BEFORE_CLOSING.sub(r"\1", text)
    text = _MISPLACED_CLOSE_QUOTE.sub("” ", text)
    text = _COLOPHON.sub("", text)
    return text.strip()


def module_words(raw_verses) -> set[str]:
    """Lowercase words of a module's running text, counting no word across a tag junction."""
    words = set()
    for raw in raw_verses:
        text = _ANY_TAG.sub("", _JUNCTION.sub(" ", raw))
        words.update(text.lower().split())
    return {w.strip(".,;:!?¿¡()[]“”‘’'\"«»—-") for w in words}


# ----------------------------------------------------------------------------------------------------------------
# Reading


class _LazyWords:
    """A word set computed when first queried (most books never need it)."""

    def __init__(self, build):
        self._build = build
        self._words = None

    def __contains__(self, word) -> bool:
        if self._words is None:
            self._words = self._build()
        return word in self._words


def _open_bible(root: str, module: str):
    from pysword.modules import SwordModules

    modules = SwordModules(root)
    modules.parse_modules()
    bible = modules.get_bible_from_module(module)
    # pysword decompresses the whole block (a book) for every verse it reads; remember the last few blocks.
    bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    return bible


def _raw_verses(bible, books: list[str] | None = None) -> dict[str, str]:
    """``{"Gen.1.1": raw OSIS text}`` in canonical order; reads by index so that empty verses keep their place."""
    structure = bible.get_structure()
    if books is None:
        selected = [(t, b) for t, bs in structure.get_books().items() for b in bs]
    else:
        selected = [structure.find_book(name) for name in books]
    verses = {}
    for testament, book in selected:
        indices = structure.ref_to_indicies(books=book.name)[testament]
        refs = [(c, v) for c, n in enumerate(book.chapter_lengths, 1) for v in range(1, n + 1)]
        for (chapter, verse), index in zip(refs, indices, strict=True):
            verses[f"{book.osis_name}.{chapter}.{verse}"] = bible._text_for_index(testament, index) or ""
    return verses


def _chapter(verse_id: str) -> str:
    return verse_id.rsplit(".", 1)[0]


def _log_ratio(a: str, b: str) -> float:
    return math.log(len(a) / len(b))


def _shift_deviation(source: dict[str, str], target: dict[str, str], chapter: str, numbers: list[int], shift: int):
    """Mean absolute deviation from the median of log(len source / len target), source verse n+shift vs target n."""
    ratios = [
        _log_ratio(source[f"{chapter}.{n + shift}"], target[f"{chapter}.{n}"])
        for n in numbers
        if source.get(f"{chapter}.{n + shift}") and target.get(f"{chapter}.{n}")
    ]
    if len(ratios) < 3:
        return math.inf
    center = statistics.median(ratios)
    return sum(abs(r - center) for r in ratios) / len(ratios)


def _misnumbered_chapters(source: dict[str, str], target: dict[str, str], ids: list[str]) -> set[str]:
    """Chapters whose verse lengths line up much better with the source side shifted by a few verses."""
    by_chapter = collections.defaultdict(list)
    for verse_id in ids:
        by_chapter[_chapter(verse_id)].append(int(verse_id.rsplit(".", 1)[1]))
    bad = set()
    for chapter, numbers in by_chapter.items():
        if len(numbers) < 3:
            continue
        unshifted = _shift_deviation(source, target, chapter, numbers, 0)
        best = min(
            _shift_deviation(source, target, chapter, numbers, shift)
            for shift in range(-MAX_SHIFT, MAX_SHIFT + 1)
            if shift
        )
        if unshifted > SHIFT_MIN_DEVIATION and best < SHIFT_GAIN * unshifted:
            bad.add(chapter)
    return bad


def extract_verses(books: list[str] | None = None, paths: list[str] | None = None) -> list[dict]:
    """Aligned verses ``{"id": "Ruth.1.16", "translation": {"es": ..., "en": ...}}`` in canonical order.

    books: book names or OSIS ids as pysword knows them (``["Ruth"]``, ``["Gen", "John"]``); None for all.
    paths: SWORD roots to search (default `sword_paths()`); the Debian packages must be installed.
    """
    found = find_modules(paths)
    if not found:
        raise MissingBibleError(
            "SWORD modules for the Bible corpus not found; run `python -m vanilla_transformer.training.bible "
            f"--ensure-packages` or `sudo {install_command()}`"
        )
    texts = {}
    for lang, (root, module) in found.items():
        bible = _open_bible(root, module)
        raw = _raw_verses(bible, books)
        # The junction rule needs the whole module's vocabulary even when one book is extracted; built on first use.
        words = _LazyWords(
            lambda bible=bible, raw=raw: module_words((_raw_verses(bible) if books is not None else raw).values())
        )
        texts[lang] = {verse_id: clean_osis(text, words) for verse_id, text in raw.items()}
    source, target = texts[SOURCE_LANG], texts[TARGET_LANG]
    ids = [i for i in source if source[i] and target.get(i)]
    misnumbered = _misnumbered_chapters(source, target, ids)
    kept = [i for i in ids if _chapter(i) not in misnumbered]
    n_chapter_dropped = len(ids) - len(kept)
    limit = math.log(MAX_LENGTH_RATIO)
    rows = [
        {"id": i, "translation": {SOURCE_LANG: source[i], TARGET_LANG: target[i]}}
        for i in kept
        if abs(_log_ratio(source[i], target[i])) <= limit
    ]
    logger.info(
        "Bible: %d verses in both texts; dropped %d in %d misnumbered chapters (%s) and %d with lengths off by more "
        "than %.1fx; %d pairs kept",
        len(ids),
        n_chapter_dropped,
        len(misnumbered),
        ", ".join(sorted(misnumbered)) or "none",
        len(kept) - len(rows),
        MAX_LENGTH_RATIO,
        len(rows),
    )
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Splits and cache


def chapter_split(chapter_id: str) -> str:
    """``"train"``, ``"validation"`` or ``"test"`` for a chapter id such as ``"Gen.1"`` (stable hash, no RNG)."""
    bucket = int(hashlib.sha256(chapter_id.encode("utf-8")).hexdigest(), 16) % 1000
    if bucket < VALIDATION_PER_MILLE:
        return "validation"
    if bucket < VALIDATION_PER_MILLE + TEST_PER_MILLE:
        return "test"
    return "train"


def split_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped into train / validation / test by the chapter of their ``id``."""
    splits = {"train": [], "validation": [], "test": []}
    for row in rows:
        splits[chapter_split(_chapter(row["id"]))].append(row)
    return splits


def default_cache_dir() -> Path:
    """``$VANILLA_TRANSFORMER_CACHE/bible``, else ``~/.cache/vanilla_transformer/bible``."""
    root = os.environ.get("VANILLA_TRANSFORMER_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "vanilla_transformer"
    return base / "bible"


def _features():
    from datasets import Features, Translation, Value

    return Features({"id": Value("string"), "translation": Translation(languages=[SOURCE_LANG, TARGET_LANG])})


def build_dataset(rows: list[dict]):
    """A `datasets.DatasetDict` with train / validation / test from aligned rows."""
    from datasets import Dataset, DatasetDict

    features = _features()
    return DatasetDict(
        {
            name: Dataset.from_dict(
                {"id": [r["id"] for r in part], "translation": [r["translation"] for r in part]}, features=features
            )
            for name, part in split_rows(rows).items()
        }
    )


def load_bible(cache_dir: str | os.PathLike | None = None):
    """The Spanish–English Bible as a `DatasetDict` (train / validation / test), prepared once and cached.

    Rows: ``{"id": "Gen.1.1", "translation": {"es": ..., "en": ...}}``.
    cache_dir: where the prepared dataset lives (default `default_cache_dir()`).
    """
    from datasets import load_from_disk

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{SOURCE_LANG}-{TARGET_LANG}-{CACHE_VERSION}"
    if (target / "dataset_dict.json").exists():
        return load_from_disk(str(target))

    start = time.perf_counter()
    dataset = build_dataset(extract_verses(paths=list(installed_paths())))
    save_dataset_atomically(dataset, target)
    logger.info("Bible prepared in %.1f s and cached at %s", time.perf_counter() - start, target)
    return load_from_disk(str(target))


def installed_paths() -> list[str]:
    """SWORD roots holding the two modules; `MissingBibleError` naming the Debian packages when they are missing
    (installing them is the command's job: `make sword`, or `python -m vanilla_transformer.cli.bible
    --ensure-packages` as root)."""
    found = find_modules()
    if not found:
        raise MissingBibleError(
            f"The Bible corpus needs the Debian packages {' '.join(t.package for t in TEXTS)} (SWORD modules under "
            f"{DEFAULT_SWORD_PATH}). Install them with:  sudo {install_command()}  (or `make sword`)")
    return sorted({root for root, _ in found.values()})


# ----------------------------------------------------------------------------------------------------------------
