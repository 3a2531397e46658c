"""Load test of `vanilla-transformer serve`: throughput and latency with 1, 4, 16, 64 concurrent clients, every
answer checked, against offline batch `translate` with the same engine; then a soak with bad requests mixed in.

    python benchmarks/serve_load.py --model runs/demo/final                     # the defaults (engine, workers: auto)
    python benchmarks/serve_load.py --model runs/demo/final --engines auto,transformers --markdown ''  # both, one table
    python benchmarks/serve_load.py --model demo_output/final-ct2 --engines ctranslate2
    python benchmarks/serve_load.py --model demo_output/final --soak-seconds 600 --clients 16 --sentences 0

Each engine of --engines (auto: what `serve`'s default picks; transformers; ctranslate2, on a model folder through
the same cached conversion `auto` uses) is run with `serve`'s defaults plus --server-args, and printed at the end as
one Markdown table: sentences/s, % of offline batch `translate` on the same engine, p50 / p99 latency, p99 as a
multiple of the one-client p50, errors, lost, wrong. The engine and workers the server chose (its start lines) are
recorded with each run.

Clients are threads with one keep-alive `http.client` connection each (a light load generator: it shares the cores
with the server), on loopback only; each sends one Bible test verse per
request (`POST /translate`, LibreTranslate's API) and sends the next when the answer is back. Offline, the verses
are translated with the same engine in batches of 64 (`translate`'s default; the throughput to compare with) and one
at a time: every answer of the server must equal the verse's translation alone (the server gives each verse its own
source + 50 length limit, as `translate([verse])` does; a batch of `translate` runs to its longest verse + 50, so for
a verse that reaches its limit the batch result can differ — counted separately). The server runs under `timeout`,
in its own process, started after the offline runs (they never compete for the cores). `--threads N` sets
OMP_NUM_THREADS for the server and torch's threads offline (default 0: neither is set, as a user would run it).

--format html (#28): each verse is sent as an HTML fragment as Mastodon sends a post (`<p>`, the first word in
`<strong>`, `format: "html"`); the references and the offline baselines are `translate --format html`'s.

--idle-connections N (#27): N connections opened to the server that send nothing or half a request line and stay
open, while 4 clients send --one-client-sentences verses; their latency is compared with the same level without the
idle connections, and the idle ones still open at the end are counted (loopback only; the script raises its own
open-file limit; run the server with --server-args '--request_timeout 600' so the idle ones are not closed first).

The soak: 16 clients for --soak-seconds, every 5th request a bad one (not JSON, a wrong type, empty, an unsupported
pair, too many lines); every good answer checked, every bad one must be a 4xx; the server's RSS is sampled every 10 s.
Results: --json (default benchmarks/results_serve.json) and a section of BENCHMARKS.md between this script's markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench import git_state, others_cpu_use, replace_section, version  # noqa: E402
from machine import cpu_isa, cpu_name  # noqa: E402

SECTION_BEGIN = "<!-- serve_load.py: begin (rewritten by benchmarks/serve_load.py) -->"
SECTION_END = "<!-- serve_load.py: end -->"


def markers(text_format: str) -> tuple[str, str]:
    """The BENCHMARKS.md section a run rewrites: one for plain-text requests, one for HTML requests."""
    if text_format == "text":
        return SECTION_BEGIN, SECTION_END
    return SECTION_BEGIN.replace("serve_load.py:", f"serve_load.py --format {text_format}:"), \
        SECTION_END.replace("serve_load.py:", f"serve_load.py --format {text_format}:")
BAD_BODIES = [b"{not json", json.dumps({"q": 5}).encode(), json.dumps({"q": "  "}).encode(),
              json.dumps({"q": "hola", "source": "es", "target": "fr"}).encode(),
              json.dumps({"q": ["hola"] * 1000, "source": "es", "target": "en"}).encode()]


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo_output/final")
    parser.add_argument("--engines", default="auto",
                        help="comma-separated: auto, transformers, ctranslate2 (default: auto, serve's default)")
    parser.add_argument("--cache_dir", default=None, help="serve's --cache_dir (the conversion of --engine auto)")
    parser.add_argument("--sentences", type=int, default=256, help="test verses per concurrency level (0: no levels)")
    parser.add_argument("--clients", default="1,4,16,64", help="concurrency levels")
    parser.add_argument("--one-client-sentences", type=int, default=64,
                        help="verses for the 1-client level (the slowest)")
    parser.add_argument("--format", choices=("text", "html"), default="text",
                        help="html: each verse as a <p> fragment with inline markup, format html (#28)")
    parser.add_argument("--idle-connections", type=int, default=0,
                        help="idle half-open connections held during a 4-client level (0: none)")
    parser.add_argument("--soak-seconds", type=float, default=0, help="soak duration at 16 clients (0: none)")
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads offline and OMP_NUM_THREADS of the server (default 0: unset)")
    parser.add_argument("--server-args", default="", help="extra arguments for `serve` (e.g. '--max_wait_ms 10')")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results_serve.json"))
    parser.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"), help="'' to leave it alone")
    parser.add_argument("--limit-seconds", type=int, default=3600, help="the server's `timeout`")
    return parser.parse_args(argv)


def test_verses(count: int) -> list[str]:
    from vanilla_transformer.training.bible import load_bible
    from vanilla_transformer.training.evaluation import translation_pairs

    sources, _ = translation_pairs(load_bible()["test"], "es", "en")
    return sources[:count]


def as_html(verse: str) -> str:
    """A verse as a post's HTML: a paragraph, its first word in bold, the text escaped."""
    import html

    first, _, rest = verse.partition(" ")
    return f"<p><strong>{html.escape(first)}</strong> {html.escape(rest)}</p>"


