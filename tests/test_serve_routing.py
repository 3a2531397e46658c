"""Several models in one server, `source: "auto"` and `/detect`, API keys and quotas (#28), as Mastodon uses them.

The server holds two tiny models: es→en (the trained toy model of the server tests, whose card says es→en) and en→es
(a random model with no card, given its pair as `DIR=en:es`). Requests are built exactly as Mastodon's client
(app/lib/translation_service/libre_translate.rb) builds them: `POST /translate` with JSON `{"q": [html, ...],
"source": "es" or "auto", "target": "en", "format": "html", "api_key": ...}`, reading `translatedText` (a list)
and `detectedLanguage[i].language`; `GET /languages`. Which model answered is shown by comparing each answer with
that model's own offline `translate_html` (the two models answer differently). The posts are real Spanish and
English sentences (what py3langid identifies) with a few of the toy models' words.
"""

import json
import os
import re
import select

import pytest
import torch
from support.commands import command, error_line
from support.serving import SHAPE, Server, served_model  # noqa: F401  (served_model: a pytest fixture)
from support.toy_task import word_tokenizer
from test_html import skeleton

from vanilla_transformer.configuration.configuration_vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.deployment.server.defaults import choose_workers
from vanilla_transformer.deployment.server.keys import Quotas, RequestError
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.translation import TransformersEngine, translate, translate_html

KEY, SLOW_KEY = "mastodon-3f9a1c77e2", "slow-88b2d0c4aa"
MENTION = '<a href="https://x.example/@ana" class="u-url mention">@<span>ana</span></a>'
SPANISH = [f"<p>Hola {MENTION}, ¿qué tal estás? Mañana vamos a la playa con mis hermanos. w3 w1 w4</p>",
           "<p>Esta semana he leído un libro muy bueno sobre la historia de <em>España</em>. w7 w2</p>"]
ENGLISH = [f"<p>Hello {MENTION}, how are you doing? Tomorrow we are going to the beach with my brothers. w5 w2 w6</p>",
           "<p>This week I read a very good book about the history of <em>England</em>. w9 w8</p>"]


@pytest.fixture(scope="module")
def models(served_model, tmp_path_factory):
    """{pair: (folder, engine)}: es→en from the card, en→es a random model without one."""
    es_folder, _, es_model, tokenizer = served_model
    torch.manual_seed(3)
    en_model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**SHAPE)).eval()
    en_folder = tmp_path_factory.mktemp("routing") / "en-es"
    en_model.save_pretrained(en_folder)
    word_tokenizer().save_pretrained(en_folder)
    return {"es-en": (es_folder, TransformersEngine(es_model, tokenizer)),
            "en-es": (en_folder, TransformersEngine(en_model, word_tokenizer()))}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps({KEY: 1000, SLOW_KEY: 2}))
    return path


@pytest.fixture(scope="module")
def server(models, keys_file):
    """Two models, keys required; the access log on (--log_level debug) to show that keys stay out of it."""
    server = Server(models["es-en"][0], f"{models['en-es'][0]}=en:es", "--api_keys", keys_file, "--max_wait_ms", "20",
                    log_level="debug")
    yield server
    assert server.stop() == 0


def mastodon(server, q, source, target, key=KEY):
    """Mastodon's request (libre_translate.rb): JSON, format html, the key in the body."""
    return server.call("/translate", {"q": q, "source": source, "target": target, "format": "html", "api_key": key})


def test_mastodons_request_goes_to_the_model_of_its_pair_and_keeps_the_markup(server, models):
    es_en, en_es = models["es-en"][1], models["en-es"][1]
    assert translate_html(es_en, ENGLISH) != translate_html(en_es, ENGLISH)  # the models answer differently
    for q, source, target, engine in ((SPANISH, "es", "en", es_en), (ENGLISH, "en", "es", en_es)):
        status, answer, _ = mastodon(server, q, source, target)
        assert status == 200, answer
        assert answer == {"translatedText": translate_html(engine, q)}
        assert [skeleton(html) for html in answer["translatedText"]] == [skeleton(html) for html in q]
    status, languages, _ = server.call("/languages")
    assert status == 200
    assert languages == [{"code": "en", "name": "en", "targets": ["es"]}, {"code": "es", "name": "es", "targets": ["en"]}]


