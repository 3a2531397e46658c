"""HTML fragments (LibreTranslate's `format: "html"`, as Mastodon sends its posts): the texts to translate, and the
fragment again around their translations, its markup unchanged.

Two pure steps around ordinary plain-text translation, so that the server batches an HTML request's sentences with
everyone else's and no engine knows about HTML:

    document = HtmlDocument(html)                        # BeautifulSoup with the standard library's html.parser
    document.texts                                       # plain texts: translate them as any others
    document.rebuild(translations)                       # the fragment, every text in its place

How a fragment is cut into texts. The inline content of an element (text and inline elements such as `<a>`, `<em>`,
`<span>`, up to a `<br>` or a block element) is a *run*: one text, so that a sentence crossing `<em>` is translated
as one sentence. Its inline elements are then put back as argos-translate's `translate_tags` does: each inline
element's own text is translated alone (recursively: it is a run itself), and that translation is looked for, as
whole words, in the run's translation, the elements in their source order; the words between them go to the text
between them. Where that fails (the model translated the piece differently in context, or reordered the elements),
or where something without text (an image, a comment) splits the text between two elements, the run falls back to
translating its text nodes one by one, each alone: the markup stays exact, the sentence loses its context. The
texts for that fallback are asked for up front (so a document needs one round of translation): a run with inline
elements costs about twice its text.

What is never translated, and comes back exactly as it came: `<code>`, `<pre>`, `<script>`, `<style>` and the like
(`KEPT`), anything marked `translate="no"` or `class="notranslate"`, Mastodon's mentions (`<a class="u-url
mention">`, `<span class="h-card">`) and hashtags (`<a class="mention hashtag">`), and a link whose text is a URL,
an @mention or a #hashtag. Inside a run such an element is part of the sentence the engine reads, and is found
verbatim in its translation (or the run falls back). Comments and the like are left alone; attributes are never
translated.

White space: text is sent with its white space collapsed (as a browser shows it); each text node keeps its own
leading and trailing white space (BeautifulSoup's tree writes a text node of white space only, outside `<pre>`, as
one newline or one space). Entities are decoded for translation; the output escapes `&`, `<`, `>` (and
writes `&nbsp;` back), other entities come back as the characters they stand for. A broken fragment (unclosed tags,
a stray `</div>`, a `<` in text) is read as html.parser reads it and written back well-formed; elements nested
deeper than `MAX_DEPTH` are left untranslated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import islice
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, NavigableString, Tag, XMLParsedAsHTMLWarning
from bs4.dammit import EntitySubstitution
from bs4.formatter import HTMLFormatter

from .engine import TranslationEngine
from .options import DecodingOptions
from .translate import translate

# Elements whose text is never translated.
KEPT = frozenset({"code", "pre", "script", "style", "textarea", "kbd", "samp", "var", "svg", "math", "template",
                  "noscript", "iframe", "object", "canvas", "audio", "video", "select"})
# Classes that mark what is not text: Mastodon's mentions and hashtags, Google's convention.
KEPT_CLASSES = frozenset({"mention", "hashtag", "h-card", "notranslate"})
# Phrasing elements: part of the sentence around them (anything else, and <br>, ends a run).
INLINE = frozenset({"a", "abbr", "acronym", "b", "bdi", "bdo", "big", "button", "cite", "code", "data", "del", "dfn",
                    "em", "font", "i", "img", "input", "ins", "kbd", "label", "mark", "meter", "output", "progress",
                    "q", "ruby", "rp", "rt", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time",
                    "tt", "u", "var", "wbr", "select", "textarea", "svg", "math", "canvas", "audio", "video",
                    "object", "iframe"})
WHITESPACE = " \t\n\r\f"  # HTML's white space (ASCII only: a no-break space is text)
SPACES = str.maketrans(WHITESPACE, " " * len(WHITESPACE))
MAX_DEPTH = 100  # deeper elements are left as they are (a walk this deep is no text anyone reads)


def _escape(text: str) -> str:
    """The minimal escaping (&, <, >) and &nbsp; written back as an entity (invisible otherwise)."""
    return EntitySubstitution.substitute_xml(text).replace("\xa0", "&nbsp;")


class _SourceOrder(HTMLFormatter):
    """HTML as it came: attributes in their source order (bs4 sorts them by default), `<br>` not `<br/>`."""

    def attributes(self, tag: Tag):
        return list(tag.attrs.items()) if tag.attrs else []


FORMATTER = _SourceOrder(entity_substitution=_escape, void_element_close_prefix=None)


class HtmlDocument:
    """An HTML fragment: `texts` to translate, and `rebuild(translations)` (pure: call it as often as you like)."""

    def __init__(self, html: str):
        self.html = html
        self.texts = _Fragment(html).texts.items

    def rebuild(self, translations: list[str]) -> str:
        """The fragment with `translations[i]` (of `texts[i]`) in place of its text, the markup unchanged."""
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(translations)} translations for {len(self.texts)} texts")
        fragment = _Fragment(self.html)  # parsed again: the same walk gives the same runs
        for run in fragment.runs:
            run.apply(translations)
        return fragment.soup.decode(formatter=FORMATTER)


class HtmlBatch:
    """Several fragments as one list of texts (each text once), for one call of a translator."""

    def __init__(self, htmls: list[str]):
        self.documents = [HtmlDocument(html) for html in htmls]
        self.texts: list[str] = list(dict.fromkeys(text for document in self.documents for text in document.texts))

    def rebuild(self, translations: list[str]) -> list[str]:
        """Each fragment with its texts' translations (`translations[i]` of `texts[i]`)."""
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(translations)} translations for {len(self.texts)} texts")
        translated = dict(zip(self.texts, translations))
        return [document.rebuild([translated[text] for text in document.texts]) for document in self.documents]

    def rebuild_alternatives(self, alternatives: list[list[str]], n_best: int) -> list[list[str]]:
        """Each fragment's `n_best` translations from each text's (`alternatives[i][r]`: rank r of `texts[i]`):
        rank r of a fragment has its texts' rank r."""
        by_rank = [self.rebuild([texts[rank] for texts in alternatives]) for rank in range(n_best)]
        return [list(fragment) for fragment in zip(*by_rank)]


