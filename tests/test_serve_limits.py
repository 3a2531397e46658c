"""`vanilla-transformer serve` against what a client can do to it (#27): numbers out of range on the command line,
a batching thread that dies, connections that never send their headers or body, thousands of idle connections,
oversized bodies, JSON that parsers and tokenizers choke on, curl's form-encoded JSON, and worker processes that stop
answering. Every client mistake is a 4xx naming it; nothing hangs and nothing is a 500.
"""

import json
import os
import random
import resource
import signal
import socket
import threading
import time

import pytest
from support.serving import Server, alone, run_async, served_model, word_tokenizer  # noqa: F401  (a fixture)
from test_serve import Recorder, Replica

from vanilla_transformer.deployment.server.batching import Batcher, Broken
from vanilla_transformer.translation import DecodingOptions

# ---------------------------------------------------------------------------------------------------------------------
# #27: every number a command accepts is finite and in its range
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, message", [
    ("--max_wait_ms", "inf", "--max_wait_ms must be a finite number from 0 to 60000, got inf"),
    ("--max_wait_ms", "nan", "--max_wait_ms must be a finite number from 0 to 60000, got nan"),
    ("--max_wait_ms", "1e12", "--max_wait_ms must be a finite number from 0 to 60000, got 1000000000000.0"),
    ("--max_wait_ms", "-1", "--max_wait_ms must be a finite number from 0 to 60000"),
    ("--request_timeout", "0", "--request_timeout must be a finite number from 0.1 to 3600"),
    ("--batch_timeout", "inf", "--batch_timeout must be a finite number from 0.1 to 86400"),
    ("--max_queue", "0", "--max_queue must be an integer from 1 to 10,000,000"),
    ("--max_chars", "9" * 40, "--max_chars must be an integer from 1 to 10,000,000"),
    ("--max_connections", "2", "--max_connections must be an integer from 16 to 1,000,000"),
    ("--max_beams", "65", "--max_beams must be an integer from 1 to 64"),
    ("--workers", "0", "--workers must be an integer from 1 to 256"),
    ("--port", "70000", "--port must be an integer from 0 to 65,535"),
    ("--length_penalty", "nan", "--length_penalty must be a finite number"),
])
def test_serve_refuses_numbers_out_of_range(served_model, capsys, flag, value, message):
    from vanilla_transformer.cli import serve
    from vanilla_transformer.cli.parsing import decoding_options

    command = serve.parser()
    args = command.parse_args([str(served_model[0]), flag, value])
    with pytest.raises(SystemExit) as exit_:
        serve.check_arguments(command, args)
        decoding_options(command, args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# #27: a batching thread never dies silently
# ---------------------------------------------------------------------------------------------------------------------


class Fatal(BaseException):
    """Not an Exception: what a `generate` (or a bug) could raise past the batcher's error handling."""


@pytest.mark.parametrize("how", ["generate", "metrics", "one_of_two_replicas"])
def test_a_dead_batching_thread_fails_its_batch_and_the_queue_and_refuses_new_work(how):
    import asyncio

    def fatal(*args):
        raise Fatal("the thread's end")

    recorder = Recorder()
    generate = {"generate": fatal, "metrics": recorder, "one_of_two_replicas": [Replica(), fatal]}[how]
    batcher = Batcher(generate, max_batch_size=1, max_wait=0.0,
                      observe_batch=fatal if how == "metrics" else None)

    async def main():
        pieces = batcher.submit([[1], [2], [3], [4]], [5] * 4, DecodingOptions())
        start = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(p.future for p in pieces), return_exceptions=True), 30)
        return results, time.perf_counter() - start

    results, seconds = run_async(main())
    assert any(isinstance(result, Broken) for result in results) and seconds < 5
    assert "stopped (Fatal: the thread's end)" in batcher.problem()
    with pytest.raises(Broken):
        run_async(_submit(batcher))
    batcher.close(timeout=5)


async def _submit(batcher):
    return batcher.submit([[1]], [5], DecodingOptions())


