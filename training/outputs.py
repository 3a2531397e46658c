"""Where commands write, and the one rule they follow: never delete or move a file this package did not write.

A model folder (`average --output`, `convert-marian OUT_DIR`, the Trainer example's `--output_dir`, training's
`best/` and `final/`) is written complete under a temporary name and then put in place:

* a path that does not exist, or an empty folder, simply becomes the new folder;
* a folder recognised as a model folder this package wrote (`is_model_folder`: a config.json of model_type
  `vanilla_transformer` and nothing but the files such a folder holds) is replaced by renames;
* an existing *file*, an input of the same command (or a folder inside one or holding one), and a training
  checkpoint are refused (`OutputPathError`), whatever the flags;
* any other folder is refused unless the command's `--overwrite` is given; then the model's files are written into
  it one by one and every other file in it stays.

`check_output_folder` applies the rule before any work starts; `install_folder` puts a finished temporary folder in
place and keeps foreign files even when something changed the folder in the meantime.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import UsageError

MODEL_TYPE = "vanilla_transformer"
# Every file that `save_pretrained`, the tokenizers, `save_model_folder`, `convert-marian` and `Trainer.save_model`
# put into a model folder of ours.
MODEL_FOLDER_FILES = frozenset({
    "model.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
    "configuration_vanilla_transformer.py", "modeling_vanilla_transformer.py", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json",
    "target_vocab.json", "source.spm", "target.spm", "README.md", "run_summary.json", "test_hypotheses.txt",
    "validation_hypotheses.txt", "training_args.bin",
})
WEIGHT_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
TOKENIZER_FOLDER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                    "added_tokens.json", "chat_template.jinja"})
# Files only a training checkpoint holds (Accelerate's save_state and our trainer_state.json).
CHECKPOINT_MARKERS = ("trainer_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


class OutputPathError(UsageError):
    """An output path the command may not write to; the message says why and what to do."""


def same_or_nested(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _is_generated_card(path: Path) -> bool:
    try:
        from ..hub_card import is_generated_card
    except ImportError:
        return False
    return is_generated_card(path)


def is_owned_model_file(folder: Path, name: str) -> bool:
    """Whether `folder/name` is a file this package writes into a model folder (a README.md only when it is a
    generated model card: a hand-written one is the user's)."""
    path = folder / name
    if not path.is_file() or path.is_symlink():
        return False
    if name == "README.md":
        return _is_generated_card(path)
    return name in MODEL_FOLDER_FILES or bool(WEIGHT_SHARD.fullmatch(name))


def foreign_entries(folder: Path, owned=is_owned_model_file) -> list[str]:
    """Names in `folder` that `owned(folder, name)` does not claim, sorted."""
    return sorted(entry.name for entry in folder.iterdir() if not owned(folder, entry.name))


def model_type_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def is_model_folder(folder: str | os.PathLike) -> bool:
    """A folder this package wrote as a model folder, holding nothing else (so replacing it loses nothing)."""
    folder = Path(folder)
    return (folder.is_dir() and not folder.is_symlink() and model_type_of(folder) == MODEL_TYPE
            and not foreign_entries(folder))


def is_checkpoint_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).exists() for name in CHECKPOINT_MARKERS)


def check_output_folder(target: str | os.PathLike, *, flag: str, inputs: Iterable[str | os.PathLike] = (),
                        overwrite: bool = False, overwrite_flag: str | None = "--overwrite") -> Path:
    """Refuse (`OutputPathError`, before any work) an output folder the command may not write; see the module
    docstring. Returns the target as a Path."""
    target = Path(target)
    for source in inputs:
        if source is not None and Path(source).exists() and same_or_nested(target, Path(source)):
            raise OutputPathError(f"{flag} {target} is (or contains, or is inside) the input {source}: write the "
                                  "result somewhere else")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputPathError(f"{flag} {target} is an existing file, not a folder: choose another {flag}")
    if not target.exists() or not any(target.iterdir()) or is_model_folder(target):
        return target
    if is_checkpoint_folder(target):
        raise OutputPathError(f"{flag} {target} is a training checkpoint (it holds optimizer and RNG states that "
                              "--resume needs): choose another folder")
    if not overwrite:
        foreign = foreign_entries(target)
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        advice = f" or pass {overwrite_flag} to add the model's files to it (the other files stay)" \
            if overwrite_flag else ""
        raise OutputPathError(f"{flag} {target} already holds files that are not a model folder written by "
                              f"vanilla-transformer ({shown}): choose a new or empty folder{advice}")
    return target


