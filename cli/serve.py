"""`vanilla-transformer serve MODEL_DIR [--engine transformers|ctranslate2] [--host 127.0.0.1] [--port 8080]`.

The model is loaded and the port bound before the server starts: a folder that cannot be loaded or a port in use is
one line `vanilla-transformer serve: error: ...` and exit status 1 (2 for bad arguments). SIGTERM (or Ctrl-C) stops
taking connections, lets the requests in flight finish (their queued sentences included), and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from ..deployment.engines import ENGINES
from ..deployment.server.app import Settings
from ..translation.folders import device_problem, model_folder_problem
from .parsing import CommandParser, add_decoding_arguments, decoding_options, quiet_progress_bars

logger = logging.getLogger(__name__)

DEFAULTS = Settings()


def parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="vanilla-transformer serve",
        description="Serve a model over HTTP: LibreTranslate-compatible POST /translate, the native POST "
                    "/v1/translate (beam size, n-best, max length), GET /health, GET /metrics (Prometheus), "
                    "GET /openapi.json and a web page at /. Concurrent requests are translated together in "
                    "length-sorted batches (dynamic batching); each sentence's translation is the one `translate` "
                    "gives it alone.")
    parser.add_argument("model_dir", help="a model folder, or with --engine ctranslate2 an exported folder")
    parser.add_argument("--engine", choices=ENGINES, default="transformers")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free port)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--source_lang", default=None, help="the model's source language code (default: from the "
                                                            "model card; without one any code is accepted)")
    parser.add_argument("--target_lang", default=None, help="the model's target language code (default: from the "
                                                            "model card)")
    parser.add_argument("--max_beams", type=int, default=DEFAULTS.max_beams,
                        help="num_beams and n_best of a native request at most")
    parser.add_argument("--max_chars", type=int, default=DEFAULTS.max_chars,
                        help="characters of one request at most (413 beyond)")
    parser.add_argument("--max_sentences", type=int, default=DEFAULTS.max_sentences,
                        help="lines of one request at most (413 beyond)")
    parser.add_argument("--max_batch_tokens", type=int, default=DEFAULTS.max_batch_tokens,
                        help="padded source tokens (rows x longest) of one batch at most")
    parser.add_argument("--max_batch_size", type=int, default=DEFAULTS.max_batch_size, help="sentences per batch")
    parser.add_argument("--max_wait_ms", type=float, default=DEFAULTS.max_wait_ms,
                        help="a batch waits for more sentences until none has come for this long (at most 8 times "
                             "this after its first sentence; default: 5)")
    parser.add_argument("--workers", type=int, default=1,
                        help="engine replicas, each in its own process decoding its own batches, the CPU threads "
                             "shared out among them (default: 1, the engine in the server process). On a CPU with "
                             "few cores and a small model, 2 decodes concurrent requests faster than 1")
    parser.add_argument("--max_queue", type=int, default=DEFAULTS.max_queue,
                        help="sentences waiting at most; beyond, requests get 503 with Retry-After")
    parser.add_argument("--log_level", default="info", choices=("debug", "info", "warning", "error"))
    add_decoding_arguments(parser)  # the defaults of /translate and of the native endpoint's requests
    return parser


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    for name in ("max_beams", "max_chars", "max_sentences", "max_batch_tokens", "max_batch_size", "max_queue",
                 "workers"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        parser.error(f"--max_wait_ms must not be negative, got {args.max_wait_ms}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, got {args.port}")
    if args.engine == "transformers":
        problem = model_folder_problem(args.model_dir)
    else:
        problem = None if os.path.isdir(args.model_dir) else f"MODEL_DIR {args.model_dir} is not a folder"
    for problem in (problem, device_problem(args.device)):
        if problem:
            parser.error(problem)


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket; OSError naming the address when it is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from ..deployment.engines import load_engine
    from ..deployment.server.app import create_app
    from ..deployment.server.model_info import read_model_info

    command = parser()
    args = command.parse_args(argv)
    check_arguments(command, args)
    decoding = decoding_options(command, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_progress_bars()
    try:
        engine = load_engine(args.model_dir, args.engine, args.device)
    except ImportError as error:  # CTranslate2 not installed
        raise RuntimeError(f"cannot load {args.model_dir} with --engine {args.engine}: {error}") from None
    replicas = None
    if args.workers > 1:
        import torch

        from ..deployment.server.workers import start_replicas

        threads = max(1, torch.get_num_threads() // args.workers)  # OMP_NUM_THREADS or the CPUs, shared out
        replicas = start_replicas(args.model_dir, args.engine, args.device, args.workers, threads)
        logger.info("%d workers, %d CPU thread(s) each", args.workers, threads)
    settings = Settings(max_chars=args.max_chars, max_sentences=args.max_sentences,
                        max_batch_tokens=args.max_batch_tokens, max_batch_size=args.max_batch_size,
                        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_beams=args.max_beams,
                        decoding=decoding, source_lang=args.source_lang, target_lang=args.target_lang)
    try:
        sock = listen(args.host, args.port)
    except OSError:
        for replica in replicas or []:
            replica.close(timeout=5)
        raise
    info = read_model_info(args.model_dir)
    app = create_app(engine, settings, replicas, info)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", access_log=args.log_level == "debug")
    server = uvicorn.Server(config)
    stop = server.handle_exit

    def handle_exit(sig, frame):  # stop taking connections (uvicorn); queued sentences go now, without waiting
        app.state.translation.batcher.drain()
        app.state.stopping = True
        stop(sig, frame)

    server.handle_exit = handle_exit
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; these handlers make that a normal exit (status 0).
    stops = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stops.append(number))
    print(f"serving {info.name} ({args.engine}) on http://{host}:{port}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        print("vanilla-transformer serve: error: the server did not start (see the log above)", file=sys.stderr)
        return 1
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    from .main import run_command

    raise SystemExit(run_command("serve", main))
