"""`vanilla-transformer train ...` / `accelerate launch -m vanilla_transformer.training.train ...`: the argument
parser of the trainer (the dataclasses of `training.arguments`, a `--config` file, one-line errors)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from transformers import HfArgumentParser

from ..training.arguments import DataArguments, ModelArguments, TrainArguments, nearest, validate
from ..training.step import NonFiniteLossError
from ..training.trainer import train
from .parsing import OneLineErrors, quiet_progress_bars

logger = logging.getLogger("vanilla_transformer.training.trainer")


ARGUMENT_CLASSES = (DataArguments, ModelArguments, TrainArguments)


class TrainArgumentParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser with one-line usage errors."""


def build_parser(prog: str = "vanilla-transformer train") -> HfArgumentParser:
    parser = TrainArgumentParser(ARGUMENT_CLASSES, prog=prog, allow_abbrev=False, description=(
        "Train the Transformer (Vaswani et al. 2017) with Accelerate: one CPU process, N GPUs (DDP), several nodes "
        "or FSDP, as set by `accelerate config` / `accelerate launch`."))
    parser.add_argument("--config", default=None, help="YAML or JSON file of arguments (the command line wins)")
    return parser


def read_config_file(path: str) -> dict:
    """A flat mapping of argument names to values from a YAML or JSON file."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values")
    return values


def parse_args(argv: list[str] | None = None, prog: str = "vanilla-transformer train", check=None):
    """(DataArguments, ModelArguments, TrainArguments) from argv and `--config`; exits with status 2 naming the
    offending arguments when they are unknown or contradictory (argparse's convention). `check(data, model, train)`
    replaces `validate` (for `prepare`, which reads the same arguments)."""
    parser = build_parser(prog)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            values = read_config_file(known.config)
        except (OSError, ValueError) as error:
            parser.error(f"--config: {error}")
        known_names = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
        unknown = sorted(set(values) - known_names)
        if unknown:
            named = ", ".join(name + nearest(name, known_names) for name in unknown)
            parser.error(f"--config {known.config}: unknown argument(s) {named}")
        if isinstance(values.get("model_overrides"), dict):
            values["model_overrides"] = json.dumps(values["model_overrides"])
        parser.set_defaults(**values)
    data, model, train, _, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if unknown:
        flags = [a for a in parser._option_string_actions if a.startswith("--")]
        named = " ".join(a + (nearest(a.split("=")[0], flags) if a.startswith("--") else "") for a in unknown)
        parser.error(f"unrecognized arguments: {named}")
    try:
        (check or validate)(data, model, train)
    except ValueError as error:
        parser.error(str(error))
    return data, model, train


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("accelerate", "datasets", "transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_progress_bars()  # no "Writing model shards" bar at every export


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer train ...` / `accelerate launch -m vanilla_transformer.training.train ...`."""
    data, model_args, args = parse_args(argv)
    setup_logging()
    try:
        train(data, model_args, args)
    except NonFiniteLossError as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    from .main import run_command

    raise SystemExit(run_command("train", main))
