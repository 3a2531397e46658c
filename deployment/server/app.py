"""The HTTP application (Starlette): the endpoints, wired to request validation (validation.py), the batcher
(batching.py) and the metrics.

* `POST /translate`: LibreTranslate's API (JSON or form fields `q` — a string or a list of strings —, `source`,
  `target`, `format` — `text` or `html`; answers `{"translatedText": ...}` of the same shape as `q`), so
  LibreTranslate clients work (Mastodon's sends its posts as HTML).
  `GET|POST /languages` as LibreTranslate's.
* `POST /v1/translate`: the native API, JSON `{"text": str | [str]}` and any `DecodingOptions` field (`num_beams`,
  `length_penalty`, `n_best`, `max_new_tokens`, `do_sample`, `top_k`, `top_p`, `temperature`, `seed`) and
  `format`, answers `{"translations": ..., "alternatives": ...}`.
* `GET /health`, `GET /metrics` (Prometheus text format), `GET /openapi.json`, the web page at `/`.

A text is translated line by line as `vanilla-transformer translate` translates its input lines (`translation.plan`
and `assemble`); an HTML fragment's texts are found and put back by `translation.markup`. Every problem with a
request is a 4xx answer `{"error": "..."}` naming it, found before anything is queued (validation.py); a full queue,
a worker that failed or a stopping server is 503; only an engine's own failure is a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from ...translation import DecodingOptions, DecodingOptionsError, assemble, plan
from ...translation.markup import HtmlBatch
from .batching import BatchFailed, Batcher, Broken, QueueFull, ShuttingDown
from .detection import Detector, text_of
from .metrics import Metrics, ModelMetrics
from .model_info import ModelInfo
from .routing import ModelRoute, Router
from .settings import Settings
from .validation import RequestError, ValidationError, parse_detect, parse_libretranslate, parse_native

logger = logging.getLogger(__name__)

__all__ = ["RequestError", "ServedModel", "Settings", "Translation", "create_app"]


class Answer(JSONResponse):
    """JSON as UTF-8; a string no UTF-8 can hold (a lone surrogate a client sent, echoed in a message) is escaped
    instead of failing the answer."""

    def render(self, content) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode("ascii")


@dataclasses.dataclass
class ServedModel:
    """One model of the server: its engine (and worker processes), its card, and the pair it serves (None:
    unknown, any code accepted; one model only, routing.py)."""

    engine: object
    info: ModelInfo
    source: str | None = None
    target: str | None = None
    replicas: list | None = None


class Translation:
    """One model's engine, its batcher and metrics: `translation.plan` turns texts into pieces, the batcher decodes
    them with other requests' pieces, `translation.assemble` joins the answers."""

    def __init__(self, engine, settings: Settings, metrics: ModelMetrics, replicas: list | None = None,
                 info: ModelInfo | None = None):
        self.engine, self.settings, self.metrics = engine, settings, metrics
        self.info = info or ModelInfo(name=engine.name)
        self.replicas = replicas or []  # engine copies in worker processes (`workers.py`); none: the engine itself
        generate = [replica.generate for replica in self.replicas] or engine.generate
        self.batcher = Batcher(generate, settings.max_batch_tokens, settings.max_batch_size,
                               settings.max_wait_ms / 1000, settings.max_queue, metrics.observe_batch,
                               metrics.queue_wait.observe)

    async def translate(self, request: Request, texts: list[str], options: DecodingOptions) -> list[list[str]]:
        """The `n_best` translations of each text (lines joined with newlines)."""
        try:
            work = plan(self.engine, texts, options)
        except DecodingOptionsError as error:  # an option this engine cannot honour (a seed for CTranslate2)
            raise RequestError(str(error), reason="invalid_option") from None
        self.metrics.sentences.inc(sum(len(text_lines) for text_lines in work.lines))
        self.metrics.tokens.inc(sum(map(len, work.rows)))
        try:
            pieces = self.batcher.submit(work.rows, work.limits, options)
        except QueueFull as error:
            raise RequestError(f"{error}; retry later", 503, "queue_full",
                               {"Retry-After": str(self.settings.retry_after)}) from None
        except ShuttingDown as error:
            raise RequestError(str(error), 503, "shutting_down") from None
        except Broken as error:
            raise RequestError(str(error), 503, "broken") from None
        self.metrics.queued.set(self.batcher.queued())
        answers = asyncio.gather(*(piece.future for piece in pieces))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait([answers, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not answers.done():  # the client went away (or this task was cancelled): drop its queued work
                self.batcher.cancel(pieces)
                answers.cancel()
            gone.cancel()
        if not answers.done() or answers.cancelled():
            raise RequestError("the client disconnected", 499, "client_disconnected")
        try:
            return assemble(work, answers.result(), options.n_best)  # raises the engine's error, if any
        except BatchFailed as error:
            raise RequestError(f"translation failed: {error}; retry later", 503, "worker_failed",
                               {"Retry-After": str(self.settings.retry_after)}) from None
        except Broken as error:
            raise RequestError(str(error), 503, "broken") from None

    def health(self, stopping: bool) -> tuple[int, dict]:
        """(status code, answer) of `/health`: ok; degraded (some worker restarting: 200, requests still served);
        503 when stopping, when a batching thread stopped (broken) or when no worker can decode (unavailable)."""
        answer: dict = {"queued": self.batcher.queued()}
        problem = self.batcher.problem()
        if self.replicas:
            answer["workers"] = workers = [replica.status() for replica in self.replicas]
            working = [worker for worker in workers if worker["state"] in ("ready", "decoding")]
        else:
            answer["batches_running_s"] = {name: round(seconds, 3) for name, seconds in self.batcher.busy().items()}
            workers = working = []
        if stopping:
            status = "stopping"
        elif problem:
            status, answer["problem"] = "broken", problem
        elif workers and not working:
            status = "unavailable"
        else:
            status = "degraded" if len(working) < len(workers) else "ok"
        return (200 if status in ("ok", "degraded") else 503), {"status": status, **answer}


async def translate_texts(translation: Translation, request: Request, texts: list[str], options: DecodingOptions,
                          html: bool) -> list[list[str]]:
    """`translation.translate`; for HTML fragments, their texts (`translation.markup`), put back in their markup
    (parsing and writing in a thread: a large fragment takes a moment the event loop should not wait)."""
    if not html:
        return await translation.translate(request, texts, options)
    batch = await asyncio.to_thread(HtmlBatch, texts)
    outputs = await translation.translate(request, batch.texts, options) if batch.texts else []
    return await asyncio.to_thread(batch.rebuild_alternatives, outputs, options.n_best)


async def translate_routed(state, request: Request, texts: list[str], source: str, target: str | None,
                           options: DecodingOptions, html: bool) -> tuple[list[list[str]], list[dict] | None]:
    """(each text's `n_best` translations, each text's detected language or None): every text goes to the model of
    its pair. With `source: "auto"` the source is identified among the server's sources (detection.py; HTML by its
    text), so the texts of one request may go to different models, decoded at once; a text already in `target` comes
    back unchanged (as LibreTranslate's), one in a language with no model into `target` is a 400."""
    router: Router = state.router
    detected = None
    if source == "auto" and not router.wildcard and router.sources():
        detector = state.detector()
        detected = await asyncio.to_thread(
            lambda: detector.detect_each([text_of(text) for text in texts] if html else texts))
        groups: dict[str, list[int]] = {}
        for index, found in enumerate(detected):
            groups.setdefault(found["language"], []).append(index)
        routes = [(None if language == target else router.find(language, target), indices)
                  for language, indices in groups.items()]
    else:
        routes = [(router.find(source, target), list(range(len(texts))))]
    outputs: list = [None] * len(texts)

    async def run(route: ModelRoute | None, indices: list[int]) -> None:
        if route is None:  # already in the target language
            answers = [[texts[i]] * options.n_best for i in indices]
        else:
            answers = await translate_texts(route.translation, request, [texts[i] for i in indices], options, html)
        for index, answer in zip(indices, answers):
            outputs[index] = answer

    tasks = [asyncio.ensure_future(run(route, indices)) for route, indices in routes]
    try:
        await asyncio.gather(*tasks)
    finally:  # one group failed (or the client went away): the others' queued work goes too
        for task in tasks:
            task.cancel()
    return outputs, detected


async def disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (the body was read before)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ---------------------------------------------------------------------------------------------------------------------
# The endpoints (their docstrings are the OpenAPI description)
# ---------------------------------------------------------------------------------------------------------------------


def answered(endpoint: str):
    """Counts and times an endpoint's answers; a RequestError becomes its JSON answer, any other error a 500."""

    def wrap(handler):
        async def endpoint_function(request: Request) -> Response:
            metrics = request.app.state.metrics
            start = time.perf_counter()
            try:
                response = await handler(request)
            except RequestError as error:
                metrics.errors.labels(error.reason).inc()
                response = Answer({"error": str(error)}, error.status, headers=error.headers)
            except Exception as error:  # noqa: BLE001  (an engine failure: one line to the client, logged)
                logger.exception("%s failed", endpoint)
                metrics.errors.labels("engine_error").inc()
                response = Answer({"error": f"translation failed: {error}"}, 500)
            metrics.requests.labels(endpoint, str(response.status_code)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            return response

        endpoint_function.__doc__ = handler.__doc__
        endpoint_function.__name__ = handler.__name__
        return endpoint_function

    return wrap


@answered("/translate")
async def libretranslate(request: Request) -> Response:
    """
    summary: Translate (LibreTranslate-compatible)
    description: JSON or form fields. `q` is a string or a list of strings; `translatedText` has its shape.
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [q, target]
            properties:
              q: {oneOf: [{type: string}, {type: array, items: {type: string}}]}
              source: {type: string, description: "the model's source language or auto"}
              target: {type: string}
              format: {type: string, enum: [text, html], description: "html: q holds HTML fragments; their
                markup, code, links, mentions and hashtags come back unchanged"}
              api_key: {type: string, description: "the client's key (serve --api_keys), else ignored"}
    responses:
      200: {description: "{translatedText: string | [string]}, and with source auto detectedLanguage: {confidence:
        0-100, language} (a list of them, one per q, when q is a list)"}
      400: {description: "{error: string}: bad JSON, wrong types, empty text, unsupported language pair (naming
        the pairs served)"}
      403: {description: "{error: string}: a missing or unknown api_key (serve --api_keys)"}
      408: {description: "{error: string}: the body did not arrive within --request_timeout"}
      413: {description: "{error: string}: more than --max_chars characters or --max_sentences lines, or a body
        larger than 12 bytes per --max_chars character and 64 KiB"}
      429: {description: "{error: string}: the api_key made its requests per minute (Retry-After)"}
      503: {description: "{error: string}: the queue is full (Retry-After), a worker failed, or the server is
        stopping"}
    """
    state = request.app.state
    valid = await parse_libretranslate(request, state.settings, state.quotas)
    options = dataclasses.replace(state.settings.decoding, n_best=1)
    outputs, detected = await translate_routed(state, request, valid.texts, valid.source, valid.target, options,
                                               valid.html)
    translated = [alternatives[0] for alternatives in outputs]
    answer = {"translatedText": translated[0] if valid.single else translated}
    if detected is not None:
        answer["detectedLanguage"] = detected[0] if valid.single else detected
    return Answer(answer)


@answered("/v1/translate")
async def native(request: Request) -> Response:
    """
    summary: Translate with decoding options
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [text]
            properties:
              text: {oneOf: [{type: string}, {type: array, items: {type: string}}]}
              format: {type: string, enum: [text, html], default: text}
              source: {type: string, default: auto, description: "with several models: the pair's source, or auto"}
              target: {type: string, description: "with several models: the pair's target"}
              api_key: {type: string, description: "the client's key (serve --api_keys), else ignored"}
              num_beams: {type: integer, minimum: 1, description: "default 4 (§6.1), 1 with do_sample"}
              length_penalty: {type: number, minimum: -10, maximum: 10, default: 0.6}
              n_best: {type: integer, minimum: 1, description: "at most num_beams (samples with do_sample)"}
              max_new_tokens: {type: integer, minimum: 1, description: "caps the length + 50 rule"}
              do_sample: {type: boolean, default: false}
              top_k: {type: integer, minimum: 1, description: "sampling only"}
              top_p: {type: number, exclusiveMinimum: 0, maximum: 1, description: "sampling only"}
              temperature: {type: number, exclusiveMinimum: 0, maximum: 100, description: "sampling only"}
              seed: {type: integer, minimum: 0, description: "sampling: the same text and seed give the same
                translation, whatever else the server decodes with it"}
    responses:
      200: {description: "{translations: string | [string], alternatives: [[string]] (with n_best > 1)}"}
      400: {description: "{error: string}: bad JSON, wrong types, options out of range or not finite"}
      408: {description: "{error: string}: the body did not arrive within --request_timeout"}
      413: {description: "{error: string}: too many characters or lines, or too large a body"}
      503: {description: "{error: string}: the queue is full, a worker failed, or the server is stopping"}
    """
    state = request.app.state
    valid = await parse_native(request, state.settings, state.quotas)
    target = valid.target if valid.target is not None or len(state.router.routes) > 1 else \
        state.router.routes[0].target
    outputs, detected = await translate_routed(state, request, valid.texts, valid.source, target, valid.options,
                                               valid.html)
    best = [alternatives[0] for alternatives in outputs]
    answer = {"translations": best[0] if valid.single else best}
    if valid.options.n_best > 1:
        answer["alternatives"] = outputs[0] if valid.single else outputs
    if detected is not None and valid.source == "auto" and len(state.router.routes) > 1:
        answer["detectedLanguage"] = detected[0] if valid.single else detected
    return Answer(answer)


@answered("/languages")
async def languages(request: Request) -> Response:
    """
    summary: The language pairs served (LibreTranslate-compatible)
    responses:
      200: {description: "[{code, name, targets}]: every source with all its targets"}
    """
    return Answer(request.app.state.router.languages())


@answered("/detect")
async def detect(request: Request) -> Response:
    """
    summary: Identify a text's language among the server's sources (LibreTranslate-compatible)
    description: JSON or form fields `q` (a string, or a list of strings) and `api_key`.
    requestBody:
      content:
        application/json:
          schema:
            type: object
            required: [q]
            properties:
              q: {oneOf: [{type: string}, {type: array, items: {type: string}}]}
              api_key: {type: string}
    responses:
      200: {description: "[{confidence: 0-100, language}], best first (a list of them per text when q is a
        list)"}
      400: {description: "{error: string}: bad JSON, empty text, or no source language known to the server"}
      403: {description: "{error: string}: a missing or unknown api_key (serve --api_keys)"}
      429: {description: "{error: string}: the api_key made its requests per minute (Retry-After)"}
    """
    state = request.app.state
    texts, single = await parse_detect(request, state.settings, state.quotas)
    if not state.router.sources():
        raise ValidationError("this server's model has no known source language: nothing to identify (serve "
                              "DIR=SOURCE:TARGET, or --source_lang)", reason="no_languages")
    detector = state.detector()
    ranked = await asyncio.to_thread(lambda: [detector.rank(text) for text in texts])
    return Answer(ranked[0] if single else ranked)


@answered("/health")
async def health(request: Request) -> Response:
    """
    summary: Whether the server takes requests, and each model's state, card (name, direction, scores) and workers
    responses:
      200: {description: "{status: ok | degraded (a worker restarting), models: [{model, engine, source_lang,
        target_lang, metrics, status, queued, workers: [{pid, state, restarts, seconds, deadline_s}] (with
        --workers)}], and with one model its fields at the top level too}"}
      503: {description: "{status: stopping | broken (a batching thread stopped: problem) | unavailable (no worker
        can decode), ...}: the worst of the models'"}
    """
    state = request.app.state
    models = []
    for route in state.router.routes:
        translation = route.translation
        code, answer = translation.health(state.stopping)
        info = translation.info
        models.append({"model": info.name, "engine": translation.engine.name, "source_lang": route.source,
                       "target_lang": route.target, "metrics": info.metrics, **answer})
    order = ["ok", "degraded", "unavailable", "broken", "stopping"]
    status = max((model["status"] for model in models), key=order.index)
    answer = {**(models[0] if len(models) == 1 else {}), "status": status, "models": models}
    return Answer(answer, 200 if status in ("ok", "degraded") else 503)


async def prometheus(request: Request) -> Response:
    """
    summary: Prometheus metrics (text format)
    responses:
      200: {description: "requests, sentences, tokens, batch sizes, queue wait and latency histograms, errors"}
    """
    state = request.app.state
    for route in state.router.routes:
        route.translation.metrics.queued.set(route.translation.batcher.queued())
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


async def page(request: Request) -> Response:
    return HTMLResponse(resources.files(__package__).joinpath("index.html").read_text(encoding="utf-8"))


SCHEMAS = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "vanilla-transformer translation server",
                                                        "version": "1"}})


