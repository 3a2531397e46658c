"""The server's settings: every limit and timeout of `serve`, with its default, its range and its help, once.

`vanilla-transformer serve` makes one `--name` flag per numeric field (cli/serve.py), and `check()` refuses a value
that is not a finite number within its range (`--max_wait_ms inf` would stall every batch forever), so a flag, its
range and what the server enforces cannot drift apart. Request validation (validation.py) and the batcher read the
same fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...translation import DecodingOptions
from ...translation.options import MAX_BEAMS

# A character of text costs at most 12 bytes in a body: "\ud83d\ude00" in JSON, %F0%9F%98%80 in a form.
BODY_BYTES_PER_CHAR = 12
BODY_OVERHEAD = 64 * 1024  # field names, options, JSON punctuation


def _setting(default, help: str, low, high):
    return field(default=default, metadata={"help": help, "low": low, "high": high})


class SettingsError(ValueError):
    """A setting that is not a finite number within its range; the message names it."""


@dataclass
class Settings:
    max_chars: int = _setting(20000, "characters of one request at most, all texts together (413 beyond)", 1,
                              10_000_000)
    max_sentences: int = _setting(256, "lines of one request at most, all texts together (413 beyond)", 1, 100_000)
    max_batch_tokens: int = _setting(4096, "padded source tokens (rows x longest) of one batch at most", 1,
                                     10_000_000)
    max_batch_size: int = _setting(64, "sentences per batch at most", 1, 100_000)
    max_wait_ms: float = _setting(5.0, "a batch waits for more sentences until none has come for this long (at most "
                                       "8 times this after its first sentence)", 0.0, 60_000.0)
    max_queue: int = _setting(2048, "sentences waiting at most; beyond, requests get 503 with Retry-After", 1,
                              10_000_000)
    max_beams: int = _setting(16, "num_beams and n_best of a native request at most", 1, MAX_BEAMS)
    request_timeout: float = _setting(10.0, "seconds a client has to send a request's headers (from its connection "
                                            "or its previous answer) and then its body; a slower one is "
                                            "disconnected (headers) or answered 408 (body)", 0.1, 3600.0)
    batch_timeout: float = _setting(60.0, "seconds a worker process (--workers 2 or more) has to decode a batch, "
                                          "times 1 + rows x longest limit / max_batch_tokens; a worker past its "
                                          "deadline is killed and started again, its batch answered 503", 0.1,
                                    86_400.0)
    max_connections: int = _setting(16_384, "open connections at most: beyond, the longest idle ones (no request "
                                            "in progress) are closed to make room; lowered to what the file "
                                            "descriptor limit allows", 16, 1_000_000)
    retry_after: int = 1  # seconds, in a 503's Retry-After
    decoding: DecodingOptions = field(default_factory=DecodingOptions)  # /translate's, the native endpoint's defaults
    source_lang: str | None = None  # None: any code is accepted
    target_lang: str | None = None

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """SettingsError naming the first setting that is not a finite number within its range."""
        for spec in self.ranged():
            check_number(spec.name, getattr(self, spec.name), spec.metadata["low"], spec.metadata["high"],
                         integral=spec.type in ("int", int))

    @classmethod
    def ranged(cls) -> list[dataclasses.Field]:
        """The numeric settings (those with a range): one `serve` flag each."""
        return [spec for spec in dataclasses.fields(cls) if "low" in spec.metadata]

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: every allowed character in its longest encoding, and room for the options."""
        return self.max_chars * BODY_BYTES_PER_CHAR + BODY_OVERHEAD

    def batch_deadline(self, rows: int, longest_limit: int) -> float:
        """Seconds a worker process has to answer a batch of `rows` rows of at most `longest_limit` new tokens."""
        return self.batch_timeout * (1 + rows * longest_limit / self.max_batch_tokens)


def check_number(name: str, value, low, high, integral: bool = False) -> None:
    """SettingsError unless `value` is a finite number (an integer when `integral`) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not isinstance(value, int)):
        raise SettingsError(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
    if not low <= value <= high:  # (NaN compares false, infinities and huge integers are out of range)
        raise SettingsError(f"{name} must be {'an integer' if integral else 'a finite number'} from {shown(low)} to "
                            f"{shown(high)}, got {value!r}")


def shown(number) -> str:
    """10,000,000 for an integer, 0.1 or 60000 for a float."""
    return f"{number:,}" if isinstance(number, int) else f"{number:g}"
