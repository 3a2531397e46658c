"""API keys and their quotas (`serve --api_keys FILE`, #28), LibreTranslate's model: each key may make so many
requests a minute.

The file is a JSON object, a key and its requests per minute:

    {"mastodon-example-social": 120, "a-script": 10}

A request gives its key as LibreTranslate's clients do: the `api_key` field of its JSON body or form (Mastodon sends
JSON), or `?api_key=` in the URL. A missing or unknown key is 403; a key that has made its number of requests in the
last 60 seconds (a sliding window) is 429 with `Retry-After`, the seconds until its oldest request of the window
leaves it. Without `--api_keys`, keys are accepted and ignored. Keys never reach the logs (`redact`) or the metrics.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
import threading
import time
from pathlib import Path

from .validation import RequestError

WINDOW = 60.0  # seconds
MAX_RATE = 1_000_000  # requests a minute at most (a typo's guard)
KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s\"']*")


class KeysError(ValueError):
    """A keys file that cannot be used: the message names the file and what is wrong."""


def load_api_keys(path: str | Path) -> dict[str, int]:
    """{key: requests per minute} of a keys file (the module docstring), or KeysError naming the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeysError(f"--api_keys {path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    try:
        keys = json.loads(text)
    except ValueError as error:
        raise KeysError(f"--api_keys {path}: not JSON ({error}); write an object of keys and their requests per "
                        'minute: {"KEY": 60}') from None
    if not isinstance(keys, dict) or not keys:
        raise KeysError(f"--api_keys {path}: must be a non-empty JSON object of keys and their requests per minute: "
                        '{"KEY": 60}')
    for number, (key, rate) in enumerate(keys.items(), 1):
        if not key.strip() or key != key.strip():
            raise KeysError(f"--api_keys {path}: key number {number} is blank or has spaces around it")
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_RATE:
            raise KeysError(f"--api_keys {path}: key number {number} has {rate!r} requests per minute: must be an "
                            f"integer from 1 to {MAX_RATE:,}")  # (the key itself is not shown: it is a secret)
    return keys


class Quotas:
    """Who may make a request now: `admit(key)` returns, or raises RequestError 403 / 429 (module docstring)."""

    def __init__(self, keys: dict[str, int], clock=time.monotonic):
        self.keys, self.clock = keys, clock
        self.recent: dict[str, collections.deque] = {key: collections.deque() for key in keys}
        self.lock = threading.Lock()

    def admit(self, key) -> None:
        if key is None or key == "":
            raise RequestError("this server needs an API key: give it as 'api_key'", 403, "missing_api_key")
        if not isinstance(key, str) or key not in self.keys:
            raise RequestError("invalid API key", 403, "invalid_api_key")
        now = self.clock()
        with self.lock:
            times = self.recent[key]
            while times and times[0] <= now - WINDOW:
                times.popleft()
            if len(times) >= self.keys[key]:
                wait = max(1, math.ceil(times[0] + WINDOW - now))
                raise RequestError(f"too many requests: this key may make {self.keys[key]} a minute; retry in "
                                   f"{wait} s", 429, "too_many_requests", {"Retry-After": str(wait)})
            times.append(now)


def redact(text: str) -> str:
    """`text` with every `api_key=...` value replaced (a URL's query in the access log)."""
    return KEY_IN_TEXT.sub(r"\1[redacted]", text)


class RedactKeys(logging.Filter):
    """A logging filter that takes API keys out of a record (uvicorn's access log shows the URL with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
