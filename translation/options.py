"""`DecodingOptions`: every decoding option of every command, with its default, its range and its check, once.

`translate`, `evaluate`, training-time evaluation, `serve` and its native endpoint all build their flags or fields
from this one type (`add_arguments` / `from_arguments`, `from_fields`), so a name, a default or a range is the same
everywhere. The paper's values (§6.1: beam 4, length penalty 0.6) come from the model file, which also keeps them in
its generation_config; the length rule (source + 50) is the model file's `new_token_limit`.

Adding an option: one field here (with its `help` and range), and its use in the engines' `generate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

from ..modeling.modeling_vanilla_transformer import BEAM_SIZE, LENGTH_PENALTY

MAX_BEAMS = 64
MAX_NEW_TOKENS = 100_000
MAX_SEED = 2**63 - 1


class DecodingOptionsError(ValueError):
    """An option outside its range, or options that do not go together; the message names the option."""


def _option(default, help: str, low=None, high=None, exclusive_low: bool = False):
    return field(default=default, metadata={"help": help, "low": low, "high": high, "exclusive_low": exclusive_low})


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode (see the module docstring). Frozen: requests with equal options may share a batch."""

    num_beams: int | None = _option(None, f"beam size (default: {BEAM_SIZE}, §6.1; 1 when sampling)", 1, MAX_BEAMS)
    length_penalty: float = _option(LENGTH_PENALTY, "GNMT length penalty α of beam search (§6.1)", -10.0, 10.0)
    n_best: int = _option(1, "translations returned per sentence, best first (at most num_beams; with --do_sample, "
                             "that many samples)", 1, MAX_BEAMS)
    max_new_tokens: int | None = _option(None, "caps the new tokens per sentence (default: the §6.1 rule, source "
                                               "length + 50)", 1, MAX_NEW_TOKENS)
    do_sample: bool = _option(False, "sample each token instead of searching (back-translation, Edunov et al. "
                                     "2018); reproducible with --seed")
    top_k: int | None = _option(None, "sampling: only the k most likely tokens (default: all)", 1, 1_000_000)
    top_p: float | None = _option(None, "sampling: only the most likely tokens whose probabilities add up to p "
                                        "(nucleus sampling; default: all)", 0.0, 1.0, exclusive_low=True)
    temperature: float | None = _option(None, "sampling: divides the logits (default 1)", 0.0, 100.0,
                                        exclusive_low=True)
    seed: int | None = _option(None, "sampling: the seed of each sentence's random draws (default: a new one each "
                                     "time); the same sentence and seed give the same sample in any batch",
                               0, MAX_SEED)

    def __post_init__(self):
        for spec in dataclasses.fields(self):
            _check(spec, getattr(self, spec.name))
        if self.num_beams is None:
            object.__setattr__(self, "num_beams", 1 if self.do_sample else BEAM_SIZE)
        if self.do_sample and self.num_beams > 1:
            raise DecodingOptionsError(f"num_beams is {self.num_beams} with do_sample: sampling draws one token at a "
                                       "time; leave num_beams out (or 1)")
        if not self.do_sample:
            given = [name for name in ("top_k", "top_p", "temperature", "seed") if getattr(self, name) is not None]
            if given:
                what = "is a sampling option" if len(given) == 1 else "are sampling options"
                raise DecodingOptionsError(f"{', '.join(given)} {what}: add do_sample")
            if self.n_best > self.num_beams:
                raise DecodingOptionsError(f"n_best is {self.n_best}, more than num_beams {self.num_beams}: a beam "
                                           "search returns at most num_beams translations")

    # -- building options from a command line or a request ----------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
        """One `--name` flag per option (bool options are switches), checked when `from_arguments` builds them."""
        group = parser.add_argument_group("decoding options")
        for spec in dataclasses.fields(cls):
            if spec.name in exclude:
                continue
            flag = f"--{spec.name}"
            if spec.type in ("bool",):
                group.add_argument(flag, action="store_true", help=spec.metadata["help"])
            else:
                group.add_argument(flag, type=_parse_number, default=spec.default, help=spec.metadata["help"],
                                   metavar=spec.name.upper())

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DecodingOptions:
        """The options of parsed flags (`add_arguments`); DecodingOptionsError names a flag out of range."""
        values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(cls) if hasattr(args, spec.name)}
        try:
            return cls(**values)
        except DecodingOptionsError as error:
            raise DecodingOptionsError(f"--{error}") from None

    @classmethod
    def from_fields(cls, fields: dict, defaults: DecodingOptions | None = None) -> DecodingOptions:
        """The options of a request's JSON fields (those not given keep `defaults`' values); a wrong type, a
        number out of range or not finite is a DecodingOptionsError naming the field."""
        base = dataclasses.asdict(defaults) if defaults is not None else {}
        if defaults is not None and "do_sample" in fields and "num_beams" not in fields:
            base["num_beams"] = None  # the default beam follows do_sample, as it does for a command's flags
        return cls(**{**base, **fields})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(spec.name for spec in dataclasses.fields(cls))

    @classmethod
    def field_like(cls, name: str, default=dataclasses.MISSING):
        """A dataclass field of another arguments class (training's, HfArgumentParser's) with this option's help and
        default, so that the flag reads the same in every command."""
        spec = next(spec for spec in dataclasses.fields(cls) if spec.name == name)
        return field(default=spec.default if default is dataclasses.MISSING else default,
                     metadata={"help": spec.metadata["help"]})

    # -- what the engines read ----------------------------------------------------------------------------------------

    @property
    def beam_options(self) -> dict:
        """transformers' `generate` keywords of the search (a length penalty exists only for beam search)."""
        return {"num_beams": self.num_beams, **({"length_penalty": self.length_penalty} if self.num_beams > 1 else {})}


def _check(spec: dataclasses.Field, value) -> None:
    """The type and range of one option: integers are not bools, numbers are finite, within [low, high]."""
    if value is None:
        if spec.default is None:
            return
        raise DecodingOptionsError(f"{spec.name} must be given, got None")
    name, low, high = spec.name, spec.metadata.get("low"), spec.metadata.get("high")
    kind = spec.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise DecodingOptionsError(f"{name} must be true or false, got {_shown(value)}")
        return
    integral = kind.startswith("int")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not isinstance(value, int)):
        raise DecodingOptionsError(f"{name} must be {'an integer' if integral else 'a number'}, got {_shown(value)}")
    if not integral and not _finite(value):
        raise DecodingOptionsError(f"{name} must be a finite number, got {_shown(value)}")
    too_low = low is not None and (value <= low if spec.metadata.get("exclusive_low") else value < low)
    if too_low or (high is not None and value > high):
        opening = "(" if spec.metadata.get("exclusive_low") else "["
        raise DecodingOptionsError(f"{name} must be in {opening}{low}, {high}], got {_shown(value)}")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _shown(value) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python prints
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _parse_number(text: str):
    """argparse `type` of a numeric option: an integer when it reads as one, else a float (range and finiteness are
    checked by DecodingOptions, with the option's name)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