def test_auto_identifies_each_post_and_chooses_its_pair(server, models):
    """A list mixing a Spanish and an English post: each identified on its text (not its markup); the Spanish one
    goes to es→en, the English one is already English and comes back unchanged (as LibreTranslate's)."""
    es_en, en_es = models["es-en"][1], models["en-es"][1]
    status, answer, _ = mastodon(server, [SPANISH[0], ENGLISH[0]], "auto", "en")
    assert status == 200, answer
    assert answer["translatedText"] == [translate_html(es_en, [SPANISH[0]])[0], ENGLISH[0]]
    assert [found["language"] for found in answer["detectedLanguage"]] == ["es", "en"]
    assert all(50 < found["confidence"] <= 100 for found in answer["detectedLanguage"])
    status, answer, _ = mastodon(server, ENGLISH[1], "auto", "es")  # one string: one detectedLanguage
    assert status == 200, answer
    assert answer["translatedText"] == translate_html(en_es, [ENGLISH[1]])[0]
    assert answer["detectedLanguage"]["language"] == "en"
    # the native endpoint routes the same way
    status, answer, _ = server.call("/v1/translate", {"text": [ENGLISH[1], SPANISH[1]], "source": "auto",
                                                      "target": "es", "format": "html", "api_key": KEY})
    assert status == 200, answer
    assert answer["translations"] == [translate_html(en_es, [ENGLISH[1]])[0], SPANISH[1]]
    status, answer, _ = server.call("/v1/translate", {"text": "w1 w2 w3", "source": "es", "target": "en",
                                                      "api_key": KEY})
    assert answer == {"translations": translate(es_en, ["w1 w2 w3"])[0]}


def test_an_unknown_pair_is_400_naming_the_pairs_served(server):
    for body in ({"q": "w1", "source": "es", "target": "fr"}, {"q": "w1", "source": "de", "target": "en"},
                 {"q": "w1", "source": "es"}):
        status, answer, _ = server.call("/translate", {**body, "api_key": KEY})
        assert status == 400 and "es→en" in answer["error"] and "en→es" in answer["error"], answer
    assert "unsupported language pair es→fr" in server.call("/translate", {"q": "w1", "source": "es", "target": "fr",
                                                                           "api_key": KEY})[1]["error"]


def test_detect_answers_libretranslates_shape_among_the_servers_sources(server):
    status, answer, _ = server.call("/detect", {"q": re.sub("<[^>]+>", "", SPANISH[1]), "api_key": KEY})
    assert status == 200, answer
    assert [found["language"] for found in answer] == ["es", "en"]
    assert answer[0]["confidence"] >= answer[1]["confidence"] >= 0
    assert abs(sum(found["confidence"] for found in answer) - 100) < 0.1
    status, answer, _ = server.call("/detect", f"q=Good+morning+to+everyone+in+this+room&api_key={KEY}".encode(),
                                    "application/x-www-form-urlencoded")
    assert status == 200 and answer[0]["language"] == "en", answer


def test_keys_missing_unknown_and_over_their_rate(server):
    for body in ({"q": SPANISH[0], "source": "es", "target": "en"}, {"q": "w1", "source": "es", "target": "en",
                                                                      "api_key": "not-a-key"}):
        for path in ("/translate", "/detect"):
            status, answer, _ = server.call(path, body)
            assert status == 403 and "error" in answer, answer
    assert server.call("/v1/translate", {"text": "w1", "source": "es", "target": "en"})[0] == 403
    assert "needs an API key" in server.call("/translate", {"q": "w1", "target": "en"})[1]["error"]
    for path in ("/languages", "/health", "/metrics"):  # no key needed
        assert server.call(path)[0] == 200
    # SLOW_KEY may make 2 requests a minute
    for _ in range(2):
        assert server.call("/detect", {"q": "w1", "api_key": SLOW_KEY})[0] == 200
    status, answer, headers = server.call("/translate", {"q": "w1", "source": "es", "target": "en",
                                                         "api_key": SLOW_KEY})
    assert status == 429 and "2 a minute" in answer["error"], answer
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert server.call("/detect", {"q": "w1", "api_key": KEY})[0] == 200  # another key is not held back


