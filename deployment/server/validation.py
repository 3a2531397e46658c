"""Request validation: one `parse_*(request, settings)` per endpoint turns an HTTP request into a valid request (a
typed dataclass) or raises `ValidationError` with the status, a reason (the `translation_errors_total` label) and a
message naming the problem. Nothing is queued before a request is valid, and no client input gets a 5xx answer.

What is checked, in order:

* the body: at most `Settings.max_body_bytes`, refused from its Content-Length or as soon as the streamed body passes
  the limit (413, never read to the end), and all of it within `Settings.request_timeout` seconds (408);
* its syntax: JSON (NaN, Infinity and -Infinity are not JSON: refused; nesting too deep for the parser and integers
  of more than 4300 digits are 400 naming the problem), or for `/translate` a form. A form body that looks like JSON
  — `curl -d '{"q": ...}'` sends JSON with curl's default form content type — is read as JSON: no form of ours
  begins with `{`, and refusing it would only make the client's mistake harder to find;
* the texts (`q`, `text`): a string or a list of strings, not all blank, no lone surrogate, within `max_chars`
  characters and `max_sentences` lines (413);
* `api_key`, by `--api_keys`' quotas (keys.py: 403, 429), right after the syntax, as LibreTranslate;
* the languages' types (`source`, `target`; which model serves them is routing.py's), and `format` (`text` or
  `html`);
* the decoding fields of the native endpoint: only by `DecodingOptions.from_fields` (types, ranges, finiteness), then
  the server's own `max_beams`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request

from ...translation import DecodingOptions, DecodingOptionsError
from .settings import Settings

FORMATS = ("text", "html")
CLOSE = {"Connection": "close"}  # after a body we did not read to its end, the connection cannot carry another request


class RequestError(Exception):
    """A request that cannot be answered with a translation: its status code, reason and a message naming why."""

    def __init__(self, message: str, status: int = 400, reason: str = "bad_request", headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers


class ValidationError(RequestError):
    """The client's mistake (a 4xx): the message says what is wrong with the request."""


@dataclass(frozen=True)
class LibreTranslateRequest:
    texts: list[str]
    single: bool  # `q` was one string (the answer is one string too)
    source: str
    target: str | None
    html: bool = False  # format "html": the texts are HTML fragments (translation.markup)


@dataclass(frozen=True)
class NativeRequest:
    texts: list[str]
    single: bool
    options: DecodingOptions
    html: bool = False
    source: str = "auto"
    target: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# One parse per endpoint
# ---------------------------------------------------------------------------------------------------------------------


async def parse_libretranslate(request: Request, settings: Settings, quotas=None) -> LibreTranslateRequest:
    """`POST /translate`: JSON or form fields `q`, `source`, `target`, `format`, `api_key` (others ignored)."""
    fields = await read_fields(request, settings, form_allowed=True)
    take_api_key(fields, request, quotas)
    texts, single = check_texts(fields.get("q"), "q", settings)
    source, target = check_languages(fields)
    return LibreTranslateRequest(texts, single, source, target, check_format(fields.get("format", "text")))


async def parse_detect(request: Request, settings: Settings, quotas=None) -> tuple[list[str], bool]:
    """`POST /detect`: JSON or form fields `q` (a string or a list of strings) and `api_key`."""
    fields = await read_fields(request, settings, form_allowed=True)
    take_api_key(fields, request, quotas)
    return check_texts(fields.get("q"), "q", settings)


async def parse_native(request: Request, settings: Settings, quotas=None) -> NativeRequest:
    """`POST /v1/translate`: JSON `text`, `format`, `source`, `target`, `api_key` and the decoding fields
    (`DecodingOptions`), nothing else."""
    fields = await read_fields(request, settings, form_allowed=False)
    take_api_key(fields, request, quotas)
    texts, single = check_texts(fields.pop("text", None), "text", settings)
    html = check_format(fields.pop("format", "text"))
    source, target = check_languages(fields)
    fields.pop("source", None), fields.pop("target", None)
    unknown = set(fields) - set(DecodingOptions.names())
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(map(shown_name, unknown)))}",
                              reason="unknown_field")
    try:
        options = DecodingOptions.from_fields(fields, settings.decoding)
    except DecodingOptionsError as error:
        raise ValidationError(str(error), reason="invalid_option") from None
    if options.num_beams > settings.max_beams or options.n_best > settings.max_beams:
        raise ValidationError(f"num_beams and n_best must be at most {settings.max_beams} on this server (serve "
                              "--max_beams)", reason="invalid_option")
    return NativeRequest(texts, single, options, html, source, target)


# ---------------------------------------------------------------------------------------------------------------------
# The body
# ---------------------------------------------------------------------------------------------------------------------