def test_health_says_503_when_the_batching_thread_died_and_requests_fail_fast():
    """In the application (Starlette's test client): the engine's `generate` raises a BaseException."""
    from starlette.testclient import TestClient

    from vanilla_transformer.deployment.server.app import create_app

    class DeadlyEngine:
        name, source_limit = "deadly", 64
        tokenizer, tokenizer_lock = word_tokenizer(), threading.Lock()

        def new_token_limit(self, source_length):
            return source_length + 50

        def unsupported(self, options):
            return None

        def generate(self, rows, limits, options):
            raise Fatal("out of luck")

    with TestClient(create_app(DeadlyEngine())) as client:
        assert client.get("/health").json()["status"] == "ok"
        start = time.perf_counter()
        answer = client.post("/translate", json={"q": "w1 w2", "target": "en"})
        assert answer.status_code == 503 and "stopped (Fatal: out of luck)" in answer.json()["error"]
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "broken"
        assert "out of luck" in health.json()["problem"]
        again = client.post("/v1/translate", json={"text": "w1"})
        assert again.status_code == 503 and "must be restarted" in again.json()["error"]
        assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------------------------------------------------
# #27: slow, idle and oversized clients
# ---------------------------------------------------------------------------------------------------------------------

GUARD_TIMEOUT = 2.0  # --request_timeout of the guard server


