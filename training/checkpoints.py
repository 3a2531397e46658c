"""Training checkpoints: written atomically, rotated, found again on `--resume`, and averaged (§6.1).

A checkpoint is `<output_dir>/checkpoint-<step>/`, written by Accelerate's `save_state` (model.safetensors,
optimizer.bin, scheduler.bin, random_states_<rank>.pkl, and the gradient scaler under fp16) plus:

* `trainer_state.json`: the step, the data position (epoch, micro-batches consumed in that epoch), tokens seen,
  training time and the best validation BLEU so far — everything `--resume` needs besides Accelerate's state;
* `config.json`, `generation_config.json` and the tokenizer files, so that a checkpoint folder loads with
  `AutoModelForSeq2SeqLM.from_pretrained` and `vanilla-transformer evaluate` like an exported model;
* `averaging.safetensors`: the weight snapshots the end of the run will average (`--average_last`, see
  `averaging.py`).

Under FSDP Accelerate writes each process's shards instead (`pytorch_model_fsdp_0/`, `optimizer_0/`, what
`--resume` reads), and the trainer adds the gathered weights as `model.safetensors`, so that FSDP checkpoints load
and average like the others.

Everything is first written to `.tmp-checkpoint-<step>/` and renamed when complete: a run killed while saving leaves
no half checkpoint that `--resume` could pick up. `trainer_state.json`, written last, lists every file of the
checkpoint with its size; `--resume` takes the newest checkpoint whose files are all there at those sizes (a state
file deleted or truncated later makes a checkpoint incomplete: the previous complete one is used, with a warning).
A full disk while saving raises `DiskFullError` naming the folder; the previous checkpoint is kept.

The paper evaluates the average of the last 5 checkpoints (base) or 20 (big) (§6.1); `average_checkpoints` computes
that elementwise mean, and `vanilla-transformer average CKPT... --output DIR` writes it as a model folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..base.errors import DiskFullError, is_disk_full
from ..base.files import write_json
from ..base.outputs import MODEL_FOLDER_FILES, TOKENIZER_FILES, install_folder, remove_owned

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
# What Accelerate's save_state writes (model, optimizer, scheduler, sampler, RNG and scaler states; FSDP folders).
ACCELERATE_FILES = re.compile(r"(model|pytorch_model)(_fsdp)?(_\d+)?(\.safetensors|\.bin)?|optimizer(_\d+)?(\.bin)?|"
                              r"scheduler(_\d+)?\.bin|sampler(_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt|"
                              r"custom_checkpoint_\d+\.pkl|dl_state_dict(_\d+)?\.bin")
# Leftovers of a run killed while writing: the temporary and the moved-aside folders of our outputs.
TEMPORARY = re.compile(r"\.(tmp|old)-(checkpoint-\d+|best|final|tokenizer)(-[a-z0-9_]{8})?")


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


def read_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))


def manifest(folder: Path) -> dict[str, int]:
    """{path relative to `folder`: size in bytes} of every file below `folder`."""
    return {path.relative_to(folder).as_posix(): path.stat().st_size
            for path in sorted(folder.rglob("*")) if path.is_file()}


def save_accelerate_state(accelerator, folder: Path) -> None:
    """Accelerate's part of a checkpoint into `folder`: model, optimizer, scheduler, RNG and scaler states (FSDP:
    each process its shards). Every process calls it. Our one call of `accelerator.save_state`, so that a test can
    make it fail (a full disk) without patching Accelerate."""
    accelerator.save_state(str(folder))


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict,
                    write_extras: Callable[[Path], None] | None = None) -> Path:
    """`accelerator.save_state` into `.tmp-checkpoint-<step>`, plus whatever `write_extras(folder)` adds and
    `state` as trainer_state.json with the list of files (main process only), then one rename to
    `checkpoint-<step>`. A full disk raises `DiskFullError`; the temporary folder is removed, older checkpoints
    stay.

    Every process must call this (each saves its own RNG state; FSDP gathers shards).
    """
    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    temporary = Path(output_dir) / f".tmp-{final.name}"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        save_accelerate_state(accelerator, temporary)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if write_extras is not None:
                write_extras(temporary)
            write_json(temporary / STATE_FILE, {**state, "files": manifest(temporary)})
            install_folder(temporary, final, owned=is_owned_checkpoint_file)
    except Exception as error:
        if not is_disk_full(error, output_dir):
            raise
        shutil.rmtree(temporary, ignore_errors=True)
        previous = latest_checkpoint(output_dir)
        kept = f"{previous.name} is kept" if previous is not None else "no earlier checkpoint exists"
        raise DiskFullError(f"no space left on {Path(output_dir).resolve()} while writing {final.name} ({kept}): "
                            "free some space, then continue with --resume") from error
    accelerator.wait_for_everyone()
    return final


def checkpoint_problems(checkpoint: str | os.PathLike, processes: int = 1) -> list[str]:
    """What makes `checkpoint` unusable for `--resume` (empty: complete): files of its trainer_state.json list that
    are missing or have another size, or, for a checkpoint written before that list existed, missing state files;
    and the RNG state of any of this run's `processes`."""
    checkpoint = Path(checkpoint)
    try:
        state = read_state(checkpoint)
    except (OSError, ValueError) as error:
        return [f"{STATE_FILE} cannot be read ({error})"]
    problems = []
    files = state.get("files")
    if isinstance(files, dict):
        for name, size in sorted(files.items()):
            path = checkpoint / name
            if not path.is_file():
                problems.append(f"{name} missing")
            elif path.stat().st_size != size:
                problems.append(f"{name} has {path.stat().st_size} bytes, {size} were written")
    else:
        for names in ((WEIGHTS_FILE, "pytorch_model_fsdp_0"), ("optimizer.bin", "optimizer_0"), ("scheduler.bin",)):
            if not any((checkpoint / name).exists() for name in names):
                problems.append(f"{names[0]} missing")
    problems += [f"random_states_{rank}.pkl missing" for rank in range(processes)
                 if not (checkpoint / f"random_states_{rank}.pkl").is_file()
                 and f"random_states_{rank}.pkl missing" not in problems]
    return problems


