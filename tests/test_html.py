"""HTML requests (#28): `translation.markup` finds the texts of an HTML fragment and puts their translations back, the
markup unchanged; the server answers `format: "html"` (Mastodon's LibreTranslate client), and so does `translate
--format html`.

A fake engine whose translation is a plain function of the text (upper-cased, words reversed, unchanged) shows where
each piece of text lands and what the engine was asked; the tiny model of the server tests shows the real path (its
answers equal the offline `translate_html` of the same fragments). Markup is compared as a skeleton: every element's
depth, name and attributes, in document order.
"""

import threading

import pytest
from bs4 import BeautifulSoup
from support.serving import Server, served_model  # noqa: F401  (served_model: a pytest fixture)

from vanilla_transformer.translation import (DecodingOptions, HtmlBatch, HtmlDocument, TransformersEngine,
                                             translate_html)
from vanilla_transformer.translation.markup import FORMATTER

MENTION = '<a href="https://x.example/@ana" class="u-url mention">@<span>ana</span></a>'
HASHTAG = '<a href="https://x.example/tags/libre" class="mention hashtag" rel="tag">#<span>libre</span></a>'
LINK = ('<a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="nofollow noopener"><span class="invisible">'
        'https://</span><span class="ellipsis">example.com/a</span><span class="invisible">?b=1&amp;c=2</span></a>')
MASTODON = [f"<p>Hola {MENTION}, ¿qué tal? 🙂</p>",
            f'<p>Mira {LINK} y <span class="h-card" translate="no">{MENTION}</span> {HASHTAG}</p>'
            "<p>Usa <code>ls -la &lt;dir&gt;</code> hoy.<br />Adiós &amp; gracias</p>"]
BROKEN = ["<div>sin cerrar <b>negrita <p>párrafo", "texto </div> suelto</span>", "a < b y c > d", "<p>uno <p>dos",
          "<a href='x'>enlace <i>roto</a> fin</i>", "<<>>", "</p>", "<p title='sin cierre>texto</p>", "&amp &bogus; x",
          "<!-- abierto", "<script>if (a < b) {</script>"]
KEPT = "a.mention, a.hashtag, span.h-card, code, pre, script, style, a[target]"


def skeleton(html: str) -> list:
    """(depth, name, attributes) of every element, in document order: the markup without its text."""
    soup = BeautifulSoup(html, "html.parser")
    depth, shape = {id(soup): 0}, []
    for tag in soup.find_all(True):  # (document order: a parent before its children)
        depth[id(tag)] = depth[id(tag.parent)] + 1
        shape.append((depth[id(tag)], tag.name, tag.attrs))
    return shape


def kept(html: str) -> list[str]:
    """The elements that must come back exactly (mentions, hashtags, URLs, code), as html.parser writes them."""
    return [str(tag) for tag in BeautifulSoup(html, "html.parser").select(KEPT)]


class CharacterTokenizer:
    """One id per character (0: end of sequence): what `translation.plan` needs of a tokenizer."""

    eos_token_id = 0

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[ord(character) for character in text] + [0] for text in texts]}


class FakeEngine:
    """A `TranslationEngine` whose translation of a text is `change(text)` (rank r of n_best: r "!" appended); it
    records the texts it was asked to translate."""

    name, source_limit = "fake", None

    def __init__(self, change):
        self.change, self.received = change, []
        self.tokenizer, self.tokenizer_lock = CharacterTokenizer(), threading.Lock()

    def new_token_limit(self, source_length):
        return source_length + 50

    def unsupported(self, options):
        return None

    def generate(self, rows, limits, options):
        texts = ["".join(map(chr, row[:-1])) for row in rows]
        self.received += texts
        return [[self.change(text) + " !" * rank for rank in range(options.n_best)] for text in texts]


def upper(text: str) -> str:
    return text.upper()


def reverse_words(text: str) -> str:
    return " ".join(reversed(text.split()))


def unchanged(text: str) -> str:
    return text


# ---------------------------------------------------------------------------------------------------------------------
# translation.markup with a fake engine
# ---------------------------------------------------------------------------------------------------------------------


def test_a_mastodon_post_keeps_its_markup_mentions_hashtags_links_and_code():
    engine = FakeEngine(upper)
    answers = translate_html(engine, MASTODON)
    for html, answer in zip(MASTODON, answers):
        assert skeleton(answer) == skeleton(html)
        assert kept(answer) == kept(html) and kept(html)
    assert answers[0] == f"<p>HOLA {MENTION}, ¿QUÉ TAL? 🙂</p>"
    second = BeautifulSoup(answers[1], "html.parser")
    assert second.find_all("p")[1].contents[0] == "USA "
    assert second.find_all("p")[1].contents[2:] == [" HOY.", second.find("br"), "ADIÓS & GRACIAS"]
    assert "&amp;c=2" in answers[1] and "ls -la &lt;dir&gt;" in answers[1]  # entities written back
    assert {"Adiós & gracias", "Usa ls -la <dir> hoy."} <= set(engine.received)  # entities decoded for the engine
    assert not any(text.startswith(("ls", "@", "#", "https")) or "&amp;" in text for text in engine.received)


