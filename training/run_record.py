"""What a run is, as its checkpoints record it, and what `--resume` may change.

Every checkpoint's `trainer_state.json` holds the run's record under "run" (`run_record`): every argument that
shapes the weights or the validation scores, the identity of each data file (its size and a SHA-256 of its whole
content, so a moved or copied file is still the same data and a file with any byte edited is not, whatever its size and
modification time) and of the tokenizer (a hash of its files).
`--resume` computes the record of its own arguments and refuses (`resume_problems`) any difference outside
`MAY_CHANGE`, in one line listing each field as `old → new`; what changed within `MAY_CHANGE` is kept in the
record's "resumes" list, which `run_summary.json` reports, so the summary says what the run really was.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..base.files import content_sha256, files_sha256
from ..base.outputs import TOKENIZER_FOLDER_FILES

# What records written before whole-file hashes ("sample_sha256") hashed of a data file: its first and last MiB.
SAMPLE_BYTES = 1 << 20

# What --resume may change, and why that is safe: none of them touches the weights, the optimizer, the data order
# or the validation scores (only when and how often they are computed, logged and kept).
MAY_CHANGE = {
    "max_steps": "upwards only (not below the checkpoint's step): the run trains longer",
    "max_time": "the wall-clock budget (the time already spent counts)",
    "eval_steps": "when validation runs (it uses no random numbers)",
    "save_steps": "when checkpoints are written",
    "logging_steps": "how often the loss is logged",
    "keep_last": "how many checkpoints are kept",
    "average_last": "how many of the snapshots taken are averaged at the end (the average is kept only if better)",
    "average_every": "how often further snapshots are taken",
    "report_to": "the experiment tracker",
    "eval_batch_size": "sentences per generation batch",
    "do_test": "whether the final model translates the test split",
    "test_file": "the test split of --do_test",
    "test_target_file": "the test split of --do_test",
    "export_dtype": "the dtype of best/ and final/",
    "cache_dir": "where datasets are cached",
}

# The arguments a record holds, besides the data files and the tokenizer (the model's are compared through its
# config, see `arguments.check_resume`).
RECORDED = ("dataset", "dataset_config", "source_lang", "target_lang", "vocab_size", "tokenizer_sample", "max_length",
            "max_tokens",
            "eval_samples", "seed", "warmup_steps", "lr_scale", "adam_beta1", "adam_beta2", "adam_epsilon",
            "adam_fused", "clip_norm", "gradient_accumulation_steps", "mixed_precision", "num_beams",
            "length_penalty", *MAY_CHANGE)
DATA_FILES = ("train_file", "train_target_file", "validation_file", "validation_target_file")


def file_identity(path: str | os.PathLike | None) -> dict | None:
    """{"path", "size", "sha256"} of a data file: its size and a SHA-256 of its whole content (~2 s for a 2.8 GB
    corpus, computed once per process and shared with the data cache's key, see `content_sha256`)."""
    if path is None:
        return None
    path = Path(path)
    return {"path": str(path), "size": path.stat().st_size, "sha256": content_sha256(path)}


def sample_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's first and last `SAMPLE_BYTES` (the whole file when smaller): what the records of earlier
    versions hold ("sample_sha256"), computed to compare with them."""
    size = os.stat(path).st_size
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        digest.update(stream.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            stream.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            digest.update(stream.read(SAMPLE_BYTES))
    return digest.hexdigest()


def same_file(before: dict | None, after: dict | None) -> bool:
    """Whether two identities are the same data (an identity of an earlier version, with only the hash of the first
    and last MiB, is compared on that)."""
    if before is None or after is None:
        return before is after
    if before["size"] != after["size"]:
        return False
    if "sha256" in before:
        return before["sha256"] == after["sha256"]
    try:
        return before.get("sample_sha256") == sample_sha256(after["path"])
    except OSError:
        return False


def tokenizer_identity(folder: str | os.PathLike) -> str | None:
    """SHA-256 over the tokenizer files of `folder` (names and contents), or None when it holds none."""
    return files_sha256(folder, TOKENIZER_FOLDER_FILES)


def tokenizer_folder(data, output_dir: str | os.PathLike) -> Path:
    """The tokenizer a run uses: `--tokenizer`, else the one it trained into `<output_dir>/tokenizer`."""
    return Path(data.tokenizer) if data.tokenizer else Path(output_dir) / "tokenizer"


def run_record(data, train, default_vocab_size: int) -> dict:
    """The record of a run with these arguments (see the module docstring)."""
    values = {**{f: getattr(data, f) for f in vars(data)}, **{f: getattr(train, f) for f in vars(train)}}
    arguments = {name: values.get(name) for name in RECORDED}
    if data.tokenizer is None and arguments["vocab_size"] is None:
        arguments["vocab_size"] = default_vocab_size  # what was used
    if data.tokenizer is not None:
        arguments["vocab_size"] = None  # the tokenizer's own
    folder = tokenizer_folder(data, train.output_dir)
    return {
        "arguments": arguments,
        "files": {name: file_identity(getattr(data, name)) for name in DATA_FILES},
        "tokenizer": {"source": f"--tokenizer {data.tokenizer}" if data.tokenizer else
                      f"trained into {folder}", "sha256": tokenizer_identity(folder)},
        "resumes": [],
    }


def shown(value) -> str:
    return "(none)" if value is None else str(value)


def file_shown(identity: dict | None) -> str:
    return "(none)" if identity is None else f"{identity['path']} ({identity['size']} bytes)"


def differences(old: dict, new: dict) -> tuple[list[str], dict]:
    """(refused differences as `--name old → new`, allowed changes {name: [old, new]}) between two records."""
    refused, allowed = [], {}
    old_arguments, new_arguments = old.get("arguments", {}), new["arguments"]
    for name in RECORDED:
        if name not in old_arguments or old_arguments[name] == new_arguments[name]:
            continue
        before, after = old_arguments[name], new_arguments[name]
        if name in MAY_CHANGE and not (name == "max_steps" and after < before):
            allowed[name] = [before, after]
        elif name != "max_steps":  # lowering --max_steps is refused against the step reached, see resume_problems
            refused.append(f"--{name} {shown(before)} → {shown(after)}")
    for name in DATA_FILES:
        before, after = old.get("files", {}).get(name), new["files"][name]
        if not same_file(before, after):
            changed = " (same path, other content)" if before and after and before["path"] == after["path"] else ""
            refused.append(f"--{name} {file_shown(before)} → {file_shown(after)}{changed}")
    before, after = old.get("tokenizer") or {}, new["tokenizer"]
    if before.get("sha256") and after["sha256"] and before["sha256"] != after["sha256"]:
        refused.append(f"tokenizer {before.get('source')} → {after['source']} (other vocabulary)")
    return refused, allowed


def resume_problems(checkpoint: Path, state: dict, new: dict) -> list[str]:
    """What the checkpoint cannot honour of the record `new` (one string, or none)."""
    problems = []
    step = state.get("step", 0)
    if new["arguments"]["max_steps"] < step:
        problems.append(f"--max_steps {new['arguments']['max_steps']} is below the step {checkpoint.name} reached "
                        f"({step}): give a larger --max_steps, or use {checkpoint} as it is")
    old = state.get("run")
    if not isinstance(old, dict):
        return problems  # a checkpoint written before runs were recorded: nothing to compare
    refused, _ = differences(old, new)
    if refused:
        problems.append(
            f"--resume: {checkpoint.name} was trained with other settings ({'; '.join(refused)}): give the arguments "
            "of the run being resumed, or start a new run in another --output_dir (--resume may change only "
            f"{', '.join('--' + name for name in MAY_CHANGE)}; --max_steps only upwards)")
    return problems