def resumable_checkpoint(output_dir: str | os.PathLike, processes: int = 1) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint of `output_dir` (None if there is none) and one line for each newer,
    incomplete checkpoint passed over, naming what it lacks."""
    passed_over = []
    root = Path(output_dir)
    folders = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None] if root.is_dir() else []
    for checkpoint in sorted(folders, key=checkpoint_step, reverse=True):
        problems = (checkpoint_problems(checkpoint, processes) if (checkpoint / STATE_FILE).is_file()
                    else [f"{STATE_FILE} missing"])
        if not problems:
            return checkpoint, passed_over
        passed_over.append(f"{checkpoint.name} is incomplete ({'; '.join(problems)})")
    return None, passed_over


def is_owned_checkpoint_file(folder: Path, name: str) -> bool:
    """Whether `folder/name` is something a checkpoint of this package holds (listed in its trainer_state.json,
    or one of Accelerate's and the model folder's file names)."""
    if name == STATE_FILE:
        return True
    try:
        files = read_state(folder).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    if isinstance(files, dict):
        return name in {path.split("/")[0] for path in files}
    return (name in MODEL_FOLDER_FILES and name != "README.md") or bool(ACCELERATE_FILES.fullmatch(name))


def remove_checkpoint(path: Path) -> list[str]:
    """Delete a checkpoint's own files (its trainer_state.json first, so that a half-removed folder is no
    checkpoint) and the folder when nothing else is in it; returns the names of foreign files kept."""
    owned = {entry.name for entry in path.iterdir() if is_owned_checkpoint_file(path, entry.name)}
    (path / STATE_FILE).unlink(missing_ok=True)
    kept = remove_owned(path, lambda folder, name: name in owned)
    if kept:
        logger.warning("kept %s: it holds files vanilla-transformer did not write (%s)", path, ", ".join(kept))
    return kept


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints (keep=0: delete none); returns the deleted folders."""
    if keep <= 0:
        return []
    stale = list_checkpoints(output_dir)[:-keep]
    for path in stale:
        remove_checkpoint(path)
        logger.info("removed old checkpoint %s", path)
    return stale


