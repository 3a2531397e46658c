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
import json
import logging
import time
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from ...training.evaluation import split_to_fit
from .batching import Batcher, Options, QueueFull, ShuttingDown
from .metrics import Metrics

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
    max_beams: int = 16
    num_beams: int = 4  # the §6.1 defaults for /translate and the native endpoint
    length_penalty: float = 0.6
    source_lang: str | None = None  # None: any code is accepted
    target_lang: str | None = None


class RequestError(Exception):
    """A problem with the request: its status code and a message naming it."""

    def __init__(self, message: str, status: int = 400, reason: str = "bad_request", headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers


class Translation:
    """The engine, its batcher and metrics: turns texts into pieces, queues them, joins the answers."""

    def __init__(self, engine, settings: Settings, metrics: Metrics, replicas: list | None = None):
        self.engine, self.settings, self.metrics = engine, settings, metrics
        self.replicas = replicas or []  # engine copies in worker processes (`workers.py`); none: the engine itself
        generate = [replica.generate for replica in self.replicas] or engine.generate
        self.batcher = Batcher(generate, settings.max_batch_tokens, settings.max_batch_size,
                               settings.max_wait_ms / 1000, settings.max_queue, metrics.observe_batch,
                               metrics.queue_wait.observe)

    def plan(self, texts: list[str], max_new_tokens: int | None):
        """(lines of each text, pieces' token ids, their length limits, the line of each piece)."""
        lines = [[line.rstrip("\r") for line in text.split("\n")] for text in texts]
        flat = [line for text_lines in lines for line in text_lines]
        kept = [i for i, line in enumerate(flat) if line.strip()]
        tokenizer, limit = self.engine.tokenizer, self.engine.limit
        with self.engine.tokenizer_lock:  # the worker decodes with the same tokenizer
            encoded = tokenizer([flat[i] for i in kept], truncation=False, verbose=False)["input_ids"] if kept else []
            rows, owner = [], []
            for index, ids in zip(kept, encoded):
                if limit and len(ids) > limit:
                    parts = split_to_fit(flat[index], tokenizer, limit)
                    rows += tokenizer(parts, truncation=False, verbose=False)["input_ids"]
                    owner += [index] * len(parts)
                else:
                    rows.append(ids)
                    owner.append(index)
        new_tokens = [self.engine.new_tokens(len(ids)) for ids in rows]
        if max_new_tokens:
            new_tokens = [min(tokens, max_new_tokens) for tokens in new_tokens]
        return lines, rows, new_tokens, owner

    async def translate(self, request: Request, texts: list[str], options: Options,
                        max_new_tokens: int | None = None) -> list[list[str]]:
        """The `n_best` translations of each text (lines joined with newlines)."""
        lines, rows, new_tokens, owner = self.plan(texts, max_new_tokens)
        self.metrics.sentences.inc(sum(len(text_lines) for text_lines in lines))
        self.metrics.tokens.inc(sum(map(len, rows)))
        try:
            pieces = self.batcher.submit(rows, new_tokens, options)
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
        results = answers.result()  # raises the engine's error, if any
        flat: list[list[list[str]]] = [[] for text_lines in lines for _ in text_lines]  # per line: its pieces'
        for index, alternatives in zip(owner, results):
            flat[index].append(alternatives)
        outputs, position = [], 0
        for text_lines in lines:
            alternatives = []
            for rank in range(options.n_best):
                translated = []
                for index in range(position, position + len(text_lines)):
                    translated.append(" ".join(part[rank] for part in flat[index] if part[rank]))
                alternatives.append("\n".join(translated))
            outputs.append(alternatives)
            position += len(text_lines)
        return outputs


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


def integer(fields: dict, name: str, default: int | None, low: int, high: int | None) -> int | None:
    value = fields.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise RequestError(f"'{name}' must be an integer {bounds}, got {value!r}", reason="wrong_type")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------------------------------


def create_app(engine, settings: Settings | None = None, replicas: list | None = None) -> Starlette:
    """The server for `engine` (see `engine.open_engine`), decoding with `replicas` when given (`workers.py`; the
    engine then only tokenizes). The batcher's workers (and the replicas) stop with the application's lifespan:
    queued work is finished first."""
    settings = settings or Settings()
    info = engine.info
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
        options = Options(settings.num_beams, settings.length_penalty, 1)
        outputs = await translation.translate(request, texts, options)
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
                  num_beams: {type: integer, minimum: 1, default: 4}
                  length_penalty: {type: number, default: 0.6}
                  n_best: {type: integer, minimum: 1, description: "at most num_beams"}
                  max_new_tokens: {type: integer, minimum: 1, description: "caps the length + 50 rule"}
        responses:
          200: {description: "{translations: string | [string], alternatives: [[string]] (with n_best > 1)}"}
          400: {description: "{error: string}"}
          413: {description: "{error: string}"}
          503: {description: "{error: string}"}
        """
        fields = await read_fields(request, form_allowed=False)
        texts, single = check_texts(fields.get("text"), "text", settings)
        unknown = set(fields) - {"text", "num_beams", "length_penalty", "n_best", "max_new_tokens"}
        if unknown:
            raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}", reason="unknown_field")
        num_beams = integer(fields, "num_beams", settings.num_beams, 1, settings.max_beams)
        n_best = integer(fields, "n_best", 1, 1, num_beams)
        max_new_tokens = integer(fields, "max_new_tokens", None, 1, None)
        length_penalty = fields.get("length_penalty", settings.length_penalty)
        if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool):
            raise RequestError(f"'length_penalty' must be a number, got {length_penalty!r}", reason="wrong_type")
        options = Options(num_beams, float(length_penalty), n_best)
        outputs = await translation.translate(request, texts, options, max_new_tokens)
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