async def openapi(request: Request) -> Response:
    return JSONResponse(SCHEMAS.get_schema(routes=request.app.routes))


async def http_error(request: Request, error: HTTPException) -> Response:
    return Answer({"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code,
                  headers=error.headers)


ROUTES = [
    Route("/", page, include_in_schema=False),
    Route("/translate", libretranslate, methods=["POST"]),
    Route("/v1/translate", native, methods=["POST"]),
    Route("/languages", languages, methods=["GET", "POST"]),
    Route("/detect", detect, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
    Route("/openapi.json", openapi, include_in_schema=False),
]


# ---------------------------------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------------------------------


def create_app(engine=None, settings: Settings | None = None, replicas: list | None = None,
               info: ModelInfo | None = None, models: list[ServedModel] | None = None,
               quotas=None) -> Starlette:
    """The server for `engine` (`deployment.engines.load_engine`), decoding with `replicas` when given (`workers.py`;
    the engine then only tokenizes), or for several `models`, each with its own batcher (routing.py); `quotas`
    (keys.py) admits API keys, None: keys are ignored. The batchers' workers (and the replicas) stop with the
    application's lifespan: queued work is finished first."""
    settings = settings or Settings()
    if models is None:
        info = info or ModelInfo(name=engine.name)
        models = [ServedModel(engine, info, settings.source_lang or info.source_lang,
                              settings.target_lang or info.target_lang, replicas)]
    metrics = Metrics()
    routes = []
    for model in models:
        route = ModelRoute(None, model.source, model.target)
        route.translation = Translation(model.engine, settings, metrics.of(route.label), model.replicas, model.info)
        routes.append(route)
    router = Router(routes)
    detectors: list[Detector] = []

    def detector() -> Detector:  # loaded on first use (a fraction of a second), once
        if not detectors:
            detectors.append(Detector(router.sources()))
        return detectors[0]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        app.state.stopping = True  # uvicorn has finished the requests in flight
        loop = asyncio.get_running_loop()
        for route in routes:
            await loop.run_in_executor(None, route.translation.batcher.close)
            for replica in route.translation.replicas:
                await loop.run_in_executor(None, replica.close)

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.router, app.state.settings, app.state.metrics = router, settings, metrics
    app.state.translation = routes[0].translation  # (the first model: what one-model code and tests read)
    app.state.info = routes[0].translation.info
    app.state.detector, app.state.quotas = detector, quotas
    app.state.stopping = False  # set on SIGTERM (`command`) and at the lifespan's end
    return app


def drain(app: Starlette) -> None:
    """Every model's queued sentences decoded now, without waiting for company (the server is stopping)."""
    for route in app.state.router.routes:
        route.translation.batcher.drain()
