"""Resident memory of `vanilla-transformer serve` with 1, 2, 3 models (#28): what each model served adds.

The same model folder is served N times as N different pairs (`DIR=s1:t1 DIR=s2:t2 ...`: each copy gets its own
engine, batcher and workers, as different models would); after one request to every pair (the first decode's
buffers), the resident set (VmRSS in /proc) of the server process and of its worker processes is summed. With
`--workers 1` (the default here) the engine runs in the server process; with more, each worker holds a copy.

    nice -n 10 python benchmarks/serve_memory.py runs/demo/final --models 1 2 3 [--engine transformers]
        [--workers 1] [--json benchmarks/serve_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from machine import cpu_name

START_SECONDS = 600


def rss_mib(pid: int) -> float:
    """VmRSS of one process, in MiB (0 when it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """The process's children, grandchildren ... (from /proc/*/stat's parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def measure(model_dir: str, count: int, engine: str, workers: str) -> dict:
    """Start a server with `count` copies of the model, translate once per pair, read its memory, stop it."""
    pairs = [(f"s{i}", f"t{i}") for i in range(1, count + 1)]
    command = [sys.executable, "-m", "vanilla_transformer.cli.main", "serve",
               *[f"{model_dir}={source}:{target}" for source, target in pairs], "--engine", engine,
               "--workers", workers, "--port", "0", "--log_level", "warning"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], START_SECONDS)
        line = server.stdout.readline() if ready else ""
        if " on http://" not in line:
            raise RuntimeError(f"the server did not start: {line}{server.stderr.read() if server.poll() else ''}")
        url = line.rsplit(" on ", 1)[1].strip()
        started = time.perf_counter()
        for source, target in pairs:
            body = json.dumps({"q": "Y dijo Dios: Sea la luz; y fue la luz.", "source": source,
                               "target": target}).encode()
            request = urllib.request.Request(url + "/translate", body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=300) as response:
                json.loads(response.read())
        time.sleep(1.0)
        processes = [server.pid, *descendants(server.pid)]
        memory = {pid: rss_mib(pid) for pid in processes}
        return {"models": count, "processes": len(processes), "rss_mib": round(sum(memory.values()), 1),
                "server_rss_mib": round(memory[server.pid], 1), "requests_s": round(time.perf_counter() - started, 2)}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--models", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--engine", default="transformers")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    rows = [measure(args.model_dir, count, args.engine, args.workers) for count in args.models]
    first = rows[0]
    print(f"CPU: {cpu_name()} ({os.cpu_count()} CPUs); {args.model_dir}; --engine {args.engine} --workers "
          f"{args.workers}")
    print("| models | processes | RSS, all processes (MiB) | added per model beyond the first (MiB) |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        extra = row["models"] - first["models"]
        added = f"{(row['rss_mib'] - first['rss_mib']) / extra:.1f}" if extra else "–"
        row["added_per_model_mib"] = None if not extra else round((row["rss_mib"] - first["rss_mib"]) / extra, 1)
        print(f"| {row['models']} | {row['processes']} | {row['rss_mib']:.1f} | {added} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "model_dir": args.model_dir,
                                               "engine": args.engine, "workers": args.workers, "rows": rows},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
