"""`vanilla-transformer prepare ARGS`: train the tokenizer and tokenize the data ahead of time (the fairseq-preprocess
of this project), into the cache that `train` then finds. ARGS are those of `train`."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from ..base.errors import UsageError
from ..training.arguments import check_data_source, check_numbers, writable_folder_problem
from ..training.init_from import init_problems, resolve_batch, resolve_schedule
from ..training.prepare import check_kept_pairs, prepare_in_cache
from .train import parse_args


def check_arguments(data, model, train) -> None:
    """What `prepare` needs of the `train` arguments: the data, the numbers and a writable output folder (the checks
    of `train`'s; an existing run there is fine when these arguments give its tokenizer, see
    `prepare.ensure_tokenizer`). After preparing, `check_kept_pairs` refuses what `train` refuses."""
    problems: list[str] = []
    resolve_schedule(model, train)  # the numbers checked below, as `train` checks them
    resolve_batch(data, model)
    check_data_source(data, problems)
    check_numbers(data, train, problems)
    if model.init_from and not problems:  # --init_from: tokenize with the starting model's tokenizer, as train does
        problems.extend(init_problems(data, model))
    problem = writable_folder_problem(Path(train.output_dir), "--output_dir")
    if problem:
        problems.append(problem)
    if problems:
        raise UsageError("invalid arguments: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer prepare ARGS`: ARGS are those of `train` (the model and training ones are accepted and
    ignored, so one command line or --config serves both). Prints what was prepared as one JSON object."""
    data, _, train = parse_args(argv, prog="vanilla-transformer prepare", check=check_arguments)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    start = time.perf_counter()
    prepared = prepare_in_cache(data, train.output_dir, progress=True)
    check_kept_pairs(prepared.info, data.max_length)  # what `train` would refuse, `prepare` refuses too
    summary = {**prepared.info, "tokenizer": str(prepared.tokenizer_folder),
               "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    from .main import run_command

    raise SystemExit(run_command("prepare", main))
