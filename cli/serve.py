"""`vanilla-transformer serve MODEL_DIR [MODEL_DIR ...] [--engine auto|transformers|ctranslate2] [--workers auto|N]
[--api_keys FILE] [--port 8080]`.

Several models serve several language pairs, each with its own engine, batcher and workers; a MODEL_DIR may be
written `DIR=SOURCE:TARGET` to give its pair (else its model card's). Requests are routed by `source` / `target`
(deployment/server/routing.py).

`--engine auto` and `--workers auto` (the defaults) are chosen at start (deployment/server/defaults.py) and printed
to stderr with the reason, one line each; the line `serving NAME (ENGINE, N workers) on http://HOST:PORT` on stdout
says the server is up.
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
from ..deployment.server.defaults import is_ctranslate2_export
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
    parser.add_argument("model_dirs", nargs="+", type=model_argument, metavar="MODEL_DIR",
                        help="a model folder, or a CTranslate2 export; several serve several language pairs, routed "
                             "by source and target. DIR=SOURCE:TARGET gives a model's pair (default: its model card's)")
    parser.add_argument("--engine", choices=("auto", *ENGINES), default="auto",
                        help="auto (default): CTranslate2 when it is installed and the model converts (converted on "
                             "the first start into --cache_dir), else transformers; the choice and why are printed. "
                             "Seeded sampling (a seed) needs transformers")
    parser.add_argument("--cache_dir", default=None,
                        help="where --engine auto keeps a model folder's CTranslate2 conversion (default: "
                             "$VANILLA_TRANSFORMER_CACHE/ctranslate2, else ~/.cache/vanilla_transformer/ctranslate2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any free port)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--source_lang", default=None, help="one model's source language code (default: from the "
                                                            "model card; without one any code is accepted)")
    parser.add_argument("--target_lang", default=None, help="one model's target language code (default: from the "
                                                            "model card)")
    parser.add_argument("--api_keys", default=None, metavar="FILE",
                        help='a JSON object of API keys and the requests a minute each may make, {"KEY": 60}: a '
                             "request without a listed key is refused (403), one over its rate gets 429 with "
                             "Retry-After (default: keys are accepted and ignored)")
    for spec in Settings.ranged():  # the server's limits and timeouts, each with its range (settings.py)
        low, high, default = spec.metadata["low"], spec.metadata["high"], spec.default
        parser.add_argument(f"--{spec.name}", type=int if spec.type == "int" else float, default=default,
                            help=f"{spec.metadata['help']} (default: {shown(default)}; from {shown(low)} to "
                                 f"{shown(high)})")
    parser.add_argument("--workers", type=workers_value, default="auto",
                        help="engine replicas, each in its own process decoding its own batches, the CPU threads "
                             f"shared out among them (1: the engine in the server process; at most {MAX_WORKERS}). "
                             "auto (default): from the CPUs and the model's size, printed at start (on 2 cores the "
                             "demo model gets 2 workers of one thread; on a GPU 1)")
    parser.add_argument("--log_level", default="info", choices=("debug", "info", "warning", "error"))
    add_decoding_arguments(parser)  # the defaults of /translate and of the native endpoint's requests
    return parser


def workers_value(text: str) -> int | str:
    """`--workers`: auto or an integer (its range is checked with the other numbers)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be auto or an integer, got {text!r}") from None