def translate_html(engine: TranslationEngine, htmls: list[str], options: DecodingOptions | None = None,
                   batch_size: int = 64, progress: bool = False) -> list[str]:
    """The translation of each HTML fragment (`translation.translate` on their texts, see the module docstring)."""
    batch = HtmlBatch(htmls)
    return batch.rebuild(translate(engine, batch.texts, options, batch_size, progress))


# ---------------------------------------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------------------------------------


class _Texts:
    """The texts of one document, each once, in order of appearance."""

    def __init__(self):
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.items)
            self.items.append(text)
        return self.index[text]


class _Fragment:
    """A parsed fragment and its runs (the outermost ones: inline elements' runs hang from theirs)."""

    def __init__(self, html: str):
        with warnings.catch_warnings():  # a fragment that looks like a URL or like XML is still HTML to us
            warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
            warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
            self.soup = BeautifulSoup(html, "html.parser")
        self.breaking = _breaking(self.soup)
        self.texts, self.runs = _Texts(), []
        self.collect(self.soup)

    def collect(self, container: Tag) -> None:
        """The runs of `container`'s content: consecutive inline nodes; block elements are walked in turn.
        Iterative (a stack of containers), so that deep nesting costs no recursion."""
        stack = [(container, 0)]
        while stack:
            element, depth = stack.pop()
            nodes: list = []
            for node in element.contents:
                if not (isinstance(node, Tag) and id(node) in self.breaking):
                    nodes.append(node)
                    continue
                self.add_run(nodes, depth)
                nodes = []
                if not _kept(node) and depth < MAX_DEPTH:
                    stack.append((node, depth + 1))
            self.add_run(nodes, depth)

    def add_run(self, nodes: list, depth: int) -> None:
        run = _Run.of(nodes, self.texts, depth)
        if run.whole is not None:
            self.runs.append(run)


