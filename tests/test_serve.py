"""`vanilla-transformer serve`: dynamic batching that never changes an answer, the LibreTranslate-compatible and
native APIs, bad requests and limits, metrics, shutdown, what a client cannot do to the server (#27), and the web page
in a real (headless) browser.

Two tiny post-norm models: one trained a few dozen steps on reversing words (its translations vary with the input),
and one random whose end-of-sequence token is never chosen, so that every sentence runs to its own length limit.
Every answer is compared with the offline `translation.translate` of the same sentence alone. The servers are real
`vanilla-transformer serve` processes on 127.0.0.1, on a port the system picks.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.serving import (START_SECONDS, WORDS, Server, alone, endless, run_async, sentences,  # noqa: F401
                             served_model)

from vanilla_transformer.deployment.engines import load_engine
from vanilla_transformer.deployment.server.batching import Batcher
from vanilla_transformer.translation import (DecodingOptions, TransformersEngine, translate, translate_alternatives,
                                             translate_html)

# (served_model, endless: pytest fixtures)


@pytest.fixture(scope="module")
def server(served_model):
    folder, _, _, _ = served_model
    server = Server(folder, "--max_wait_ms", "20", "--max_sentences", "40", "--max_chars", "2000",
                    "--max_queue", "64")
    yield server
    assert server.stop() == 0


# ---------------------------------------------------------------------------------------------------------------------
# Exact answers under dynamic batching
# ---------------------------------------------------------------------------------------------------------------------


def test_concurrent_requests_get_the_offline_translation_of_each_sentence(server, served_model):
    """16 clients at once, single sentences and lists mixed: every answer is what `translate` gives the sentence
    alone, whichever batch it landed in; and batches did hold sentences of several requests."""
    _, _, model, tokenizer = served_model
    requests = [sentences(1 + i % 4, seed=i) for i in range(48)]
    expected = {s: alone(model, tokenizer, s) for texts in requests for s in texts}
    batches_before = server.metric("translation_batch_size_count")

    def ask(texts):
        status, answer, _ = server.call("/translate", {"q": texts if len(texts) > 1 else texts[0],
                                                       "source": "es", "target": "en"})
        assert status == 200, answer
        return answer["translatedText"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, requests))
    for texts, answer in zip(requests, answers):
        assert answer == ([expected[s] for s in texts] if len(texts) > 1 else expected[texts[0]])
    pieces = sum(map(len, requests))
    batches = server.metric("translation_batch_size_count") - batches_before
    assert batches < pieces  # some batch held several sentences (a request of 4 always does)


def test_each_sentence_keeps_its_own_length_limit_in_a_batch(served_model):
    """Rows of very different limits in one beam-search batch end as each would alone (`generate` with the row's
    own max_new_tokens): the per-row stopping criterion, with limits small enough to cut translations."""
    _, exported, model, tokenizer = served_model
    engine = TransformersEngine(model, tokenizer)
    texts = sentences(8, seed=5)
    rows = tokenizer(texts)["input_ids"]
    limits = [2, 9, 3, 14, 1, 6, 4, 20]
    for options in (DecodingOptions(num_beams=4, n_best=2), DecodingOptions(num_beams=1)):
        batched = engine.generate(rows, limits, options)
        for row, limit, answer in zip(rows, limits, batched):
            assert answer == engine.generate([row], [limit], options)[0], (limit, options)
    # the CTranslate2 engine runs the batch to its longest limit and decodes again what reached a shorter one
    ct2 = load_engine(str(exported), "ctranslate2", "cpu")
    beam = DecodingOptions(num_beams=4)
    batched = ct2.generate(rows, limits, beam)
    for row, limit, answer in zip(rows, limits, batched):
        assert answer == ct2.generate([row], [limit], beam)[0]
        assert answer == engine.generate([row], [limit], beam)[0]


def test_the_libretranslate_client_works_unchanged(server, served_model):
    from libretranslatepy import LibreTranslateAPI

    _, _, model, tokenizer = served_model
    client = LibreTranslateAPI(server.url)
    text = "w1 w2 w3 w4"
    assert client.translate(text, "es", "en") == alone(model, tokenizer, text)
    assert client.translate(text, "auto", "en") == alone(model, tokenizer, text)
    assert client.languages() == [{"code": "es", "name": "es", "targets": ["en"]}]
    with pytest.raises(urllib.error.HTTPError) as error:
        client.translate(text, "es", "fr")
    assert error.value.code == 400
    assert "es→fr" in json.loads(error.value.read())["error"]


def test_lines_are_translated_one_by_one_blank_lines_kept(server, served_model):
    _, _, model, tokenizer = served_model
    lines = ["w1 w2", "", "w3 w4 w5", "   ", "w6"]
    status, answer, _ = server.call("/translate", {"q": "\n".join(lines), "source": "es", "target": "en"})
    assert status == 200
    # a blank or white-space-only line comes back as it was, without the model
    assert answer["translatedText"].split("\n") == [alone(model, tokenizer, line) if line.strip() else line
                                                    for line in lines]


def test_a_long_input_is_split_as_translate_splits_it(server, served_model):
    """A line longer than max_position_embeddings (64) tokens: pieces at sentence boundaries, as `translate`."""
    _, _, model, tokenizer = served_model
    text = " ".join(WORDS[(3 * i) % 16] for i in range(90))  # no punctuation in the toy vocabulary: cut between words
    assert len(tokenizer(text)["input_ids"]) > model.config.max_position_embeddings
    status, answer, _ = server.call("/translate", {"q": text, "source": "es", "target": "en"})
    assert status == 200
    assert answer["translatedText"] == alone(model, tokenizer, text)


def test_native_endpoint_beams_n_best_and_max_length(server, served_model):
    _, _, model, tokenizer = served_model
    engine = TransformersEngine(model, tokenizer)
    texts = ["w1 w2 w3", "w9 w8 w7 w6 w5"]
    status, answer, _ = server.call("/v1/translate", {"text": texts, "num_beams": 5, "n_best": 3})
    assert status == 200
    for text, best, alternatives in zip(texts, answer["translations"], answer["alternatives"]):
        ids = tokenizer([text])["input_ids"]
        assert alternatives == engine.generate(ids, [engine.new_token_limit(len(ids[0]))],
                                               DecodingOptions(num_beams=5, n_best=3))[0]
        assert best == alternatives[0]
    status, answer, _ = server.call("/v1/translate", {"text": "w9 w8 w7 w6 w5", "num_beams": 1, "max_new_tokens": 2})
    assert status == 200
    assert len(tokenizer(answer["translations"], add_special_tokens=False)["input_ids"]) <= 2
    assert answer["translations"] == engine.generate(tokenizer(["w9 w8 w7 w6 w5"])["input_ids"], [2],
                                                     DecodingOptions(num_beams=1))[0][0]


# ---------------------------------------------------------------------------------------------------------------------
# Bad requests and limits
# ---------------------------------------------------------------------------------------------------------------------


BAD_REQUESTS = [
    ("/translate", b"{not json", "application/json", 400, "not valid JSON"),
    ("/translate", b"[1, 2]", "application/json", 400, "JSON object"),
    ("/translate", {"source": "es", "target": "en"}, None, 400, "'q' is missing"),
    ("/translate", {"q": 5, "source": "es", "target": "en"}, None, 400, "string or a list of strings"),
    ("/translate", {"q": ["w1", 3], "source": "es", "target": "en"}, None, 400, "string or a list of strings"),
    ("/translate", {"q": "  \n ", "source": "es", "target": "en"}, None, 400, "'q' is empty"),
    ("/translate", {"q": [], "source": "es", "target": "en"}, None, 400, "'q' is empty"),
    ("/translate", {"q": "w1 " * 700, "source": "es", "target": "en"}, None, 413, "2100 characters"),
    ("/translate", {"q": ["w1"] * 41, "source": "es", "target": "en"}, None, 413, "41 lines"),
    ("/translate", {"q": "w1", "source": "de", "target": "en"}, None, 400, "unsupported language pair de→en"),
    ("/translate", {"q": "w1", "source": "es"}, None, 400, "'target' is missing"),
    ("/translate", {"q": "w1", "source": "es", "target": "en", "format": "xml"}, None, 400, "use 'text' or 'html'"),
    ("/v1/translate", {"text": "w1", "num_beams": 0}, None, 400, "num_beams must be in [1, 64], got 0"),
    ("/v1/translate", {"text": "w1", "num_beams": 2, "n_best": 3}, None, 400, "n_best is 3, more than num_beams 2"),
    ("/v1/translate", {"text": "w1", "max_new_tokens": "ten"}, None, 400, "max_new_tokens must be an integer"),
    ("/v1/translate", {"text": "w1", "length_penalty": "x"}, None, 400, "length_penalty must be a number"),
    ("/v1/translate", {"text": "w1", "num_beams": 32}, None, 400, "at most 16 on this server"),
    ("/v1/translate", {"text": "w1", "top_k": 5}, None, 400, "top_k is a sampling option: add do_sample"),
    ("/v1/translate", {"text": "w1", "beams": 2}, None, 400, "unknown field(s): beams"),
    ("/v1/translate", b"q=w1", "application/x-www-form-urlencoded", 400, "not valid JSON"),
    ("/translate", b"--x\r\n", "multipart/form-data; boundary=x", 415, "multipart"),
    # #27: what a parser or a tokenizer would choke on is a 400 naming it, never a 500
    ("/translate", b"[" * 200_000 + b"]" * 200_000, "application/json", 413, "more than this server's limit"),
    ("/v1/translate", b'{"text": ' + b"[" * 40_000 + b"]" * 40_000 + b"}", None, 400, "nested too deeply"),
    ("/translate", b'{"q": "w1 \\ud800 w2", "source": "es", "target": "en"}', None, 400, "lone surrogate (\\ud800)"),
    ("/v1/translate", b'{"text": ["w1", "\\udfff"]}', None, 400, "'text' holds a lone surrogate (\\udfff)"),
    ("/translate", b'{"q": "w1", "source": "es", "target": "\\ud800"}', None, 400, "unsupported language pair"),
    ("/v1/translate", b'{"text": "w1", "\\ud800": 1}', None, 400, "unknown field(s): '\\ud800'"),
    ("/v1/translate", b'{"text": "w1", "num_beams": 1' + b"0" * 5000 + b"}", None, 400, "4300 digits"),
    ("/v1/translate", b'{"text": "w1", "length_penalty": 1e300}', None, 400, "length_penalty must be in [-10.0, 10.0]"),
    ("/v1/translate", b'{"text": "w1", "length_penalty": 1e400}', None, 400, "length_penalty must be a finite number"),
    ("/v1/translate", b'{"text": "w1", "length_penalty": NaN}', None, 400, "NaN is not a JSON number"),
    ("/v1/translate", b'{"text": "w1", "length_penalty": Infinity}', None, 400, "Infinity is not a JSON number"),
    ("/v1/translate", b'{"text": "w1", "length_penalty": -Infinity}', None, 400, "-Infinity is not a JSON number"),
    ("/v1/translate", b'{"text": "w1", "do_sample": true, "temperature": 0}', None, 400, "temperature must be in (0"),
    ("/v1/translate", b'{"text": "w1", "do_sample": true, "seed": -1}', None, 400, "seed must be in [0"),
    ("/v1/translate", b'{"text": "w1", "do_sample": "yes"}', None, 400, "do_sample must be true or false"),
    ("/translate", b"\xff\xfe{", "application/json", 400, "not valid JSON"),
    ("/translate", b'{"q": "w1" "source": "es"}', "application/x-www-form-urlencoded", 400, "curl -d sends"),
]


@pytest.mark.parametrize("path, body, content_type, status, message", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_naming_the_problem(server, path, body, content_type, status, message):
    got, answer, _ = server.call(path, body, content_type or "application/json")
    assert got == status and message in answer["error"], answer


def test_unknown_paths_and_methods_answer_json_errors(server):
    assert server.call("/nowhere")[0] == 404 and "error" in server.call("/nowhere")[1]
    status, answer, _ = server.call("/translate", method="GET")
    assert status == 405 and "GET /translate" in answer["error"]


def test_a_bad_request_never_changes_another_requests_answer(server, served_model):
    _, _, model, tokenizer = served_model
    good = sentences(24, seed=77)
    bad = [{"q": 5}, b"{", {"q": "w1", "target": "fr"}, {"q": ["w1"] * 99}, {"q": ""}]

    def ask(index):
        if index % 2:
            return server.call("/translate", bad[index % len(bad)])[0]
        status, answer, _ = server.call("/translate", {"q": good[index // 2], "source": "es", "target": "en"})
        return status, answer["translatedText"]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(ask, range(48)))
    for index, result in enumerate(results):
        if index % 2:
            assert 400 <= result < 500
        else:
            assert result == (200, alone(model, tokenizer, good[index // 2]))


def test_health_metrics_and_openapi(server):
    status, answer, _ = server.call("/health")
    assert status == 200 and answer["status"] == "ok"
    assert answer["model"] == "vanilla-transformer-es-en" and answer["engine"] == "transformers"
    assert {"name": "BLEU", "split": "test", "value": 12.34} in answer["metrics"]
    requests = server.metric("translation_requests_total")
    server.call("/translate", {"q": "w1 w2", "source": "es", "target": "en"})
    server.call("/translate", {"q": 1})
    assert server.metric("translation_requests_total") == requests + 2
    assert server.metric('translation_errors_total{reason="wrong_type"}') >= 1
    for name in ("translation_sentences_total", "translation_source_tokens_total", "translation_batch_size_bucket",
                 "translation_queue_wait_seconds_bucket", "translation_request_seconds_bucket"):
        assert server.metric(name) > 0, name
    status, schema, _ = server.call("/openapi.json")
    assert status == 200 and {"/translate", "/v1/translate", "/health", "/metrics", "/languages"} <= set(
        schema["paths"])
    assert "q" in schema["paths"]["/translate"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]


# ---------------------------------------------------------------------------------------------------------------------
# The batcher on its own
# ---------------------------------------------------------------------------------------------------------------------

class Recorder:
    """A fake engine: records its batches; a row holding token 99 fails."""

    def __init__(self):
        self.batches = []

    def __call__(self, rows, limits, options):
        self.batches.append([list(row) for row in rows])
        if any(99 in row for row in rows):
            raise RuntimeError("poisoned row")
        return [[f"{sum(row)}"] * options.n_best for row in rows]

def test_requests_share_one_length_sorted_batch_and_answers_go_back_to_their_request():
    import asyncio

    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=10_000, max_batch_size=6, max_wait=30.0)

    async def main():
        first = batcher.submit([[1, 1, 1], [2], [3, 3]], [5, 5, 5], DecodingOptions())
        second = batcher.submit([[4, 4, 4, 4], [5, 5], [6]], [5, 5, 5], DecodingOptions())
        return await asyncio.gather(*(p.future for p in first)), await asyncio.gather(*(p.future for p in second))

    first, second = run_async(main())
    batcher.close()
    assert recorder.batches == [[[2], [6], [3, 3], [5, 5], [1, 1, 1], [4, 4, 4, 4]]]  # one batch, sorted by length
    assert first == [["3"], ["2"], ["6"]] and second == [["16"], ["10"], ["6"]]


def test_a_failing_sentence_fails_only_its_own_request():
    import asyncio

    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=3, max_wait=30.0)

    async def main():
        good = batcher.submit([[1, 2]], [5], DecodingOptions())
        bad = batcher.submit([[99]], [5], DecodingOptions())
        other = batcher.submit([[3]], [5], DecodingOptions())
        results = await asyncio.gather(*(p.future for p in good + bad + other), return_exceptions=True)
        return results

    results = run_async(main())
    batcher.close()
    assert results[0] == ["3"] and results[2] == ["3"]
    assert isinstance(results[1], RuntimeError)


def test_the_batch_respects_the_token_budget_and_the_oldest_sentence_goes_first():
    import asyncio

    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=8, max_batch_size=64, max_wait=0.0)

    async def main():
        pieces = batcher.submit([[7] * 4, [1], [2] * 2, [3] * 4, [4] * 3], [5] * 5, DecodingOptions())
        await asyncio.gather(*(p.future for p in pieces))

    run_async(main())
    batcher.close()
    for batch in recorder.batches:
        assert len(batch) * max(map(len, batch)) <= 8 or len(batch) == 1
    assert [7] * 4 in recorder.batches[0]
    assert sorted(map(tuple, sum(recorder.batches, []))) == sorted(
        map(tuple, [[7] * 4, [1], [2] * 2, [3] * 4, [4] * 3]))


def test_different_decoding_options_never_share_a_batch():
    import asyncio

    recorder = Recorder()
    batcher = Batcher(recorder, max_wait=0.2)

    async def main():
        a = batcher.submit([[1], [2]], [5, 5], DecodingOptions(num_beams=4))
        b = batcher.submit([[3]], [5], DecodingOptions(num_beams=2))
        await asyncio.gather(*(p.future for p in a + b))

    run_async(main())
    batcher.close()
    assert sorted(map(sorted, recorder.batches)) == [[[1], [2]], [[3]]]


def test_a_burst_arriving_over_more_than_max_wait_is_one_batch():
    """Clients answered together send their next requests over some milliseconds: the batch waits for the pause, so
    a burst longer than max_wait (gaps shorter than it) is not cut into a batch of the first few and one of the rest."""
    import asyncio

    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=64, max_wait=0.4)

    async def main():
        pieces = []
        for i in range(5):  # 0.6 s from the first to the last, 0.15 s apart
            if i:
                await asyncio.sleep(0.15)
            pieces += batcher.submit([[i + 1]], [5], DecodingOptions())
        await asyncio.gather(*(p.future for p in pieces))

    run_async(main())
    batcher.close()
    assert recorder.batches == [[[1], [2], [3], [4], [5]]]


def test_pieces_that_keep_coming_wait_at_most_the_cap():
    import asyncio

    from vanilla_transformer.deployment.server.batching import WAIT_CAP

    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=64, max_wait=0.1)

    async def main():
        pieces, start = [], time.perf_counter()
        while time.perf_counter() - start < 3 * WAIT_CAP * 0.1:  # a piece every 20 ms, never a 0.1 s pause
            pieces += batcher.submit([[1]], [5], DecodingOptions())
            await asyncio.sleep(0.02)
        await asyncio.gather(*(p.future for p in pieces))
        return len(pieces)

    sent = run_async(main())
    batcher.close()
    assert len(recorder.batches) >= 2 and sum(map(len, recorder.batches)) == sent


class Replica:
    """A fake engine replica: slow, records which thread called it and fails if two calls overlap."""

    def __init__(self):
        self.batches, self.threads, self.busy = [], set(), threading.Lock()

    def __call__(self, rows, limits, options):
        assert self.busy.acquire(blocking=False), "two generate calls at once on one replica"
        try:
            self.threads.add(threading.get_ident())
            self.batches.append([list(row) for row in rows])
            time.sleep(0.3)
            return [[f"{sum(row)}"] * options.n_best for row in rows]
        finally:
            self.busy.release()


def test_replicas_share_the_work_each_in_its_own_thread_one_batch_at_a_time():
    import asyncio

    replicas = [Replica(), Replica()]
    batcher = Batcher(replicas, max_batch_size=64, max_wait=0.05)

    async def main():
        first = batcher.submit([[i] for i in range(1, 9)], [5] * 8, DecodingOptions())  # 8 at once: 4 and 4
        answers = await asyncio.gather(*(p.future for p in first))
        more = [batcher.submit([[i]], [5], DecodingOptions()) for i in range(10, 16)]  # while busy too
        return answers + await asyncio.gather(*(p.future for ps in more for p in ps))

    answers = run_async(main())
    batcher.close()
    assert answers == [[str(i)] for i in [*range(1, 9), *range(10, 16)]]
    assert [len(b) for b in replicas[0].batches[:1] + replicas[1].batches[:1]] == [4, 4]
    assert all(len(r.threads) == 1 for r in replicas) and replicas[0].threads != replicas[1].threads
    decoded = sorted(row[0] for r in replicas for batch in r.batches for row in batch)
    assert decoded == [*range(1, 9), *range(10, 16)]


def test_a_replica_process_decodes_as_the_engine_and_comes_back_after_a_crash(served_model):
    from vanilla_transformer.deployment.server.workers import start_replicas

    folder, _, model, tokenizer = served_model
    engine = TransformersEngine(model, tokenizer)
    rows = tokenizer(sentences(6, seed=11))["input_ids"]
    limits = [engine.new_token_limit(len(row)) for row in rows]
    two, one = DecodingOptions(num_beams=4, n_best=2), DecodingOptions(num_beams=4)
    (replica,) = start_replicas(str(folder), "transformers", "cpu", 1, threads=1)
    try:
        assert replica.generate(rows, limits, two) == engine.generate(rows, limits, two)
        # Ctrl-C or systemd's stop reach the whole process group: the worker stays until the server closes it
        pid = replica.process.pid
        for sig in (signal.SIGINT, signal.SIGTERM):
            os.kill(pid, sig)
        assert replica.generate(rows[:1], limits[:1], one) == engine.generate(rows[:1], limits[:1], one)
        assert replica.process.pid == pid and replica.process.is_alive()
        replica.process.kill()
        replica.process.join()
        assert replica.generate(rows[:2], limits[:2], one) == engine.generate(rows[:2], limits[:2], one)
        assert replica.status()["restarts"] == 1 and replica.status()["state"] == "ready"
    finally:
        replica.close()
    assert not replica.process.is_alive()


def test_a_replica_that_cannot_load_is_an_error_naming_the_problem(tmp_path):
    from vanilla_transformer.deployment.server.workers import start_replicas

    with pytest.raises(ValueError, match="config"):
        start_replicas(str(tmp_path), "transformers", "cpu", 2, threads=1)


def test_a_server_with_two_workers_answers_as_translate_alone(served_model):
    _, _, model, tokenizer = served_model
    folder = served_model[0]
    server = Server(folder, "--workers", "2", "--max_wait_ms", "20")
    try:
        requests = [sentences(1 + i % 3, seed=100 + i) for i in range(16)]

        def ask(texts):
            status, answer, _ = server.call("/translate", {"q": texts, "source": "es", "target": "en"})
            assert status == 200, answer
            return answer["translatedText"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, requests))
        assert answers == [[alone(model, tokenizer, s) for s in texts] for texts in requests]
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------------------------------
# Queue limits, disconnects, shutdown, start-up errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(served_model):
    """A server whose sentences wait 60 s for company: what is queued stays queued long enough to watch."""
    folder, _, _, _ = served_model
    server = Server(folder, "--max_wait_ms", "60000", "--max_queue", "6", "--max_batch_size", "64")
    yield server
    server.stop()


def test_a_full_queue_answers_503_with_retry_after(slow_server):
    status, answer, headers = slow_server.call("/translate", {"q": ["w1"] * 7, "source": "es", "target": "en"})
    assert status == 503 and "queue is full" in answer["error"] and headers["Retry-After"] == "1"


def test_a_client_that_disconnects_leaves_no_work_behind(slow_server):
    batches = slow_server.metric("translation_batch_size_count")
    host, port = slow_server.url.removeprefix("http://").split(":")
    body = json.dumps({"q": ["w1 w2", "w3"], "source": "es", "target": "en"}).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for _ in range(600):  # queued (bounded wait)
            if slow_server.call("/health")[1]["queued"] == 2:
                break
            time.sleep(0.05)
        assert slow_server.call("/health")[1]["queued"] == 2
    for _ in range(600):  # the server notices the closed connection and drops the queued sentences
        if slow_server.metric('translation_errors_total{reason="client_disconnected"}') == 1:
            break
        time.sleep(0.05)
    assert slow_server.metric('translation_errors_total{reason="client_disconnected"}') == 1
    assert slow_server.call("/health")[1]["queued"] == 0
    assert slow_server.metric("translation_batch_size_count") == batches  # nothing decoded for nobody


def test_sigterm_finishes_the_requests_in_flight_then_exits_0(served_model):
    """The queued sentences (which would wait 60 s for company) are decoded at once, answered, and the server
    exits 0; it takes no new connection."""
    folder, _, model, tokenizer = served_model
    server = Server(folder, "--max_wait_ms", "60000")
    texts = ["w1 w2 w3", "w4 w5"]
    results = []
    asker = threading.Thread(target=lambda: results.append(
        server.call("/translate", {"q": texts, "source": "es", "target": "en"})))
    asker.start()
    try:
        for _ in range(600):  # the request is queued
            if server.call("/health")[1]["queued"] == 2:
                break
            time.sleep(0.05)
        assert server.call("/health")[1]["queued"] == 2
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(120) == 0
        asker.join(120)
        status, answer, _ = results[0]
        assert status == 200 and answer["translatedText"] == [alone(model, tokenizer, t) for t in texts]
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.url + "/health", timeout=10)
    finally:
        server.stop()


def run_serve(*args: str) -> subprocess.CompletedProcess:
    args = tuple(map(str, args))
    args += () if "--engine" in args else ("--engine", "transformers")  # as `Server`: no conversion into a cache
    return subprocess.run([sys.executable, "-m", "vanilla_transformer.cli.main", "serve", *args, "--workers", "1"],
                          capture_output=True, text=True, timeout=START_SECONDS)


def test_a_port_in_use_is_one_line_and_a_nonzero_exit(served_model):
    folder = served_model[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_serve(folder, "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"vanilla-transformer serve: error: cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize("engine", ["transformers", "ctranslate2"])
def test_a_model_folder_that_cannot_be_loaded_is_one_line_and_a_nonzero_exit(tmp_path, engine):
    (tmp_path / "config.json").write_text("{not json")
    result = run_serve(tmp_path, "--engine", engine, "--port", "0")
    # 2 where the folder's config is checked before loading (a usage error, as for translate/evaluate/inspect/export),
    # 1 where loading itself fails (the CTranslate2 export's files)
    assert result.returncode == (2 if engine == "transformers" else 1) and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vanilla-transformer serve: error: "), result.stderr
    assert str(tmp_path) in lines[0] or "config.json" in lines[0]
    missing = run_serve(tmp_path / "nowhere", "--port", "0")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr.strip().splitlines()[-1]


def test_the_ctranslate2_engine_serves_its_offline_translations(served_model):
    """What `translate --engine ctranslate2` gives each sentence alone (CTranslate2's beam search stops once
    num_beams hypotheses ended, transformers' by default a little later: the engines may differ, never the server
    from its engine)."""
    _, exported, _, _ = served_model
    offline = load_engine(str(exported), "ctranslate2", "cpu")
    server = Server(exported, "--engine", "ctranslate2", "--source_lang", "es", "--target_lang", "en",
                    "--max_wait_ms", "20")
    try:
        texts = sentences(12, seed=3)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda t: server.call("/translate", {"q": t, "source": "es", "target": "en"}),
                                    texts))
        assert [a[1]["translatedText"] for a in answers] == [translate(offline, [t])[0] for t in texts]
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------------------------------
# The web page in a real browser
# ---------------------------------------------------------------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def finished(browser) -> None:
    """Wait for the page's answer; an error fails at once, naming what the page showed."""
    state = browser.wait_for("(s => s !== 'busy' && s !== 'idle' && s)"
                             "(document.getElementById('translation').dataset.state)")
    assert state == "done", browser.evaluate("document.getElementById('error').textContent")


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (make chromium)")
def test_the_web_page_translates_in_a_headless_browser(server, served_model, tmp_path):
    """Chromium (headless) driven over the DevTools protocol: type, click, read the translation (text, then HTML);
    a screenshot is saved (its path is printed)."""
    from browser import Browser

    _, _, model, tokenizer = served_model
    text = "w3 w1 w4 w1 w5"
    html = '<p>w3 w1 <em>w4 w1</em> w5 <a href="https://x.example/@ana" class="u-url mention">@ana</a></p>'
    with Browser(chromium(), tmp_path / "profile") as browser:
        # every request of the page takes 1 s more, so the click below lands while /languages is on its way
        browser.send("Network.enable")
        browser.send("Network.emulateNetworkConditions", offline=False, latency=1000, downloadThroughput=-1,
                     uploadThroughput=-1)
        browser.open(server.url + "/")
        assert browser.wait_for(
            "(name => name !== 'Translation model' && name)(document.getElementById('model-name').textContent)") == "vanilla-transformer-es-en"
        # a click before the language pairs are known sends nothing (it would ask for no source and no target)
        early = browser.evaluate("(() => { const ready = document.body.dataset.state;"
                                 " document.getElementById('translate').click();"
                                 " return [ready || null, document.getElementById('translation').dataset.state]; })()")
        assert early == [None, "idle"]
        assert browser.wait_for("document.body.dataset.state || null") == "ready", \
            browser.evaluate("document.getElementById('error').textContent")
        assert browser.evaluate("document.getElementById('translation').dataset.state") == "idle"
        assert "BLEU 12.34 (test)" in browser.evaluate("document.getElementById('scores').textContent")
        browser.evaluate(f"document.getElementById('source').value = {json.dumps(text)}")
        browser.evaluate("document.getElementById('translate').click()")
        finished(browser)
        shown = browser.evaluate("document.getElementById('translation').textContent")
        screenshot = browser.screenshot(tmp_path / "serve-web-page.png")
        # HTML (format html): the translation is shown as HTML source, not rendered
        browser.evaluate(f"document.getElementById('source').value = {json.dumps(html)}")
        browser.evaluate("document.getElementById('format').value = 'html'")
        browser.evaluate("document.getElementById('translate').click()")
        finished(browser)
        shown_html = browser.evaluate("document.getElementById('translation').textContent")
    assert shown == alone(model, tokenizer, text)
    assert shown_html == translate_html(TransformersEngine(model, tokenizer), [html])[0]
    assert screenshot.stat().st_size > 1000
    print(f"screenshot: {screenshot}")