def remove_temporaries(output_dir: str | os.PathLike) -> None:
    """Remove the leftover temporary folders of a run killed while writing (only names this package uses)."""
    root = Path(output_dir)
    if root.is_dir():
        for path in root.iterdir():
            if TEMPORARY.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


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


class RunningMean:
    """Elementwise mean of state dicts added one at a time (§6.1's averaging): accumulated in float64, then cast back
    to each tensor's own dtype. Integer tensors (none in this model) are taken from the first unchanged. Every state
    dict must hold the same tensors, of the same shapes, as the first; `name` says which one did not."""

    def __init__(self):
        self.count = 0
        self.first_name = ""
        self.reference: dict[str, torch.Tensor] = {}
        self.total: dict[str, torch.Tensor] = {}

    def add(self, tensors: dict[str, torch.Tensor], name: str) -> None:
        if self.count == 0:
            self.first_name, self.reference = name, tensors
            self.total = {k: v.double() for k, v in tensors.items() if v.is_floating_point()}
            self.count = 1
            return
        if tensors.keys() != self.reference.keys():
            difference = sorted(set(tensors) ^ set(self.reference))
            raise ValueError(f"{name} does not hold the same tensors as {self.first_name} (differ: {difference[:5]})")
        for key, tensor in tensors.items():
            if tensor.shape != self.reference[key].shape:
                raise ValueError(f"{name}: {key} has shape {tuple(tensor.shape)}, {self.first_name} has "
                                 f"{tuple(self.reference[key].shape)}")
            if key in self.total:
                self.total[key] += tensor.double()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("an average needs at least one set of weights")
        return {key: (self.total[key] / self.count).to(tensor.dtype) if key in self.total else tensor
                for key, tensor in self.reference.items()}


def average_checkpoints(paths: list[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Elementwise mean of the model weights of `paths` (checkpoint or model folders), as in §6.1 (`RunningMean`:
    one checkpoint in memory at a time besides the sum)."""
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    from ..modeling.modeling_vanilla_transformer import split_fused_projections  # checkpoints of earlier versions
    mean = RunningMean()
    for path in paths:
        mean.add(split_fused_projections(load_file(str(weights_file(path)))), str(path))
    return mean.mean()


def load_model_with_weights(config_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor]):
    """A model built from `config_dir/config.json` holding `state_dict` (tied copies may be absent)."""
    from .. import modeling  # noqa: F401  (registers the Auto classes)
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(config_dir)
    model = AutoModelForSeq2SeqLM.from_config(config)
    expected = model.state_dict()
    for key, tensor in state_dict.items():
        if key in expected and tuple(expected[key].shape) != tuple(tensor.shape):
            raise ValueError(f"the weights do not fit the config of {config_dir}: {key} has shape "
                             f"{tuple(tensor.shape)}, the config (vocab_size {config.vocab_size}, d_model "
                             f"{config.d_model}) makes it {tuple(expected[key].shape)}; give --config_from the model "
                             "the checkpoints belong to")
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise ValueError(f"weights do not fit the config of {config_dir}: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    return model


def average_to_folder(paths: list[str], output: str, config_dir: str | None = None) -> Path:
    """Average `paths` and write a model folder (weights, config, generation config, tokenizer) to `output`, which
    must pass `check_output_folder` (never an input, a file or a checkpoint; a foreign folder only gets the model's
    files added)."""
    from .export import save_model_folder

    averaged = average_checkpoints(paths)
    config_dir = config_dir or str(paths[-1])
    if not (Path(config_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{config_dir} has no config.json; pass --config_from a model or checkpoint folder")
    model = load_model_with_weights(config_dir, averaged)
    tokenizer = None
    if any((Path(config_dir) / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config_dir)
    summary = {"averaged_checkpoints": [str(p) for p in paths]}
    return save_model_folder(model, tokenizer, output, summary=summary)