def temporary_folder(target: str | os.PathLike) -> Path:
    """A new, uniquely named hidden folder next to `target` (never a name a user file could already have)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    os.chmod(folder, 0o777 & ~current_umask())  # mkdtemp's folder is private; the output is an ordinary folder
    return folder


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, owned=None):
    """Write a folder atomically: the block writes into a `temporary_folder` next to `target`, which is then put at
    `target` (`install_folder`, with `owned` saying which files there may be replaced); if the block fails, the
    temporary folder is removed and `target` is left as it was."""
    temporary = temporary_folder(target)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    install_folder(temporary, Path(target), owned=owned or is_owned_model_file)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_directory(source: Path, target: Path) -> None:
    """Put the complete folder `source` at `target` by renames only; an older `target` — which must be a folder
    this package owns — is moved aside under a unique hidden name and removed afterwards."""
    source, target = Path(source), Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputPathError(f"{target} is a file, not a folder: it is left as it is")
    if not target.exists():
        os.replace(source, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
    os.replace(target, old)  # a rename onto the empty folder just made
    try:
        os.replace(source, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def install_folder(source: Path, target: Path, owned=is_owned_model_file) -> Path:
    """Put the finished folder `source` at `target`: by renames when `target` is absent, empty or holds only
    files `owned` claims; otherwise file by file into `target`, replacing only owned files (and removing owned
    files the new folder no longer has), so that every foreign file stays. `source` is gone afterwards."""
    source, target = Path(source), Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        shutil.rmtree(source, ignore_errors=True)
        raise OutputPathError(f"{target} is a file, not a folder: it is left as it is")
    if not target.exists() or not foreign_entries(target, owned):
        replace_directory(source, target)
        return target
    new = {entry.name for entry in source.iterdir()}
    mine = {entry.name for entry in target.iterdir() if owned(target, entry.name)}  # decided before any change
    for name in sorted(new):
        if (target / name).exists() and name not in mine:
            raise OutputPathError(f"{target / name} is not a file vanilla-transformer wrote: it is left as it is "
                                  f"(the new files are in {source})")
    for name in sorted(new):
        os.replace(source / name, target / name)
    for name in sorted(mine - new):
        stale = target / name
        shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
    source.rmdir()
    return target


def is_owned_tokenizer_file(folder: Path, name: str) -> bool:
    return name in TOKENIZER_FOLDER_FILES and (folder / name).is_file()


def remove_owned(folder: Path, owned) -> list[str]:
    """Delete the entries of `folder` that `owned(folder, name)` claims, and the folder itself when nothing else
    is left; returns the names of what was kept (the foreign entries)."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    kept = []
    for entry in folder.iterdir():
        if owned(folder, entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        else:
            kept.append(entry.name)
    if not kept:
        folder.rmdir()
    return sorted(kept)


def check_output_file(target: str | os.PathLike, *, flag: str, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """An output file may replace an older file of that name, but never a folder or one of the inputs."""
    target = Path(target)
    for source in inputs:
        if source is not None and Path(source).exists() and same_or_nested(target, Path(source)):
            raise OutputPathError(f"{flag} {target} is the input {source}: write the result somewhere else")
    if target.is_dir():
        raise OutputPathError(f"{flag} {target} is a folder: give a file name")
    if not target.parent.is_dir():
        raise OutputPathError(f"{flag} {target}: the folder {target.parent} does not exist")
    return target