async def read_body(request: Request, settings: Settings) -> bytes:
    """The whole body, within `max_body_bytes` (413) and `request_timeout` (408)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(f"a body of {int(declared)} bytes (Content-Length)", limit)
    try:
        return await asyncio.wait_for(_read_within(request, limit), settings.request_timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise ValidationError(f"the request body did not arrive within {settings.request_timeout:g} s", 408,
                              "request_timeout", CLOSE) from None
    except ClientDisconnect:
        raise ValidationError("the client disconnected", 499, "client_disconnected") from None


async def _read_within(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"the body passed {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(what: str, limit: int) -> ValidationError:
    return ValidationError(f"{what}: more than this server's limit of {limit} bytes (12 per allowed character of "
                           "--max_chars, and 64 KiB)", 413, "body_too_large", CLOSE)


async def read_fields(request: Request, settings: Settings, form_allowed: bool) -> dict:
    """The request's fields: its JSON object, or (`form_allowed`) its form fields."""
    body = await read_body(request, settings)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if form_allowed and content_type == "application/x-www-form-urlencoded":
        if body.lstrip()[:1] == b"{":  # JSON under a form's content type: `curl -d '{"q": ...}'`
            return parse_json(body, hint=" (sent as a form: curl -d sends application/x-www-form-urlencoded; add "
                                         "-H 'Content-Type: application/json')")
        return parse_form(body)
    if form_allowed and content_type.startswith("multipart/"):
        raise ValidationError("multipart bodies are not supported: send JSON or application/x-www-form-urlencoded",
                              415, "unsupported_media_type")
    return parse_json(body)


def parse_json(body: bytes, hint: str = "") -> dict:
    """A JSON object; ValidationError (400, invalid_json) for anything else, NaN and Infinity included."""

    def refuse_constant(name: str):
        raise ValidationError(f"the body is not valid JSON: {name} is not a JSON number{hint}", reason="invalid_json")

    try:
        fields = json.loads(body, parse_constant=refuse_constant)
    except RecursionError:
        raise ValidationError(f"the body is not valid JSON for this server: nested too deeply{hint}",
                              reason="invalid_json") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise ValidationError(f"the body is not valid JSON ({first_sentence(error)}){hint}",
                              reason="invalid_json") from None
    if not isinstance(fields, dict):
        raise ValidationError(f"the body must be a JSON object, got {type(fields).__name__}{hint}",
                              reason="invalid_json")
    return fields


def parse_form(body: bytes) -> dict:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise ValidationError("the form body is not UTF-8", reason="invalid_form") from None
    return {name: values if name == "q" and len(values) > 1 else values[-1] for name, values in fields.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------------------------------------


def check_texts(value, name: str, settings: Settings) -> tuple[list[str], bool]:
    """(texts, whether one string was given) of `q`/`text`, within the request limits."""
    if value is None:
        raise ValidationError(f"'{name}' is missing: the text to translate", reason="missing_text")
    single = isinstance(value, str)
    texts = [value] if single else value
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ValidationError(f"'{name}' must be a string or a list of strings", reason="wrong_type")
    if not any(text.strip() for text in texts):
        raise ValidationError(f"'{name}' is empty: nothing to translate", reason="empty_text")
    characters = sum(map(len, texts))
    if characters > settings.max_chars:
        raise ValidationError(f"'{name}' has {characters} characters, more than the limit of {settings.max_chars}",
                              413, "too_long")
    lines = sum(text.count("\n") + 1 for text in texts)
    if lines > settings.max_sentences:
        raise ValidationError(f"'{name}' has {lines} lines (sentences), more than the limit of "
                              f"{settings.max_sentences}", 413, "too_many_sentences")
    for text in texts:
        check_text(text, name)
    return texts, single


def check_text(text: str, name: str) -> None:
    """A string JSON can hold but no tokenizer can read: a lone surrogate (`"\\ud800"`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValidationError(f"'{name}' holds a lone surrogate (\\u{ord(text[error.start]):04x}) at character "
                              f"{error.start}: not text", reason="invalid_text") from None


def check_languages(fields: dict) -> tuple[str, str | None]:
    """(`source`, `target`) as given (`source` defaults to "auto"); which model serves them is the router's
    (routing.py)."""
    source, target = fields.get("source"), fields.get("target")
    for name, value in (("source", source), ("target", target)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"'{name}' must be a language code (a string)", reason="wrong_type")
    return source or "auto", target


def take_api_key(fields: dict, request: Request, quotas) -> None:
    """Remove `api_key` from the fields (or take it from the URL's query) and let `quotas` (keys.py) admit it:
    403 / 429 before anything else is checked, as LibreTranslate. Without quotas, a key is ignored."""
    key = fields.pop("api_key", None)
    if key is None:
        key = request.query_params.get("api_key")
    if quotas is not None:
        quotas.admit(key)


def check_format(value) -> bool:
    """Whether `format` is "html" (LibreTranslate's values: "text", "html")."""
    if value not in FORMATS:
        raise ValidationError(f"format {shown(value)} is not supported: use 'text' or 'html'",
                              reason="unsupported_format")
    return value == "html"


def shown(value) -> str:
    """A client's value in a message: repr, cut to 40 characters (lone surrogates escaped by repr)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def shown_name(value) -> str:
    """A client's name or code in a message: as is when printable, else escaped; cut to 40 characters."""
    printable = isinstance(value, str) and value.isprintable() and not any("\ud800" <= c <= "\udfff" for c in value)
    text = value if printable else repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def first_sentence(error: Exception) -> str:
    """The useful part of a parser's message (Python's digit limit explains how to raise it: not the client's
    business)."""
    return str(error).split("; use sys.set_int_max_str_digits")[0]