def test_keys_never_reach_the_log_or_the_metrics(server):
    assert server.call(f"/detect?api_key={KEY}", {"q": "w1 w2"})[0] == 200  # a key in the URL's query counts too
    mastodon(server, SPANISH, "es", "en")
    metrics = server.call("/metrics")[1]["text"]
    log = server.log() + printed(server)  # (uvicorn's access log goes to stdout)
    assert "POST /detect?api_key=[redacted]" in log  # (the access log is on)
    for key in (KEY, SLOW_KEY, "not-a-key"):
        assert key not in log and key not in metrics


def printed(server) -> str:
    """What the server has written to stdout since its first line."""
    chunks = []
    while select.select([server.process.stdout], [], [], 2)[0]:
        chunk = os.read(server.process.stdout.fileno(), 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_health_and_metrics_per_model(server):
    mastodon(server, SPANISH[:1], "es", "en")
    mastodon(server, ENGLISH[:1], "en", "es")
    status, answer, _ = server.call("/health")
    assert status == 200 and answer["status"] == "ok"
    assert [(model["source_lang"], model["target_lang"], model["status"]) for model in answer["models"]] == \
        [("es", "en", "ok"), ("en", "es", "ok")]
    assert answer["models"][0]["model"] == "vanilla-transformer-es-en" and answer["models"][1]["model"] == "en-es"
    for pair in ("es-en", "en-es"):
        assert server.metric(f'translation_sentences_total{{model="{pair}"}}') > 0
        assert server.metric(f'translation_batch_size_count{{model="{pair}"}}') > 0


def test_a_sliding_minute_per_key():
    now = [0.0]
    quotas = Quotas({"k": 2}, clock=lambda: now[0])
    quotas.admit("k")
    now[0] = 30.0
    quotas.admit("k")
    now[0] = 45.0
    with pytest.raises(RequestError) as refused:
        quotas.admit("k")
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "15"}
    now[0] = 60.5  # the first request has left the window
    quotas.admit("k")
    with pytest.raises(RequestError) as refused:
        quotas.admit("k")
    assert refused.value.headers == {"Retry-After": "30"}
    for key in (None, "", "other", 5):
        with pytest.raises(RequestError) as refused:
            quotas.admit(key)
        assert refused.value.status == 403


def test_workers_auto_shares_the_cpus_among_the_models():
    alone, shared = choose_workers(16, 24_000_000), choose_workers(16, 24_000_000, models=2)
    assert (alone.workers, alone.threads) == (8, 2) and (shared.workers, shared.threads) == (8, 1)
    assert "shared by 2 models: 8 each" in shared.reason


@pytest.mark.parametrize("arguments, message", [
    (["{es}", "{es}"], "both translate es→en: serve one model per language pair"),
    (["{es}", "{en}"], "{en}: its language pair is unknown (its model card names none): write {en}=SOURCE:TARGET"),
    (["{es}", "{en}=en:es", "--source_lang", "es"], "with several models, write DIR=SOURCE:TARGET"),
    (["{es}", "{en}=en"], "write DIR=SOURCE:TARGET"),
    (["{es}", "--api_keys", "{bad_keys}"], "--api_keys {bad_keys}: key number 1 has 0 requests per minute"),
    (["{es}", "--api_keys", "{tmp}/missing.json"], "--api_keys {tmp}/missing.json: cannot read it"),
])
def test_serve_refuses_what_it_cannot_route_in_one_line(capsys, models, tmp_path, arguments, message):
    (tmp_path / "keys.json").write_text('{"a-secret-key": 0}')
    names = {"es": models["es-en"][0], "en": models["en-es"][0], "bad_keys": tmp_path / "keys.json", "tmp": tmp_path}
    status, _, stderr = command(capsys, "serve", *[argument.format(**names) for argument in arguments])
    assert status == 2 and message.format(**names) in error_line(stderr)
    assert "a-secret-key" not in stderr