def test_a_sentence_crossing_an_inline_element_is_one_text_and_the_element_lands_on_its_words():
    """argos-translate's way: the block's whole text, and the element's own translation found in it."""
    engine = FakeEngine(reverse_words)
    html = "<p>Read <em>this good book</em> today.</p>"
    assert translate_html(engine, [html]) == ["<p>today. <em>book good this</em> Read</p>"]
    assert "Read this good book today." in engine.received


def test_the_sentence_around_a_mention_is_one_text_and_the_mention_is_found_verbatim():
    engine = FakeEngine(reverse_words)
    assert translate_html(engine, [MASTODON[0]]) == [f"<p>🙂 tal? ¿qué {MENTION}, Hola</p>"]
    assert "Hola @ana, ¿qué tal? 🙂" in engine.received


def test_elements_the_translation_reorders_fall_back_to_each_text_node_alone():
    """Reversed words swap <b> and <i>: the markup stays in its order, each piece translated alone."""
    engine = FakeEngine(reverse_words)
    assert translate_html(engine, ["<p><b>one two</b> and <i>three four</i></p>"]) == \
        ["<p><b>two one</b> and <i>four three</i></p>"]
    assert "one two and three four" in engine.received  # the whole sentence was tried first


def test_a_mention_the_engine_changes_falls_back_to_the_text_around_it():
    """The upper-case engine writes @ANA: not the mention; the text nodes are translated alone, the mention kept."""
    assert translate_html(FakeEngine(upper), [f"<p>hi {MENTION} there</p>"]) == [f"<p>HI {MENTION} THERE</p>"]


def test_an_unchanged_translation_gives_the_fragment_back_exactly():
    """White space at the ends of text nodes, entities, attributes in their order, <br>, comments, <pre>."""
    html = ('<div class="post" data-x="a &amp; b">\n<p>  Tom &amp; Jerry&nbsp;<b>run</b> &lt;fast&gt;, très <i>vite'
            '</i>!\n</p><!-- note --><pre>  keep\n   this </pre>\n<p>one<br>two <img src="a.png" alt="🙂"> three '
            '<b>in</b> <!-- c --> four</p>\n</div>')
    engine = FakeEngine(unchanged)
    assert translate_html(engine, [html]) == [html]
    assert "Tom & Jerry\xa0run <fast>, très vite!" in engine.received  # (collapsed white space, decoded entities)
    assert not any("keep" in text or "note" in text for text in engine.received)
    assert {"two three in four", "two", "three", "four"} <= set(engine.received)  # split by <img>: text nodes alone


def test_white_space_at_the_ends_of_text_nodes_stays_as_in_the_source():
    html = "<p>\n   Hola   <b> mundo </b>\t y\n</p>"
    assert translate_html(FakeEngine(upper), [html]) == ["<p>\n   HOLA   <b> MUNDO </b>\t Y\n</p>"]


def test_translate_no_and_notranslate_are_kept_and_attributes_never_translated():
    html = '<p title="hola">uno <span translate="no">dos</span> <span class="notranslate">tres</span> cuatro</p>'
    assert translate_html(FakeEngine(upper), [html]) == \
        ['<p title="hola">UNO <span translate="no">dos</span> <span class="notranslate">tres</span> CUATRO</p>']


@pytest.mark.parametrize("html", BROKEN)
def test_a_broken_fragment_is_answered_well_formed(html):
    """Read as html.parser reads it; the answer has that markup, every element closed, a < in text written &lt;
    (read back, it is written the same)."""
    engine = FakeEngine(upper)
    answer = translate_html(engine, [html])[0]
    assert skeleton(answer) == skeleton(html)
    assert BeautifulSoup(answer, "html.parser").decode(formatter=FORMATTER) == answer


def test_deep_nesting_is_answered_not_a_recursion_error():
    html = "<b>" * 2000 + "x" + "<div>" * 2000 + "y"  # deeper than Python's recursion limit
    answer = translate_html(FakeEngine(upper), [html])[0]
    assert skeleton(answer) == skeleton(html)


