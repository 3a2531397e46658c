"""The output folder of a run: one writer at a time (its lock), and `--overwrite_output_dir`'s clean-up of what an
earlier run wrote there (and nothing else)."""

from __future__ import annotations

import logging
from pathlib import Path

from accelerate import Accelerator

from ..base.locks import OutputFolderBusy, OutputLock
from ..base.outputs import is_owned_model_file, is_owned_tokenizer_file, remove_owned
from .arguments import TrainArguments
from .checkpoints import list_checkpoints, remove_checkpoint, remove_temporaries

logger = logging.getLogger(__name__)


def take_output_lock(accelerator: Accelerator, output_dir: Path) -> OutputLock | None:
    """One writer per output folder (`base.locks`): the main process locks `--output_dir` for the run; when another
    run holds it, every process stops with the same one-line error naming that run. The other processes take no
    lock: they write into the folder the main process locked (`check_shared_output_dir` makes sure it is one)."""
    lock, problem = None, None
    if accelerator.is_main_process:
        try:
            lock = OutputLock(output_dir).acquire()
        except OutputFolderBusy as error:
            problem = str(error)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem])[0]
    if problem:
        raise OutputFolderBusy(problem)
    return lock


def prepare_output_dir(accelerator: Accelerator, train_args: TrainArguments) -> Path:
    """Create `--output_dir`; with `--overwrite_output_dir` remove what an earlier run wrote there — its
    checkpoints, best/, final/, tokenizer/ and TensorBoard event files — and nothing else (a user's file inside one
    of those folders stays, with a warning)."""
    output_dir = Path(train_args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(output_dir)
        if train_args.overwrite_output_dir:
            for path in list_checkpoints(output_dir):
                remove_checkpoint(path)
            for name, owned in (("best", is_owned_model_file), ("final", is_owned_model_file),
                                ("tokenizer", is_owned_tokenizer_file)):
                kept = remove_owned(output_dir / name, owned)
                if kept:
                    logger.warning("kept %s: it holds files vanilla-transformer did not write (%s)",
                                   output_dir / name, ", ".join(kept))
            remove_event_files(output_dir / "runs")
    accelerator.wait_for_everyone()
    return output_dir


def remove_event_files(folder: Path) -> None:
    """TensorBoard's event files below `folder`, and the folders left empty; anything else stays."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path.name.startswith("events.out.tfevents."):
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()