@dataclass
class _Run:
    """Consecutive inline nodes, translated as one text (`whole`); `parts` say where its translation goes."""

    whole: int | None  # the index of its text; None: nothing to translate
    raw: str  # its text as it is in the source
    parts: list = field(default_factory=list)  # [kind, node, detail] in source order, see `of`

    @classmethod
    def of(cls, nodes: list, texts: _Texts, depth: int) -> _Run:
        """Parts: ["text", node, own text index or None], ["inline", element, its _Run], ["kept", element, its
        collapsed text], ["other", node, None]: comments, elements without text."""
        parts, raw = [], []
        for node in nodes:
            if type(node) is NavigableString:  # (subclasses are comments, doctypes, CDATA...: not text)
                parts.append(["text", node, None])
                raw.append(str(node))
                continue
            if not isinstance(node, Tag):
                parts.append(["other", node, None])
                continue
            kept = _kept(node) or _address_link(node) or depth >= MAX_DEPTH
            inner = None if kept else cls.of(node.contents, texts, depth + 1)
            text = inner.raw if inner is not None else node.get_text()  # (each subtree's text read once)
            raw.append(text)
            if inner is not None and inner.whole is not None:
                parts.append(["inline", node, inner])
            else:
                parts.append(["kept" if text.strip() else "other", node, _collapsed(text)])
        raw = "".join(raw)
        if not any(kind == "inline" or (kind == "text" and node.strip()) for kind, node, _ in parts):
            return cls(None, raw, parts)  # nothing but kept text and white space
        whole = texts.add(_collapsed(raw))
        if _needs_fallback_texts(parts):  # the fallback's texts: each text node alone
            for part in parts:
                if part[0] == "text" and part[1].strip():
                    part[2] = texts.add(_collapsed(part[1]))
        return cls(whole, raw, parts)

    def expected(self, translations: list[str]) -> str:
        return translations[self.whole].strip()

    def apply(self, translations: list[str]) -> None:
        """Puts the translations in place (the nodes are replaced in the soup)."""
        for kind, _, inner in self.parts:
            if kind == "inline":
                inner.apply(translations)  # an inline element reads as its text translated alone
        groups: list[list] = [[]]  # the text nodes before the first element, between elements, after the last
        elements = []
        for kind, node, _ in self.parts:
            if kind in ("inline", "kept"):
                groups.append([])
                elements.append(node)
            elif kind == "text":
                groups[-1].append(node)
        gaps = self.match(translations)
        if gaps is None or any(sum(1 for node in group if node.strip()) > 1 for group in groups):
            # fallback: every text node alone (also where an image or a comment splits the text between elements)
            for kind, node, own in self.parts:
                if kind == "text" and own is not None:
                    node.replace_with(_dressed(str(node), translations[own]))
            return
        for index, (gap, nodes) in enumerate(zip(gaps, groups)):
            self.place(gap, nodes, elements[index - 1] if index else None, elements[0] if elements else None)

    def match(self, translations: list[str]) -> list[str] | None:
        """The run's translation cut around its elements' (found as whole words, in source order): the text before
        the first, between them, after the last; None when one is not found."""
        whole, position, gaps = translations[self.whole].strip(), 0, []
        for kind, _, detail in self.parts:
            if kind not in ("inline", "kept"):
                continue
            expected = detail.expected(translations) if kind == "inline" else detail
            found = _find_words(whole, expected, position)
            if found < 0:
                return None
            gaps.append(whole[position:found])
            position = found + len(expected)
        gaps.append(whole[position:])
        return gaps

    @staticmethod
    def place(gap: str, nodes: list, after: Tag | None, first: Tag | None) -> None:
        """`gap` in the text node that has text (there is one at most); where only white space separated the
        elements, the gap as it is; where nothing did, a new text node after `after` (before `first` for the text
        before the elements): no markup changes."""
        holder = next((node for node in nodes if node.strip()), nodes[0] if nodes else None)
        if holder is not None and holder.strip():
            holder.replace_with(_dressed(str(holder), gap))
        elif holder is not None and gap.strip():
            holder.replace_with(gap)
        elif gap.strip() and after is not None:
            after.insert_after(gap)
        elif gap.strip():
            first.insert_before(gap)


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------


