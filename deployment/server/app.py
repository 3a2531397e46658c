"""The HTTP application (Starlette): endpoints, request checking, and the route from a request to the batcher and back.

* `POST /translate`: LibreTranslate's API (JSON or form fields `q` — a string or a list of strings —, `source`,
  `target`, `format`; answers `{"translatedText": ...}` of the same shape as `q`), so LibreTranslate clients work.
  `GET|POST /languages` as LibreTranslate's.
* `POST /v1/translate`: the native API, JSON `{"text": str | [str], "num_beams", "length_penalty", "n_best",
  "max_new_tokens"}`, answers `{"translations": ..., "alternatives": ...}`.
* `GET /health`, `GET /metrics` (Prometheus text format), `GET /openapi.json`, the web page at `/`.

A text is translated line by line as `vanilla-transformer translate` translates its input lines: a blank line gives a
blank line, a line longer than the model's length limit is split at sentence boundaries (`split_to_fit`) and the
pieces' translations joined. Every problem with a request is a 4xx answer `{"error": "..."}` naming it, found before
anything is queued, so a bad request never reaches a batch; a full queue is 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from ...translation import DecodingOptions, DecodingOptionsError, assemble, plan
from .batching import Batcher, QueueFull, ShuttingDown
from .metrics import Metrics
from .model_info import ModelInfo, read_model_info

logger = logging.getLogger(__name__)


@dataclass
class Settings:
    max_chars: int = 20000  # characters of one request, all texts together
    max_sentences: int = 256  # lines of one request, all texts together
    max_batch_tokens: int = 4096  # padded source tokens of one engine batch
    max_batch_size: int = 64  # pieces of one engine batch
    max_wait_ms: float = 5.0  # a batch waits for company until no piece has come for this long (batching.py)
    max_queue: int = 2048  # pieces waiting at most; more is 503
    retry_after: int = 1  # seconds, in a 503's Retry-After
    max_beams: int = 16  # of a request to the native endpoint
    decoding: DecodingOptions = field(default_factory=DecodingOptions)  # /translate's, the native endpoint's defaults
    source_lang: str | None = None  # None: any code is accepted
    target_lang: str | None = None


class RequestError(Exception):
    """A problem with the request: its status code and a message naming it."""

    def __init__(self, message: str, status: int = 400, reason: str = "bad_request", headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers


class Translation:
    """The engine, its batcher and metrics: `translation.plan` turns texts into pieces, the batcher decodes them
    with other requests' pieces, `translation.assemble` joins the answers."""

    def __init__(self, engine, settings: Settings, metrics: Metrics, replicas: list | None = None):
        self.engine, self.settings, self.metrics = engine, settings, metrics
        self.replicas = replicas or []  # engine copies in worker processes (`workers.py`); none: the engine itself
        generate = [replica.generate for replica in self.replicas] or engine.generate
        self.batcher = Batcher(generate, settings.max_batch_tokens, settings.max_batch_size,
                               settings.max_wait_ms / 1000, settings.max_queue, metrics.observe_batch,
                               metrics.queue_wait.observe)

    async def translate(self, request: Request, texts: list[str], options: DecodingOptions) -> list[list[str]]:
        """The `n_best` translations of each text (lines joined with newlines)."""
        work = plan(self.engine, texts, options)
        self.metrics.sentences.inc(sum(len(text_lines) for text_lines in work.lines))
        self.metrics.tokens.inc(sum(map(len, work.rows)))
        try:
            pieces = self.batcher.submit(work.rows, work.limits, options)
        except QueueFull as error:
            raise RequestError(f"{error}; retry later", 503, "queue_full",
                               {"Retry-After": str(self.settings.retry_after)}) from None
        except ShuttingDown as error:
            raise RequestError(str(error), 503, "shutting_down") from None
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
        return assemble(work, answers.result(), options.n_best)  # raises the engine's error, if any


