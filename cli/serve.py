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
from ..deployment.server.settings import Settings, SettingsError, check_number, shown
from ..translation.folders import device_problem, model_folder_problem
from .parsing import CommandParser, add_decoding_arguments, decoding_options, quiet_progress_bars

logger = logging.getLogger(__name__)

MAX_WORKERS = 256


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
    for spec in Settings.ranged():  # the server's limits and timeouts, each with its range (settings.py)
        low, high, default = spec.metadata["low"], spec.metadata["high"], spec.default
        parser.add_argument(f"--{spec.name}", type=int if spec.type == "int" else float, default=default,
                            help=f"{spec.metadata['help']} (default: {shown(default)}; from {shown(low)} to "
                                 f"{shown(high)})")
    parser.add_argument("--workers", type=int, default=1,
                        help="engine replicas, each in its own process decoding its own batches, the CPU threads "
                             f"shared out among them (default: 1, the engine in the server process; at most "
                             f"{MAX_WORKERS}). On a CPU with few cores and a small model, 2 decodes concurrent "
                             "requests faster than 1")
    parser.add_argument("--log_level", default="info", choices=("debug", "info", "warning", "error"))
    add_decoding_arguments(parser)  # the defaults of /translate and of the native endpoint's requests
    return parser


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Every number finite and within its range (one line naming the flag), the model folder and the device."""
    ranges = [(spec.name, spec.metadata["low"], spec.metadata["high"], spec.type == "int")
              for spec in Settings.ranged()]
    for name, low, high, integral in [*ranges, ("workers", 1, MAX_WORKERS, True), ("port", 0, 65535, True)]:
        try:
            check_number(f"--{name}", getattr(args, name), low, high, integral)
        except SettingsError as error:
            parser.error(str(error))
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
    from ..deployment.server.connections import GuardedServer, guarded_protocol, raise_file_limit
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
    if engine.unsupported(decoding):  # a default the engine cannot honour (a seed for CTranslate2)
        command.error(engine.unsupported(decoding))
    settings = Settings(**{spec.name: getattr(args, spec.name) for spec in Settings.ranged()}, decoding=decoding,
                        source_lang=args.source_lang, target_lang=args.target_lang)
    settings.max_connections = raise_file_limit(settings.max_connections)
    replicas = None
    if args.workers > 1:
        import torch

        from ..deployment.server.workers import start_replicas

        threads = max(1, torch.get_num_threads() // args.workers)  # OMP_NUM_THREADS or the CPUs, shared out
        replicas = start_replicas(args.model_dir, args.engine, args.device, args.workers, threads,
                                  settings.batch_deadline)
        logger.info("%d workers, %d CPU thread(s) each", args.workers, threads)
    try:
        sock = listen(args.host, args.port)
    except OSError:
        for replica in replicas or []:
            replica.close(timeout=5)
        raise
    info = read_model_info(args.model_dir)
    app = create_app(engine, settings, replicas, info)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", access_log=args.log_level == "debug",
                            http=guarded_protocol(settings.request_timeout, settings.max_connections),
                            backlog=2048)
    server = GuardedServer(config)
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