def _needs_fallback_texts(parts: list) -> bool:
    """Whether a run may fall back to its text nodes alone: it has elements with text, or text nodes that
    something else (an image, a comment) splits."""
    if any(kind in ("inline", "kept") for kind, _, _ in parts):
        return True
    return sum(1 for kind, node, _ in parts if kind == "text" and node.strip()) > 1


def _kept(element: Tag) -> bool:
    """Whether `element`'s text stays as it is, from its name and attributes (see the module docstring; a link
    whose text is an address is found by `_Run.of`)."""
    if element.name in KEPT or str(element.get("translate", "")).strip().lower() == "no":
        return True
    return bool(KEPT_CLASSES.intersection(element.get_attribute_list("class")))


def _address_link(element: Tag) -> bool:
    """A link whose text is a URL, an @mention or a #hashtag (a few nodes at most: Mastodon's links are spans)."""
    if element.name != "a":
        return False
    nodes = list(islice(element.descendants, 33))
    return len(nodes) <= 32 and _looks_like_address("".join(n for n in nodes if type(n) is NavigableString).strip())


def _looks_like_address(text: str) -> bool:
    """A URL, an @mention or a #hashtag: one word, not something to translate."""
    if not text or any(character.isspace() for character in text):
        return False
    if text[0] in "@#" and len(text) > 1:
        return True
    parts = urlsplit(text)
    return parts.scheme in ("http", "https", "ftp", "mailto") and bool(parts.netloc or parts.path)


def _breaking(soup: BeautifulSoup) -> set[int]:
    """The ids of the elements that end a run: blocks, <br>, and inline elements holding one of those. One pass
    from the last node back (an element's descendants come after it in document order)."""
    breaking: set[int] = set()
    for node in reversed(list(soup.descendants)):
        if isinstance(node, Tag) and (node.name not in INLINE or id(node) in breaking):
            breaking.add(id(node))
            if node.parent is not None:
                breaking.add(id(node.parent))
    return breaking


def _collapsed(text: str) -> str:
    """`text` as a browser shows it: runs of HTML white space as one space (a no-break space is not one)."""
    return " ".join(word for word in text.translate(SPACES).split(" ") if word)


def _dressed(source: str, translation: str) -> str:
    """`translation` with `source`'s leading and trailing white space (a blank source stays as it is)."""
    if not source.strip(WHITESPACE):
        return source
    lead = len(source) - len(source.lstrip(WHITESPACE))
    trail = len(source) - len(source.rstrip(WHITESPACE))
    return source[:lead] + translation.strip(WHITESPACE) + source[len(source) - trail:]


def _find_words(text: str, words: str, start: int) -> int:
    """Where `words` occurs in `text` from `start`, not inside a longer word; -1 when nowhere (or `words` is
    empty)."""
    if not words:
        return -1
    found = text.find(words, start)
    while found >= 0:
        before_ok = found == 0 or not (words[0].isalnum() and text[found - 1].isalnum())
        end = found + len(words)
        after_ok = end == len(text) or not (words[-1].isalnum() and text[end].isalnum())
        if before_ok and after_ok:
            return found
        found = text.find(words, found + 1)
    return -1