def test_a_batch_sends_each_text_once_and_rebuild_is_pure():
    batch = HtmlBatch(["<p>uno</p>", "<p><b>uno</b></p>", "<p>dos</p>"])
    assert batch.texts == ["uno", "dos"]
    assert batch.rebuild(["ONE", "TWO"]) == ["<p>ONE</p>", "<p><b>ONE</b></p>", "<p>TWO</p>"]
    assert batch.rebuild(["ONE", "TWO"]) == batch.rebuild(["ONE", "TWO"])
    assert batch.rebuild_alternatives([["1", "one"], ["2", "two"]], 2) == \
        [["<p>1</p>", "<p>one</p>"], ["<p><b>1</b></p>", "<p><b>one</b></p>"], ["<p>2</p>", "<p>two</p>"]]
    with pytest.raises(ValueError, match="1 translations for 2 texts"):
        batch.rebuild(["ONE"])
    assert HtmlDocument("<br><img src=x>").texts == []


# ---------------------------------------------------------------------------------------------------------------------
# The server: the application with the fake engine (what the engine was asked), then a real server with a tiny model
# ---------------------------------------------------------------------------------------------------------------------


def test_mastodons_request_reaches_the_engine_as_whole_sentences():
    from starlette.testclient import TestClient

    from vanilla_transformer.deployment.server.app import create_app

    engine = FakeEngine(reverse_words)
    body = {"q": MASTODON, "source": "auto", "target": "en", "format": "html", "api_key": "k"}
    with TestClient(create_app(engine)) as client:
        answer = client.post("/translate", json=body)
        native = client.post("/v1/translate", json={"text": MASTODON[0], "format": "html", "n_best": 2})
        wrong = client.post("/translate", json={**body, "format": "xml"})
    assert answer.status_code == 200
    assert answer.json() == {"translatedText": translate_html(FakeEngine(reverse_words), MASTODON)}
    assert "Hola @ana, ¿qué tal? 🙂" in engine.received
    assert native.json()["translations"] == f"<p>🙂 tal? ¿qué {MENTION}, Hola</p>"
    assert [skeleton(html) for html in native.json()["alternatives"]] == [skeleton(MASTODON[0])] * 2
    assert wrong.status_code == 400 and "use 'text' or 'html'" in wrong.json()["error"]


@pytest.fixture(scope="module")
def server(served_model):
    folder, _, _, _ = served_model
    server = Server(folder, "--max_wait_ms", "20")
    yield server
    assert server.stop() == 0


def toy(html: str) -> str:
    """A fragment in the toy model's words (w0..w15)."""
    for word, toy_word in (("Hola", "w1 w2"), ("¿qué tal?", "w3 w4 w5"), ("Mira", "w6"), (" y ", " w7 "),
                           ("Usa", "w8 w9"), ("hoy.", "w10"), ("Adiós", "w11"), ("gracias", "w12 w13")):
        html = html.replace(word, toy_word)
    return html


def test_the_server_answers_mastodons_request_as_translate_html_offline(server, served_model):
    _, _, model, tokenizer = served_model
    fragments = [toy(html) for html in MASTODON]
    status, answer, _ = server.call("/translate", {"q": fragments, "source": "es", "target": "en", "format": "html",
                                                   "api_key": "ignored"})
    assert status == 200, answer
    assert answer["translatedText"] == translate_html(TransformersEngine(model, tokenizer), fragments)
    for html, translated in zip(fragments, answer["translatedText"]):
        assert skeleton(translated) == skeleton(html) and kept(translated) == kept(html)
    single = server.call("/translate", {"q": fragments[0], "source": "es", "target": "en", "format": "html"})[1]
    assert single["translatedText"] == answer["translatedText"][0]


def test_the_server_answers_broken_html_with_200_and_the_markup_as_read(server):
    status, answer, _ = server.call("/translate", {"q": [toy(html) for html in BROKEN], "target": "en",
                                                   "format": "html"})
    assert status == 200, answer
    assert [skeleton(html) for html in answer["translatedText"]] == [skeleton(toy(html)) for html in BROKEN]


def test_the_native_endpoint_takes_html_with_n_best(server, served_model):
    _, _, model, tokenizer = served_model
    fragment = toy(MASTODON[1])
    status, answer, _ = server.call("/v1/translate", {"text": [fragment], "format": "html", "n_best": 2})
    assert status == 200, answer
    options = DecodingOptions(n_best=2)
    assert answer["translations"] == translate_html(TransformersEngine(model, tokenizer), [fragment], options)
    assert [skeleton(html) for html in answer["alternatives"][0]] == [skeleton(fragment)] * 2


def test_translate_format_html_prints_one_fragment_per_line(served_model, capsys):
    from vanilla_transformer.cli import main as cli

    folder, _, model, tokenizer = served_model
    fragments = [toy(html) for html in MASTODON]
    assert cli.main(["translate", str(folder), *fragments, "--format", "html", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == translate_html(TransformersEngine(model, tokenizer), fragments)