def translator(html: bool):
    """`translate` or, for HTML requests, `translate_html` (what the server calls for each format)."""
    from vanilla_transformer.translation import translate
    from vanilla_transformer.translation.markup import translate_html

    return translate_html if html else translate


def offline(model: str, engine: str, verses: list[str], html: bool = False) -> tuple[list[str], float]:
    from vanilla_transformer.cli.parsing import quiet_progress_bars
    from vanilla_transformer.deployment.engines import load_engine

    quiet_progress_bars()
    loaded = load_engine(model, engine, "cpu")
    translate = translator(html)
    translate(loaded, verses[:8])  # warm-up
    start = time.perf_counter()
    hypotheses = translate(loaded, verses, batch_size=64)  # beam 4, α 0.6 (§6.1), as the server's default
    return hypotheses, time.perf_counter() - start


def alone(model: str, engine: str, verses: list[str], html: bool = False) -> list[str]:
    from vanilla_transformer.deployment.engines import load_engine

    loaded = load_engine(model, engine, "cpu")
    translate = translator(html)
    return [translate(loaded, [verse])[0] for verse in verses]


class ServerProcess:
    def __init__(self, args, engine: str, folder: str):
        import tempfile

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        cache = ["--cache_dir", args.cache_dir] if args.cache_dir else []
        command = ["timeout", "--signal=TERM", str(args.limit_seconds), sys.executable, "-m",
                   "vanilla_transformer.cli.main", "serve", folder, "--engine", engine, *cache, "--host",
                   "127.0.0.1", "--port", "0", "--log_level", "warning", *args.server_args.split()]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self.process.stdout.readline()
        if " on http://" not in line:
            raise RuntimeError(f"the server did not start: {line!r}\n{self.stderr()}")
        self.url = line.rsplit(" on ", 1)[1].strip()
        self.started = line.strip()
        self.choices = [line for line in self.stderr().splitlines() if line.startswith(("engine: ", "workers: "))]
        self.pid = self.server_pid()

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def server_pid(self) -> int:
        """The Python process under `timeout`."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        found = children.read_text().split() if children.exists() else []
        return int(found[0]) if found else self.process.pid

    def rss_mib(self) -> float:
        """The server's resident memory with its worker processes' (`--workers`), if any."""
        total, pids = 0.0, [self.pid]
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
                pids += [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                         for c in (task / "children").read_text().split()]
            except OSError:  # gone meanwhile
                continue
            total += next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
        return total if total else float("nan")

    def stop(self) -> int:
        os.kill(self.pid, signal.SIGTERM)
        return self.process.wait(120)


def idle_level(server: ServerProcess, count: int, verses: list[str], reference: dict) -> dict:
    """4 clients' latency with and without `count` idle connections held open (see the module docstring)."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(count + 1024, hard)), hard))
    host, port = server.url.removeprefix("http://").split(":")
    without = run_level(server.url, 4, verses, reference)
    idle, start = [], time.perf_counter()
    try:
        for index in range(count):
            connection = socket.create_connection((host, int(port)))
            if index % 2:
                connection.sendall(b"POST /translate HTTP/1.1\r\n")
            idle.append(connection)
        opened = time.perf_counter() - start
        held = run_level(server.url, 4, verses, reference)
        still_open = 0
        for connection in idle:
            connection.setblocking(False)
            try:
                still_open += connection.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
    finally:
        for connection in idle:
            connection.close()
    for level in (without, held):
        level.pop("answers")
    return {"idle_connections": count, "seconds_to_open": opened, "still_open": still_open, "without": without,
            "with": held, "server_rss_mib": server.rss_mib()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run_level(url: str, clients: int, verses: list[str], reference: dict, text_format: str = "text") -> dict:
    """`clients` threads, each with one keep-alive connection (the standard library's `http.client`), sending the
    verses one request at a time. The load generator shares the server's cores, so it must cost little: httpx's
    asyncio client took ~4 ms of CPU a request on a 2-core EPYC, a tenth of what the server's two workers had
    (16 clients: 58-68 sentences/s with it, 77-82 with this one, the same server); its CPU time is recorded."""
    import http.client
    import threading

    host, port = url.removeprefix("http://").split(":")
    work = list(enumerate(verses))
    latencies, answers, errors = [], {}, []
    lock = threading.Lock()

    def client():
        connection = http.client.HTTPConnection(host, int(port), timeout=600)
        try:
            while True:
                with lock:
                    if not work:
                        return
                    index, verse = work.pop()
                body = json.dumps({"q": verse, "source": "auto", "target": "en", "format": text_format})
                start = time.perf_counter()
                try:
                    connection.request("POST", "/translate", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    data = response.read()
                    latencies.append(time.perf_counter() - start)
                    if response.status != 200:
                        errors.append(f"{response.status} {data[:200]!r}")
                    else:
                        answers[index] = json.loads(data)["translatedText"]
                except (OSError, http.client.HTTPException) as error:
                    errors.append(repr(error))
                    connection.close()  # reconnects on the next request
        finally:
            connection.close()

    cpu, start = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    wrong = [i for i, text in answers.items() if text != reference[verses[i]]]  # must be none
    return {"clients": clients, "sentences": len(verses), "seconds": seconds,
            "sentences_per_second": len(answers) / seconds, "answered": len(answers), "errors": len(errors),
            "error_samples": errors[:5], "lost": len(verses) - len(answers) - len(errors),
            "wrong": len(wrong), "wrong_samples": [(verses[i], answers[i], reference[verses[i]]) for i in wrong[:5]],
            "answers": answers, "client_cpu_seconds": round(time.process_time() - cpu, 3),
            "latency_p50": percentile(latencies, 50), "latency_p95": percentile(latencies, 95),
            "latency_p99": percentile(latencies, 99)}


async def soak(server: ServerProcess, clients: int, seconds: float, verses: list[str], reference: dict) -> dict:
    import httpx

    deadline = time.monotonic() + seconds
    counts = {"good": 0, "good_right": 0, "bad": 0, "bad_4xx": 0, "other": 0}
    wrong, failures, rss, statuses = [], [], [(0.0, server.rss_mib())], {}
    begin = time.monotonic()
    rng = random.Random(0)

    async def client(number: int):
        async with httpx.AsyncClient(base_url=server.url, timeout=600,
                                     limits=httpx.Limits(max_connections=1)) as http:
            sent = 0
            while time.monotonic() < deadline:
                sent += 1
                try:
                    if (sent + number) % 5 == 0:  # every 5th request of each client, staggered
                        body = BAD_BODIES[rng.randrange(len(BAD_BODIES))]
                        response = await http.post("/translate", content=body,
                                                   headers={"Content-Type": "application/json"})
                        counts["bad"] += 1
                        counts["bad_4xx"] += 400 <= response.status_code < 500
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    else:
                        verse = verses[rng.randrange(len(verses))]
                        response = await http.post("/translate", json={"q": verse, "source": "es", "target": "en"})
                        counts["good"] += 1
                        if response.status_code == 200 and response.json()["translatedText"] == reference[verse]:
                            counts["good_right"] += 1
                        else:
                            wrong.append((verse, response.status_code, response.text[:200]))
                except httpx.HTTPError as error:
                    counts["other"] += 1
                    failures.append(repr(error))

    async def sampler():
        while time.monotonic() < deadline:
            await asyncio.sleep(10)
            rss.append((round(time.monotonic() - begin, 1), server.rss_mib()))

    await asyncio.gather(sampler(), *(client(i) for i in range(clients)))
    rss.append((round(time.monotonic() - begin, 1), server.rss_mib()))
    return {"clients": clients, "seconds": seconds, **counts, "bad_statuses": statuses, "wrong": wrong[:10], "failures": failures[:10],
            "rss_mib": rss, "rss_start_mib": rss[0][1], "rss_end_mib": rss[-1][1],
            "rss_after_first_minute_mib": next((m for t, m in rss if t >= 60), rss[-1][1])}


def machine() -> dict:
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu_name(), "isa": cpu_isa(), "avx_flags": sorted({f for f in flags.split() if f.startswith("avx")}),
            "cores": os.cpu_count(), "others_cpu_start": others_cpu_use(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "git": git_state(),
            "versions": {p: version(p) for p in ("torch", "transformers", "ctranslate2", "starlette", "uvicorn")}}


def table(results: dict) -> list[str]:
    """One Markdown table of every run's levels, each against its own engine's offline batch `translate`."""
    lines = ["| engine (workers) | clients | sentences/s | % of offline batch | p50 s | p99 s | p99 ÷ 1-client p50 | "
             "clients ÷ offline rate s | load generator CPU s | errors | lost | wrong (≠ alone) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in results["runs"]:
        one = next((level["latency_p50"] for level in run["levels"] if level["clients"] == 1), float("nan"))
        offline_rate = run["offline"]["sentences_per_second"]
        for level in run["levels"]:
            lines.append(f"| {run['label']} | {level['clients']} | {level['sentences_per_second']:.2f} | "
                         f"{100 * level['sentences_per_second'] / offline_rate:.0f} % | {level['latency_p50']:.2f} | "
                         f"{level['latency_p99']:.2f} | {level['latency_p99'] / one:.1f}× | "
                         f"{level['clients'] / offline_rate:.2f} | {level.get('client_cpu_seconds', float('nan')):.2f} | "
                         f"{level['errors']} | "
                         f"{level['lost']} | {level['wrong']} |")
    return lines


def markdown(results: dict, command: str) -> str:
    m = results["machine"]
    engines = ", ".join(run["label"] for run in results["runs"])
    begin, end = markers(results.get("format", "text"))
    kind = ", HTML requests" if results.get("format") == "html" else ""
    lines = [begin, "", f"### Serving (`serve`: {engines}{kind}), {results['date']}", "",
             f"Command: `{command}`. CPU: {m['cpu']} ({m.get('isa') or ', '.join(m['avx_flags']) or 'no AVX'}), "
             f"{m['cores']} cores, "
             f"OMP_NUM_THREADS {results['threads'] or 'unset'}; other processes' CPU use at the start "
             f"{m['others_cpu_start']:.0%} (load average {m['load_average'][0]:.1f}). Model: `{results['model']}`. "
             f"git {m['git']}.", ""]
    for run in results["runs"]:
        o, a = run["offline"], run["offline_alone"]
        lines += [f"- `--engine {run['engine']}`: {'; '.join(run['server_choices'])}. Offline `translate"
                  f"{' --format html' if results.get('format') == 'html' else ''}` "
                  f"({o['engine']}) of the same {o['sentences']} verses: {o['sentences_per_second']:.2f} sentences/s "
                  f"in batches of 64, {a['sentences_per_second']:.2f} one verse at a time (the reference answers; "
                  f"batch `translate` differs from them for {run['batch_differs_from_alone']} verses)."]
    if any(run["levels"] for run in results["runs"]):
        lines += ["", *table(results), "", "clients ÷ offline rate: the mean latency a server decoding at offline "
                  "batch `translate`'s speed would have with that many clients each waiting for its answer (Little's "
                  "law: clients = throughput × latency), a floor no batching beats. Load generator CPU: the client "
                  "threads' own CPU seconds, taken from the same cores as the server."]
    for run in results["runs"]:
        if run.get("soak"):
            s = run["soak"]
            lines += ["", f"Soak ({run['label']}): {s['clients']} clients for {s['seconds']:.0f} s, every 5th request "
                          f"bad: {s['good']} good requests ({s['good_right']} right), {s['bad']} bad ({s['bad_4xx']} "
                          f"answered 4xx), {s['other']} transport errors; server RSS (with its worker processes) "
                          f"{s['rss_start_mib']:.0f} MiB at the start, {s['rss_after_first_minute_mib']:.0f} MiB after "
                          f"the first minute, {s['rss_end_mib']:.0f} MiB at the end."]
    lines += ["", f"All figures: `benchmarks/{Path(results['json']).name}`.", end]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, text_format: str) -> None:
    replace_section(path, section, *markers(text_format))


def offline_engine(args, engine: str) -> tuple[str, str]:
    """(engine, folder) that offline `translate` uses to match the server's `--engine engine`: for auto (and for
    ctranslate2 on a model folder) the conversion `serve` would pick, made here first if needed, in the same cache."""
    from vanilla_transformer.deployment.server.defaults import choose_engine, is_ctranslate2_export

    if engine == "transformers" or is_ctranslate2_export(args.model):
        return engine if engine != "auto" else "ctranslate2", args.model
    choice = choose_engine(args.model, "auto", "cpu", cache_dir=args.cache_dir)
    if engine == "ctranslate2" and choice.engine != "ctranslate2":
        raise SystemExit(f"--engines ctranslate2: {choice.reason}")
    return choice.engine, choice.folder


def run_engine(args, engine: str, verses: list[str], levels: list[int]) -> dict:
    """Offline baselines, then the server with `--engine engine` at every level (and the idle test, the soak)."""
    offline_name, folder = offline_engine(args, engine)
    run = {"engine": engine, "levels": []}
    log(f"[{engine}] offline translate of {len(verses)} verses with {offline_name} ({folder}) ...")
    html = args.format == "html"
    hypotheses, seconds = offline(folder, offline_name, verses, html)
    batch_reference = dict(zip(verses, hypotheses))
    run["offline"] = {"engine": offline_name, "sentences": len(verses), "seconds": seconds,
                      "sentences_per_second": len(verses) / seconds}
    log(f"  {len(verses) / seconds:.2f} sentences/s in batches of 64; each verse alone ...")
    start = time.perf_counter()
    reference = dict(zip(verses, alone(folder, offline_name, verses, html)))  # what the server must answer
    run["offline_alone"] = {"sentences": len(verses), "seconds": time.perf_counter() - start}
    run["offline_alone"]["sentences_per_second"] = len(verses) / run["offline_alone"]["seconds"]
    run["batch_differs_from_alone"] = sum(batch_reference[v] != reference[v] for v in verses)
    log(f"  {run['offline_alone']['sentences_per_second']:.2f} sentences/s one at a time; batch translate "
        f"differs from alone for {run['batch_differs_from_alone']} verses")
    # auto: the server chooses itself (and finds the conversion made above); ctranslate2: the export or conversion
    server = ServerProcess(args, engine, folder if engine == "ctranslate2" else args.model)
    run["server_choices"] = server.choices
    workers = next((c.split()[1].rstrip(",") for c in server.choices if c.startswith("workers: ")), "?")
    run["label"] = (f"{engine}{' → ' + offline_name if engine == 'auto' else ''} ({workers})"
                    + (", HTML" if html else ""))
    log(f"server {server.url} (pid {server.pid}), RSS {server.rss_mib():.0f} MiB; {'; '.join(server.choices)}")
    try:
        run_level(server.url, 4, verses[:8], reference, args.format)  # warm-up
        for clients in levels:
            count = args.one_client_sentences if clients == 1 else args.sentences
            sent = (verses[:count] * (clients // count + 1))[:max(count, clients)]  # every client sends at least one
            level = run_level(server.url, clients, sent, reference, args.format)
            level["differs_from_batch_translate"] = sum(
                batch_reference[sent[i]] != text for i, text in level.pop("answers").items())
            run["levels"].append(level)
            log(f"{clients:3d} clients: {level['sentences_per_second']:.2f} sentences/s, p50 {level['latency_p50']:.2f}"
                f" s, p95 {level['latency_p95']:.2f} s, p99 {level['latency_p99']:.2f} s, errors {level['errors']}, "
                f"lost {level['lost']}, wrong {level['wrong']} (differ from batch translate: "
                f"{level['differs_from_batch_translate']})")
        if args.idle_connections:
            log(f"{args.idle_connections} idle connections ...")
            run["idle"] = idle = idle_level(server, args.idle_connections, verses[:args.one_client_sentences],
                                            reference)
            log(f"  opened in {idle['seconds_to_open']:.1f} s, {idle['still_open']} still open at the end; 4 clients "
                f"p50 {idle['without']['latency_p50']:.3f} -> {idle['with']['latency_p50']:.3f} s, p95 "
                f"{idle['without']['latency_p95']:.3f} -> {idle['with']['latency_p95']:.3f} s, errors "
                f"{idle['with']['errors']}, wrong {idle['with']['wrong']}")
        if args.soak_seconds:
            log(f"soak: {args.soak_clients} clients, {args.soak_seconds:.0f} s ...")
            run["soak"] = asyncio.run(soak(server, args.soak_clients, args.soak_seconds, verses, reference))
            s = run["soak"]
            log(f"  good {s['good']} (right {s['good_right']}), bad {s['bad']} (4xx {s['bad_4xx']}), other "
                f"{s['other']}, RSS {s['rss_start_mib']:.0f} -> {s['rss_end_mib']:.0f} MiB")
    finally:
        run["server_exit"] = server.stop()
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.clients.split(",") if c] if args.sentences else []
    verses = test_verses(max(args.sentences, args.one_client_sentences))
    if args.format == "html":
        verses = [as_html(verse) for verse in verses]
    results = {"model": args.model, "format": args.format, "json": args.json, "threads": args.threads, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
               "runs": []}
    for engine in args.engines.split(","):
        results["runs"].append(run_engine(args, engine, verses, levels))
    results["machine"]["others_cpu_end"] = others_cpu_use()
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    command = "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = markdown(results, command.strip())
    print("\n" + section.split("\n", 2)[2].rsplit(markers(args.format)[1], 1)[0], flush=True)
    if args.markdown:
        write_section(Path(args.markdown), section, args.format)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