# ---------------------------------------------------------------------------------------------------------------------
# Exact answers of a model that runs to its length limit, both engines, every kind of decoding
# ---------------------------------------------------------------------------------------------------------------------


SEARCHES = [{"num_beams": 1}, {"num_beams": 4}, {"num_beams": 4, "n_best": 3}]


def offline_engine(endless, engine: str):
    folder, exported, _, _ = endless
    return load_engine(str(folder if engine == "transformers" else exported), engine, "cpu")


@pytest.fixture(scope="module", params=["transformers", "ctranslate2"])
def endless_server(request, endless):
    folder, exported, _, _ = endless
    server = Server(folder if request.param == "transformers" else exported, "--engine", request.param,
                    "--max_wait_ms", "30", "--source_lang", "es", "--target_lang", "en")
    server.engine = request.param
    yield server
    assert server.stop() == 0


def test_every_sentence_runs_to_its_own_limit_and_gets_its_offline_answer(endless_server, endless):
    """Sentences of 1 to 13 tokens (limits 52 to 63 new tokens, every translation runs to its limit) mixed in one
    request and across concurrent requests: greedy, beam and n-best answers are `translate` of each sentence alone."""
    engine = offline_engine(endless, endless_server.engine)
    requests = [sentences(1 + i % 3, seed=200 + i) for i in range(9)]
    for search in SEARCHES:
        options = DecodingOptions(**search)
        expected = {s: translate_alternatives(engine, [s], options)[0] for texts in requests for s in texts}

        def ask(texts):
            status, answer, _ = endless_server.call("/v1/translate", {"text": texts, **search})
            assert status == 200, answer
            return answer

        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(ask, requests))
        for texts, answer in zip(requests, answers):
            assert answer["translations"] == [expected[s][0] for s in texts], search
            if options.n_best > 1:
                assert answer["alternatives"] == [expected[s] for s in texts], search