@pytest.fixture(scope="module")
def guard_server(served_model):
    server = Server(served_model[0], "--request_timeout", str(GUARD_TIMEOUT), "--max_chars", "40000",
                    "--max_wait_ms", "5", log_level="info")
    yield server
    assert server.stop() == 0


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def closed_within(connection: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed the connection within `seconds`, what it sent before)."""
    connection.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = connection.recv(65536)
            if not chunk:
                return True, received
            received += chunk
    except (TimeoutError, socket.timeout):
        return False, received
    except ConnectionResetError:
        return True, received
    return False, received


@pytest.mark.parametrize("sent", [
    b"",  # connects and says nothing
    b"POST /translate HTTP/1.1\r\nHost: x\r\n",  # headers that never end
    b"POST /transl",  # a request line that never ends
])
def test_a_connection_that_does_not_send_its_headers_in_time_is_closed(guard_server, sent):
    with socket.create_connection(address(guard_server)) as connection:
        connection.sendall(sent)
        start = time.monotonic()
        closed, received = closed_within(connection, GUARD_TIMEOUT + 10)
        assert closed and received == b"" and time.monotonic() - start >= GUARD_TIMEOUT - 0.5


def test_a_keep_alive_connection_trickling_its_next_headers_is_closed(guard_server):
    with socket.create_connection(address(guard_server)) as connection:
        connection.sendall(b"GET /languages HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.settimeout(30)
        answer = b""
        while not answer.endswith(b"]}]"):  # the whole answer: headers and body
            answer += connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        for piece in (b"GET /lang", b"uages HTTP/1.1\r\n", b"Host: x\r\n"):  # a byte now and then resets no deadline
            connection.sendall(piece)
            time.sleep(GUARD_TIMEOUT / 4)
        closed, received = closed_within(connection, GUARD_TIMEOUT + 10)
        assert closed and received == b"" and time.monotonic() - start < GUARD_TIMEOUT + 10


@pytest.mark.parametrize("path", ["/translate", "/v1/translate"])
def test_a_body_that_does_not_arrive_in_time_is_408(guard_server, path):
    with socket.create_connection(address(guard_server)) as connection:
        connection.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Content-Length: 100\r\n\r\n{\"q\": \"w1".encode())
        start = time.monotonic()
        closed, received = closed_within(connection, GUARD_TIMEOUT + 30)
        assert received.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in received
        assert closed and GUARD_TIMEOUT - 0.5 <= time.monotonic() - start < GUARD_TIMEOUT + 30


@pytest.mark.parametrize("how", ["content-length", "chunked", "just-over"])
def test_a_body_over_the_limit_is_refused_without_reading_it(guard_server, how):
    """The limit is 12 bytes per --max_chars character + 64 KiB (545,536 here): a Content-Length over it is refused
    at once, with the body hardly begun; a chunked body as soon as it passes the limit, though it never ends."""
    limit = 40000 * 12 + 64 * 1024
    headers = "POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with socket.create_connection(address(guard_server)) as connection:
        if how == "content-length":
            connection.sendall(f"{headers}Content-Length: 400000000\r\n\r\n".encode() + b"{" * 1000)
        elif how == "chunked":
            chunk = b" " * 65536
            connection.sendall(f"{headers}Transfer-Encoding: chunked\r\n\r\n".encode())
            try:
                for _ in range(limit // len(chunk) + 1):
                    connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed before the last chunk
                pass
        else:
            connection.sendall(f"{headers}Content-Length: {limit + 1}\r\n\r\n".encode() + b" " * 1000)
        start = time.monotonic()
        closed, received = closed_within(connection, 30)  # the body never ends: only the server's answer ends it
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert b"more than this server's limit of 545536 bytes" in received
    assert closed and time.monotonic() - start < 10


def test_json_nested_200000_levels_is_a_400(guard_server):
    body = b'{"q": ' + b"[" * 200_000 + b"]" * 200_000 + b', "target": "en"}'
    status, answer, _ = guard_server.call("/translate", body)
    assert status == 400 and "nested too deeply" in answer["error"]


def test_curl_d_with_a_json_body_is_read_as_json(guard_server, served_model):
    """`curl -d '{"q": ...}'` sends JSON as application/x-www-form-urlencoded: no form of ours begins with `{`, so
    the body is read as JSON (a real form still works)."""
    _, _, model, tokenizer = served_model
    body = b'{"q": "w1 w2 w3", "source": "es", "target": "en"}'
    status, answer, _ = guard_server.call("/translate", body, "application/x-www-form-urlencoded")
    assert status == 200 and answer["translatedText"] == alone(model, tokenizer, "w1 w2 w3")
    status, answer, _ = guard_server.call("/translate", b"q=w1+w2+w3&source=es&target=en",
                                          "application/x-www-form-urlencoded")
    assert status == 200 and answer["translatedText"] == alone(model, tokenizer, "w1 w2 w3")


def test_no_client_input_gets_a_5xx(guard_server):
    """Mutations of valid requests — cut, bytes flipped, values replaced by any JSON value — are answered below
    500."""
    rng = random.Random(27)
    values = [None, True, 0, -1, 2**70, 1.5, -1e308, "", "w1", "\u00e9", [], ["w1", None], {}, {"a": [1]}, [[[]]]]
    valid = [("/translate", {"q": ["w1 w2", "w3"], "source": "es", "target": "en", "format": "text"}),
             ("/v1/translate", {"text": "w1 w2", "num_beams": 2, "n_best": 2, "length_penalty": 1.0}),
             ("/v1/translate", {"text": ["w1"], "do_sample": True, "top_k": 3, "top_p": 0.5, "seed": 3})]
    statuses = []
    for _ in range(150):
        path, fields = rng.choice(valid)
        fields = dict(fields)
        kind = rng.randrange(3)
        if kind == 0:
            fields[rng.choice([*fields, "other"])] = rng.choice(values)
            body = json.dumps(fields).encode()
        else:
            body = bytearray(json.dumps(fields).encode())
            if kind == 1:
                body = body[:rng.randrange(len(body))]
            else:
                for _ in range(3):
                    body[rng.randrange(len(body))] = rng.randrange(256)
            body = bytes(body)
        content_type = rng.choice(["application/json", "application/x-www-form-urlencoded", "text/plain"])
        status, answer, _ = guard_server.call(path, body, content_type)
        assert status < 500, (body, answer)
        statuses.append(status)
    assert 200 in statuses and 400 in statuses


def open_idle(server, count: int) -> list[socket.socket]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 512:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 512, hard), hard))
    idle = []
    for index in range(count):
        connection = socket.create_connection(address(server))
        if index % 2:
            connection.sendall(b"POST /translate HTTP/1.1\r\n")  # half a request
        idle.append(connection)
    return idle


def latency(server, count: int = 5) -> float:
    """The median seconds of `count` one-sentence requests, each on a new connection."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        status, _, _ = server.call("/translate", {"q": "w1 w2 w3", "source": "es", "target": "en"}, timeout=30)
        assert status == 200
        times.append(time.perf_counter() - start)
    return sorted(times)[count // 2]


@pytest.mark.parametrize("connections, cap, open_files", [
    (2000, None, None), (2000, 500, None), (2000, None, 1024), (10_000, None, None)])
def test_thousands_of_idle_connections_do_not_keep_a_client_from_its_answer(served_model, connections, cap,
                                                                              open_files):
    """2,000 (and 10,000) connections that send nothing or half a request line, held open: a normal client's requests
    are answered within their usual latency (+ 0.5 s on a busy machine); with --max_connections 500, or a server
    allowed 1,024 open files (the cap lowered to 768), the longest idle ones are closed to make room; the log holds
    no traceback."""
    args = ["--request_timeout", "60", *(["--max_connections", str(cap)] if cap else [])]
    server = Server(served_model[0], *args, log_level="info", open_files=open_files)
    cap = cap or (open_files - 256 if open_files else None)
    idle = []
    try:
        before = latency(server)
        idle = open_idle(server, connections)
        during = latency(server)
        print(f"{connections} idle connections (cap {cap}): median latency {before * 1000:.1f} ms before, "
              f"{during * 1000:.1f} ms during")
        assert during < 3 * before + 0.5
        if not cap:  # all held
            assert not any(closed_within(connection, 0.0001)[0] for connection in idle[::50])
        if cap:
            time.sleep(1)
            closed = sum(closed_within(connection, 0.001)[0] for connection in idle[:connections - cap])
            assert closed >= connections - cap - 64  # the oldest ones (a few may still be closing)
            assert not any(closed_within(connection, 0.001)[0] for connection in idle[-cap // 2:])
    finally:
        for connection in idle:
            connection.close()
        assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and log.count("\n") < 50, log[-3000:]


# ---------------------------------------------------------------------------------------------------------------------
# #27: a worker process that stops answering
# ---------------------------------------------------------------------------------------------------------------------

BATCH_TIMEOUT = 4.0


def health_is_truthful(health: dict) -> None:
    """ok: every worker can decode; degraded: some are starting again; unavailable (503): none can."""
    working = [w for w in health["workers"] if w["state"] in ("ready", "decoding")]
    expected = "ok" if len(working) == len(health["workers"]) else "degraded" if working else "unavailable"
    assert health["status"] == expected, health


def resume(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_stopped_worker_fails_its_batch_with_503_by_its_deadline_and_is_replaced(served_model):
    """`kill -STOP` on both workers: the request's batches fail with 503 once their deadline (--batch_timeout 4 s
    × (1 + rows × limit / max_batch_tokens), 4.05 s here) has passed, the workers are killed and started again,
    /health tells the truth throughout; a worker killed while stopped fails its batch at once. Then the server
    answers as before."""
    folder, _, model, tokenizer = served_model
    server = Server(folder, "--workers", "2", "--batch_timeout", str(BATCH_TIMEOUT), "--max_wait_ms", "5",
                    log_level="info")
    pids = []
    try:
        health = server.call("/health")[1]
        health_is_truthful(health)
        pids = [worker["pid"] for worker in health["workers"]]
        for kill_during in (False, True):
            pids = [worker["pid"] for worker in server.call("/health")[1]["workers"]]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            results = []
            asker = threading.Thread(target=lambda: results.append(server.call(
                "/translate", {"q": ["w1 w2", "w3"], "source": "es", "target": "en"})))
            start = time.monotonic()
            asker.start()
            decoding = []
            while asker.is_alive() and not decoding:
                health = server.call("/health")[1]
                health_is_truthful(health)
                decoding = [w for w in health["workers"] if w["state"] == "decoding"]
                time.sleep(0.05)
            assert decoding and all(BATCH_TIMEOUT <= w["deadline_s"] < BATCH_TIMEOUT * 1.1 for w in decoding)
            if kill_during:
                for worker in decoding:
                    os.kill(worker["pid"], signal.SIGKILL)
            asker.join(120)
            elapsed = time.monotonic() - start
            status, answer, headers = results[0]
            assert status == 503 and headers["Retry-After"] == "1", answer
            if kill_during:
                assert "the worker process stopped (exit code -9)" in answer["error"] and elapsed < BATCH_TIMEOUT
            else:
                assert "did not answer within 4.0" in answer["error"] or "did not answer within 4.1" in answer["error"]
                assert BATCH_TIMEOUT <= elapsed < BATCH_TIMEOUT * 1.1 + 5
            resume(pids)  # a worker that got no batch was never found out: let it go on
            for _ in range(600):  # started again (bounded wait)
                health = server.call("/health")[1]
                health_is_truthful(health)
                if health["status"] == "ok" and all(w["state"] == "ready" for w in health["workers"]):
                    break
                time.sleep(0.05)
            assert health["status"] == "ok", (health, server.log()[-3000:])
            replaced = [w for w in health["workers"] if w["pid"] not in pids]
            assert replaced and all(w["restarts"] >= 1 for w in replaced)
            status, answer, _ = server.call("/translate", {"q": ["w1 w2", "w3"], "source": "es", "target": "en"})
            assert status == 200 and answer["translatedText"] == [alone(model, tokenizer, t) for t in ("w1 w2", "w3")]
        assert server.metric('translation_errors_total{reason="worker_failed"}') == 2
    finally:
        resume(pids)
        assert server.stop() == 0