def model_argument(text: str) -> tuple[str, tuple[str, str] | None]:
    """(folder, (source, target) or None) of `DIR` or `DIR=SOURCE:TARGET`."""
    folder, equals, pair = text.rpartition("=")
    if not equals or os.path.exists(text):
        return text, None
    source, colon, target = pair.partition(":")
    if not (colon and source.strip() and target.strip()) or source != source.strip() or target != target.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write DIR=SOURCE:TARGET, e.g. runs/es-en/final=es:en")
    return folder, (source, target)


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Every number finite and within its range (one line naming the flag), the model folders and the device."""
    ranges = [(spec.name, spec.metadata["low"], spec.metadata["high"], spec.type == "int")
              for spec in Settings.ranged()]
    if args.workers != "auto":
        ranges.append(("workers", 1, MAX_WORKERS, True))
    for name, low, high, integral in [*ranges, ("port", 0, 65535, True)]:
        try:
            check_number(f"--{name}", getattr(args, name), low, high, integral)
        except SettingsError as error:
            parser.error(str(error))
    if len(args.model_dirs) > 1 and (args.source_lang or args.target_lang):
        parser.error("--source_lang and --target_lang name one model's pair: with several models, write "
                     "DIR=SOURCE:TARGET")
    for model_dir, _ in args.model_dirs:
        if args.engine == "transformers" or (args.engine == "auto" and not is_ctranslate2_export(model_dir)):
            problem = model_folder_problem(model_dir)
        else:
            problem = None if os.path.isdir(model_dir) else f"MODEL_DIR {model_dir} is not a folder"
        if problem:
            parser.error(problem)
    if device_problem(args.device):
        parser.error(device_problem(args.device))


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket; OSError naming the address when it is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP. Without it,
    # Nagle held each answer's body until the client acknowledged its headers, and the client's delayed ACK made
    # every request on a kept-alive connection (Mastodon's, any HTTP client's) wait 40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def start_engine(args, decoding, model_dir: str, models: int = 1, label: str = ""):
    """(engine, the engine's choice, the workers' choice) of one of `models` served models, `auto` resolved and each
    choice printed to stderr with its reason (after `label`, the model's pair, when several are served). With one
    worker the engine loads and decodes in a thread of its own (`EngineThread`, issue #31); with more, this copy only
    tokenizes (`start_replicas` decodes)."""
    from ..deployment.server.defaults import EngineChoice, choose_engine, one_line

    choice = choose_engine(model_dir, args.engine, args.device, decoding, args.cache_dir)
    try:
        engine, workers = load_engine_for(choice, args, models)
    except (ValueError, RuntimeError) as error:  # a damaged cached conversion: the model folder itself still serves
        if args.engine != "auto" or choice.folder == model_dir:
            raise
        choice = EngineChoice("transformers", model_dir, f"CTranslate2 cannot load the model's conversion "
                                                         f"({one_line(error)})")
        engine, workers = load_engine_for(choice, args, models)
    print(f"engine{label}: {choice.engine} ({choice.reason})", file=sys.stderr, flush=True)
    threads = f", {workers.threads} CPU thread{'s' if workers.threads > 1 else ''} each" if workers.threads else ""
    print(f"workers{label}: {workers.workers}{threads} ({workers.reason})", file=sys.stderr, flush=True)
    return engine, choice, workers


def load_engine_for(choice, args, models: int = 1):
    """(engine, the workers' choice) for an engine choice and `--workers`, one of `models` served models."""
    from ..deployment.engines import load_engine
    from ..deployment.server.defaults import WorkerChoice, auto_workers
    from ..deployment.server.engine_thread import EngineThread

    if args.workers == "auto":
        workers = auto_workers(choice.folder, choice.engine, args.device, models)
    else:
        import torch

        # OMP_NUM_THREADS or the CPUs, shared out among the models' workers; one in-process engine of one model
        # keeps the engine's own default
        total = args.workers * models
        threads = max(1, torch.get_num_threads() // total) if total > 1 else 0
        workers = WorkerChoice(args.workers, threads, f"--workers {args.workers}")
    try:
        if workers.workers == 1:
            return EngineThread(lambda: load_engine(choice.folder, choice.engine, args.device,
                                                    threads=workers.threads)), workers
        return load_engine(choice.folder, choice.engine, args.device), workers
    except ImportError as error:  # CTranslate2 not installed
        raise RuntimeError(f"cannot load {choice.folder} with --engine {choice.engine}: {error}") from None


def start_models(command, args, decoding, settings) -> list:
    """Every model loaded (engine, workers) with its pair: `ServedModel`s; a model whose pair is unknown among
    several, or two for one pair, is a usage error naming it (before anything is loaded)."""
    from ..deployment.server.app import ServedModel
    from ..deployment.server.model_info import read_model_info
    from ..deployment.server.routing import check_pairs, pair_of

    planned = []
    for model_dir, given in args.model_dirs:
        info = read_model_info(model_dir)
        source, target = pair_of(model_dir, given, (info.source_lang, info.target_lang),
                                 (args.source_lang, args.target_lang))
        planned.append((model_dir, info, source, target))
    try:
        check_pairs([(model_dir, source, target) for model_dir, _, source, target in planned])
    except ValueError as error:
        command.error(str(error))
    models = []
    try:
        for model_dir, info, source, target in planned:
            label = f" ({source}→{target})" if len(planned) > 1 else ""
            engine, choice, workers = start_engine(args, decoding, model_dir, len(planned), label)
            if engine.unsupported(decoding):  # a default the engine cannot honour (a seed for CTranslate2)
                command.error(engine.unsupported(decoding))
            replicas = None
            if workers.workers > 1:
                from ..deployment.server.workers import start_replicas

                replicas = start_replicas(choice.folder, choice.engine, args.device, workers.workers,
                                          workers.threads, settings.batch_deadline)
            models.append((ServedModel(engine, info, source, target, replicas), choice, workers))
    except BaseException:
        close_replicas(models)
        raise
    return models


def close_replicas(models) -> None:
    for model, _, _ in models:
        for replica in model.replicas or []:
            replica.close(timeout=5)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from ..deployment.server.app import create_app, drain
    from ..deployment.server.connections import GuardedServer, guarded_protocol, raise_file_limit
    from ..deployment.server.keys import KeysError, Quotas, RedactKeys, load_api_keys

    command = parser()
    args = command.parse_args(argv)
    check_arguments(command, args)
    decoding = decoding_options(command, args)
    quotas = None
    if args.api_keys:
        try:
            quotas = Quotas(load_api_keys(args.api_keys))
        except KeysError as error:
            command.error(str(error))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_progress_bars()
    settings = Settings(**{spec.name: getattr(args, spec.name) for spec in Settings.ranged()}, decoding=decoding,
                        source_lang=args.source_lang, target_lang=args.target_lang)
    settings.max_connections = raise_file_limit(settings.max_connections)
    models = start_models(command, args, decoding, settings)
    try:
        sock = listen(args.host, args.port)
    except OSError:
        close_replicas(models)
        raise
    app = create_app(settings=settings, models=[model for model, _, _ in models], quotas=quotas)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", access_log=args.log_level == "debug",
                            http=guarded_protocol(settings.request_timeout, settings.max_connections),
                            backlog=2048)
    server = GuardedServer(config)
    logging.getLogger("uvicorn.access").addFilter(RedactKeys())  # (uvicorn configured its loggers above)
    stop = server.handle_exit

    def handle_exit(sig, frame):  # stop taking connections (uvicorn); queued sentences go now, without waiting
        drain(app)
        app.state.stopping = True
        stop(sig, frame)

    server.handle_exit = handle_exit
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; these handlers make that a normal exit (status 0).
    stops = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stops.append(number))
    print(f"serving {serving_line(models)} on http://{host}:{port}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        print("vanilla-transformer serve: error: the server did not start (see the log above)", file=sys.stderr)
        return 1
    logger.info("stopped")
    return 0


def serving_line(models) -> str:
    """NAME (ENGINE, N workers), each model's, its pair first when several are served."""
    parts = []
    for model, choice, workers in models:
        pair = f"{model.source}→{model.target} " if len(models) > 1 else ""
        parts.append(f"{pair}{model.info.name} ({choice.engine}, {workers.workers} worker"
                     f"{'s' if workers.workers > 1 else ''})")
    return ", ".join(parts)


if __name__ == "__main__":
    from .main import run_command

    raise SystemExit(run_command("serve", main))
