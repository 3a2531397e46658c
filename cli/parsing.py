"""The argparse parser of every command: one-line usage errors, no abbreviated flags."""

from __future__ import annotations

import argparse
import math

from ..translation import DecodingOptions, DecodingOptionsError


class OneLineErrors:
    """For an argparse parser: a usage error is one line `PROG: error: MESSAGE` (not the whole usage block, which
    `--help` shows) and exit status 2."""

    def error(self, message: str):
        text = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {text} (see `{self.prog} --help`)\n")


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """The parser of every command: one-line usage errors, and flags spelt out in full (no prefix matching, so a
    typo such as `--max_step` is an error rather than silently another flag)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def finite_float(text: str) -> float:
    """argparse `type` of a float option: a finite number (nan and inf are refused, naming the value)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def quiet_progress_bars() -> None:
    """No per-file progress bars from transformers ("Loading weights", "Writing model shards") in command output."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def add_decoding_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The decoding flags of every command that translates: one per `DecodingOptions` field."""
    DecodingOptions.add_arguments(parser, exclude)


def decoding_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> DecodingOptions:
    """The `DecodingOptions` of parsed flags; an option out of range is a usage error naming the flag."""
    try:
        return DecodingOptions.from_arguments(args)
    except DecodingOptionsError as error:
        parser.error(str(error))