async def disconnected(request: Request) -> None:
    """Returns when the client has closed the connection (the body was read before)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ---------------------------------------------------------------------------------------------------------------------
# Reading and checking requests
# ---------------------------------------------------------------------------------------------------------------------


async def read_fields(request: Request, form_allowed: bool) -> dict:
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if form_allowed and content_type == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise RequestError("the form body is not UTF-8") from None
        return {name: values if name == "q" and len(values) > 1 else values[-1] for name, values in fields.items()}
    if form_allowed and content_type.startswith("multipart/"):
        raise RequestError("multipart bodies are not supported: send JSON or application/x-www-form-urlencoded", 415,
                           "unsupported_media_type")
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"the body is not valid JSON ({error})", reason="invalid_json") from None
    if not isinstance(fields, dict):
        raise RequestError(f"the body must be a JSON object, got {type(fields).__name__}", reason="invalid_json")
    return fields


def check_texts(value, name: str, settings: Settings) -> tuple[list[str], bool]:
    """(texts, whether one string was given) of `q`/`text`, within the request limits."""
    if value is None:
        raise RequestError(f"'{name}' is missing: the text to translate", reason="missing_text")
    single = isinstance(value, str)
    texts = [value] if single else value
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise RequestError(f"'{name}' must be a string or a list of strings", reason="wrong_type")
    if not any(text.strip() for text in texts):
        raise RequestError(f"'{name}' is empty: nothing to translate", reason="empty_text")
    characters = sum(map(len, texts))
    if characters > settings.max_chars:
        raise RequestError(f"'{name}' has {characters} characters, more than the limit of {settings.max_chars}",
                           413, "too_long")
    lines = sum(text.count("\n") + 1 for text in texts)
    if lines > settings.max_sentences:
        raise RequestError(f"'{name}' has {lines} lines (sentences), more than the limit of "
                           f"{settings.max_sentences}", 413, "too_many_sentences")
    return texts, single


def check_languages(fields: dict, settings: Settings) -> None:
    source, target = fields.get("source", "auto"), fields.get("target")
    for name, value in (("source", source), ("target", target)):
        if value is not None and not isinstance(value, str):
            raise RequestError(f"'{name}' must be a language code (a string)", reason="wrong_type")
    if target is None and settings.target_lang:
        raise RequestError(f"'target' is missing: this model translates into {settings.target_lang!r}",
                           reason="missing_language")
    wrong_source = settings.source_lang and source not in ("auto", settings.source_lang)
    wrong_target = settings.target_lang and target != settings.target_lang
    if wrong_source or wrong_target:
        raise RequestError(f"unsupported language pair {source}→{target}: this model translates "
                           f"{settings.source_lang or '*'}→{settings.target_lang or '*'}", reason="unsupported_pair")


# ---------------------------------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------------------------------


def create_app(engine, settings: Settings | None = None, replicas: list | None = None,
               info: ModelInfo | None = None) -> Starlette:
    """The server for `engine` (see `engine.open_engine`), decoding with `replicas` when given (`workers.py`; the
    engine then only tokenizes). The batcher's workers (and the replicas) stop with the application's lifespan:
    queued work is finished first."""
    settings = settings or Settings()
    info = info or ModelInfo(name=engine.name)
    settings.source_lang = settings.source_lang or info.source_lang
    settings.target_lang = settings.target_lang or info.target_lang
    metrics = Metrics()
    translation = Translation(engine, settings, metrics, replicas)

    def answered(endpoint: str):
        """Counts and times an endpoint's answers; a RequestError becomes its JSON answer."""
        def wrap(handler):
            async def endpoint_function(request: Request) -> Response:
                start = time.perf_counter()
                try:
                    response = await handler(request)
                except RequestError as error:
                    metrics.errors.labels(error.reason).inc()
                    response = JSONResponse({"error": str(error)}, error.status, headers=error.headers)
                except Exception as error:  # noqa: BLE001  (an engine failure: one line to the client, logged)
                    logger.exception("%s failed", endpoint)
                    metrics.errors.labels("engine_error").inc()
                    response = JSONResponse({"error": f"translation failed: {error}"}, 500)
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
                  format: {type: string, enum: [text]}
                  api_key: {type: string, description: ignored}
        responses:
          200: {description: "{translatedText: string | [string]}"}
          400: {description: "{error: string}: bad JSON, wrong types, empty text, unsupported language pair"}
          413: {description: "{error: string}: more than --max_chars characters or --max_sentences lines"}
          503: {description: "{error: string}: the queue is full (Retry-After) or the server is stopping"}
        """
        fields = await read_fields(request, form_allowed=True)
        texts, single = check_texts(fields.get("q"), "q", settings)
        check_languages(fields, settings)
        if fields.get("format", "text") != "text":
            raise RequestError(f"format {fields.get('format')!r} is not supported: only 'text'",
                               reason="unsupported_format")
        outputs = await translation.translate(request, texts, dataclasses.replace(settings.decoding, n_best=1))
        translated = [alternatives[0] for alternatives in outputs]
        return JSONResponse({"translatedText": translated[0] if single else translated})

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
          400: {description: "{error: string}"}
          413: {description: "{error: string}"}
          503: {description: "{error: string}"}
        """
        fields = await read_fields(request, form_allowed=False)
        texts, single = check_texts(fields.pop("text", None), "text", settings)
        unknown = set(fields) - set(DecodingOptions.names())
        if unknown:
            raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}", reason="unknown_field")
        try:
            options = DecodingOptions.from_fields(fields, settings.decoding)
        except DecodingOptionsError as error:
            raise RequestError(str(error), reason="invalid_option") from None
        if options.num_beams > settings.max_beams or options.n_best > settings.max_beams:
            raise RequestError(f"num_beams and n_best must be at most {settings.max_beams} on this server (serve "
                               "--max_beams)", reason="invalid_option")
        outputs = await translation.translate(request, texts, options)
        n_best = options.n_best
        best = [alternatives[0] for alternatives in outputs]
        answer = {"translations": best[0] if single else best}
        if n_best > 1:
            answer["alternatives"] = outputs[0] if single else outputs
        return JSONResponse(answer)

    @answered("/languages")
    async def languages(request: Request) -> Response:
        """
        summary: The language pair (LibreTranslate-compatible)
        responses:
          200: {description: "[{code, name, targets}]"}
        """
        source, target = settings.source_lang or "auto", settings.target_lang or "auto"
        return JSONResponse([{"code": source, "name": source, "targets": [target]}])

    @answered("/health")
    async def health(request: Request) -> Response:
        """
        summary: Whether the server takes requests, and the model card's name, direction and scores
        responses:
          200: {description: "{status: ok, model, engine, source_lang, target_lang, metrics, queued}"}
          503: {description: "{status: stopping}"}
        """
        stopping = request.app.state.stopping
        answer = {"status": "stopping" if stopping else "ok", "model": info.name, "engine": engine.name,
                  "source_lang": settings.source_lang, "target_lang": settings.target_lang,
                  "metrics": info.metrics, "queued": translation.batcher.queued()}
        return JSONResponse(answer, 503 if stopping else 200)

    async def prometheus(request: Request) -> Response:
        """
        summary: Prometheus metrics (text format)
        responses:
          200: {description: "requests, sentences, tokens, batch sizes, queue wait and latency histograms, errors"}
        """
        metrics.queued.set(translation.batcher.queued())
        return Response(metrics.render(), media_type=metrics.content_type)

    async def page(request: Request) -> Response:
        return HTMLResponse(resources.files(__package__).joinpath("index.html").read_text(encoding="utf-8"))

    schemas = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "vanilla-transformer translation server",
                                                            "version": "1"}})

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=request.app.routes))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        app.state.stopping = True  # uvicorn has finished the requests in flight
        await asyncio.get_running_loop().run_in_executor(None, translation.batcher.close)
        for replica in translation.replicas:
            await asyncio.get_running_loop().run_in_executor(None, replica.close)

    routes = [
        Route("/", page, include_in_schema=False),
        Route("/translate", libretranslate, methods=["POST"]),
        Route("/v1/translate", native, methods=["POST"]),
        Route("/languages", languages, methods=["GET", "POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/openapi.json", openapi, include_in_schema=False),
    ]
    async def http_error(request: Request, error: HTTPException) -> Response:
        return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code,
                            headers=error.headers)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.translation = translation
    app.state.stopping = False  # set on SIGTERM (`command`) and at the lifespan's end
    app.state.metrics = metrics
    return app
