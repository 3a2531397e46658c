"""Training checkpoints: written atomically, rotated, found again on `--resume`, and averaged (§6.1).

A checkpoint is `<output_dir>/checkpoint-<step>/`, written by Accelerate's `save_state` (model.safetensors,
optimizer.bin, scheduler.bin, random_states_<rank>.pkl, and the gradient scaler under fp16) plus:

* `trainer_state.json`: the step, the data position (epoch, micro-batches consumed in that epoch), tokens seen,
  training time and the best validation BLEU so far — everything `--resume` needs besides Accelerate's state;
* `config.json`, `generation_config.json` and the tokenizer files, so that a checkpoint folder loads with
  `AutoModelForSeq2SeqLM.from_pretrained` and `vanilla-transformer evaluate` like an exported model.

Under FSDP Accelerate writes each process's shards instead (`pytorch_model_fsdp_0/`, `optimizer_0/`, what
`--resume` reads), and the trainer adds the gathered weights as `model.safetensors`, so that FSDP checkpoints load
and average like the others.

Everything is first written to `.tmp-checkpoint-<step>/` and renamed when complete: a run killed while saving leaves
no half checkpoint that `--resume` could pick up.

The paper evaluates the average of the last 5 checkpoints (base) or 20 (big) (§6.1); `average_checkpoints` computes
that elementwise mean, and `vanilla-transformer average CKPT... --output DIR` writes it as a model folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


# ---------------------------------------------------------------------------------------------------------------------
# Finding, writing and rotating checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a `checkpoint-<step>` folder name, else None."""
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (those with a trainer_state.json) in `output_dir`, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None and (p / STATE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def replace_directory(source: Path, target: Path) -> None:
    """Put the complete folder `source` at `target` by renames only; an older `target` is removed afterwards."""
    old = target.with_name(f".old-{target.name}")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Text written to a temporary name and renamed: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def write_json(path: Path, value: dict) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict,
                    write_extras: Callable[[Path], None] | None = None) -> Path:
    """`accelerator.save_state` into `.tmp-checkpoint-<step>`, plus `state` as trainer_state.json and whatever
    `write_extras(folder)` adds (main process only), then one rename to `checkpoint-<step>`.

    Every process must call this (each saves its own RNG state; FSDP gathers shards).
    """
    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    temporary = Path(output_dir) / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if write_extras is not None:
            write_extras(temporary)
        write_json(temporary / STATE_FILE, state)
        replace_directory(temporary, final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints (keep=0: delete none); returns the deleted folders."""
    if keep <= 0:
        return []
    stale = list_checkpoints(output_dir)[:-keep]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed old checkpoint %s", path)
    return stale


def remove_temporaries(output_dir: str | os.PathLike) -> None:
    """Remove `.tmp-*`/`.old-*` leftovers of a run killed while writing."""
    root = Path(output_dir)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------------
# Averaging (§6.1)
# ---------------------------------------------------------------------------------------------------------------------


def weights_file(path: str | os.PathLike) -> Path:
    """`model.safetensors` of a checkpoint or model folder (or the file itself)."""
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {WEIGHTS_FILE} found")
    return file


def average_checkpoints(paths: list[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Elementwise mean of the model weights of `paths` (checkpoint or model folders), as in §6.1.

    Accumulated in float64, then cast back to each tensor's own dtype. Integer tensors (none in this model) are
    taken from the first checkpoint unchanged.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for index, path in enumerate(paths):
        tensors = load_file(str(weights_file(path)))
        if index == 0:
            reference = tensors
            total = {k: v.double() for k, v in tensors.items() if v.is_floating_point()}
            continue
        if tensors.keys() != reference.keys():
            difference = sorted(set(tensors) ^ set(reference))
            raise ValueError(f"{path} does not hold the same tensors as {paths[0]} (differ: {difference[:5]})")
        for key, tensor in tensors.items():
            if tensor.shape != reference[key].shape:
                raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, {paths[0]} has "
                                 f"{tuple(reference[key].shape)}")
            if key in total:
                total[key] += tensor.double()
    return {key: (total[key] / len(paths)).to(tensor.dtype) if key in total else tensor
            for key, tensor in reference.items()}


def load_model_with_weights(config_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor]):
    """A model built from `config_dir/config.json` holding `state_dict` (tied copies may be absent)."""
    from .. import modeling  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(config_dir)
    model = AutoModelForSeq2SeqLM.from_config(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise ValueError(f"weights do not fit the config of {config_dir}: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    return model


def average_to_folder(paths: list[str], output: str, config_dir: str | None = None) -> Path:
    """Average `paths` and write a model folder (weights, config, generation config, tokenizer) to `output`."""
    from .export import save_model_folder

    config_dir = config_dir or str(paths[-1])
    if not (Path(config_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{config_dir} has no config.json; pass --config_from a model or checkpoint folder")
    model = load_model_with_weights(config_dir, average_checkpoints(paths))
    tokenizer = None
    if any((Path(config_dir) / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config_dir)
    summary = {"averaged_checkpoints": [str(p) for p in paths]}
    return save_model_folder(model, tokenizer, output, summary=summary)


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer average CKPT... --output DIR`."""
    parser = argparse.ArgumentParser(prog="vanilla-transformer average", description=(
        "Average the model weights of checkpoints (the paper evaluates the mean of the last 5, §6.1) into a model "
        "folder."))
    parser.add_argument("checkpoints", nargs="*", help="checkpoint or model folders")
    parser.add_argument("--output", required=True, help="folder to write the averaged model to")
    parser.add_argument("--last", type=int, default=None,
                        help="instead of listing checkpoints: the last N checkpoints of --run_dir")
    parser.add_argument("--run_dir", default=None, help="an --output_dir of `vanilla-transformer train`")
    parser.add_argument("--config_from", default=None,
                        help="folder with config.json and tokenizer (default: the last checkpoint)")
    args = parser.parse_args(argv)
    paths = list(args.checkpoints)
    if args.last is not None or args.run_dir is not None:
        if paths or args.last is None or args.run_dir is None:
            parser.error("give either checkpoint folders or both --last N and --run_dir DIR")
        paths = [str(p) for p in list_checkpoints(args.run_dir)[-args.last:]]
        if len(paths) < args.last:
            parser.error(f"--run_dir {args.run_dir} has {len(paths)} checkpoints, fewer than --last {args.last}")
    if not paths:
        parser.error("no checkpoints given")
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = average_to_folder(paths, args.output, args.config_from)
    print(f"averaged {len(paths)} checkpoints into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