def test_the_endless_model_runs_every_sentence_to_its_limit(endless):
    _, _, model, tokenizer = endless
    engine = TransformersEngine(model, tokenizer)
    for text in sentences(4, seed=9):
        source = len(tokenizer(text)["input_ids"])
        assert len(translate(engine, [text], DecodingOptions(num_beams=1))[0].split()) == engine.new_token_limit(
            source)


def sample(server, text, seed, **extra):
    status, answer, _ = server.call("/v1/translate", {"text": text, "do_sample": True, "top_k": 8, "top_p": 0.9,
                                                      "temperature": 1.3, "seed": seed, **extra})
    assert status == 200, answer
    return answer


def test_sampling_with_a_seed_gives_the_same_answer_alone_or_among_other_requests(endless_server, endless):
    """The native endpoint's sampling (top_k, top_p, temperature): the same text and seed give the same answer —
    alone, or while other requests (other seeds, other texts, other options) are decoded at once; another seed gives
    another answer; n_best gives that many samples, the first being the single sample's."""
    if endless_server.engine == "ctranslate2":  # its sampling cannot be seeded (translation/engine: unsupported)
        status, answer, _ = endless_server.call("/v1/translate", {"text": "w3 w1", "do_sample": True, "seed": 7})
        assert status == 400 and "seed: CTranslate2's sampling cannot be seeded" in answer["error"], answer
        return
    engine = offline_engine(endless, endless_server.engine)
    text = "w3 w1 w4 w1 w5"
    first = sample(endless_server, text, seed=7)["translations"]
    options = DecodingOptions(do_sample=True, top_k=8, top_p=0.9, temperature=1.3, seed=7)
    assert first == translate(engine, [text], options)[0]
    others = [(t, seed) for seed, t in enumerate(sentences(12, seed=31))]

    def ask(job):
        if job is None:
            return sample(endless_server, text, seed=7)["translations"]
        return sample(endless_server, *job)["translations"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, [None, *others[:6], None, *others[6:], None]))
    assert [answers[0], answers[7], answers[-1]] == [first] * 3
    for (other_text, seed), answer in zip(others, answers[1:7] + answers[8:-1]):
        assert answer == translate(engine, [other_text], dataclass_replace(options, seed=seed))[0]
    differ = {sample(endless_server, text, seed=seed)["translations"] for seed in range(4)}
    assert len(differ) == 4  # 50-odd drawn words: different seeds give different samples
    samples = sample(endless_server, text, seed=7, n_best=3)["alternatives"]
    assert len(set(samples)) == 3 and samples[0] == first
    # without a seed, two requests draw differently
    unseeded = {endless_server.call("/v1/translate", {"text": text, "do_sample": True})[1]["translations"]
                for _ in range(2)}
    assert len(unseeded) == 2


def dataclass_replace(options, **changes):
    import dataclasses

    return dataclasses.replace(options, **changes)
