"""The processes: Accelerate's `Accelerator` as the trainer needs it (CPU-only torchrun, FSDP2 and precision on CPU
processes, the workarounds of Accelerate 1.15), one output directory seen by every process, and the FSDP2 root
parameters gathered for `generate()`."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, gather_object

from ..base.files import write_text
from .arguments import TrainArguments

logger = logging.getLogger(__name__)


def make_accelerator(train_args: TrainArguments) -> Accelerator:
    """Accelerate decides processes, devices and precision (`accelerate config` / `accelerate launch`);
    `--mixed_precision` overrides. The scheduler steps once per update (not once per process)."""
    output_dir = Path(train_args.output_dir)
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "runs"),
                                   automatic_checkpoint_naming=False)
    kwargs = {"mixed_precision": train_args.mixed_precision} if train_args.mixed_precision else {}
    log_with = None if train_args.report_to == "none" else train_args.report_to
    accelerator = Accelerator(project_config=project, log_with=log_with, step_scheduler_with_optimizer=False,
                              cpu=cpu_only_multiprocess(), **kwargs)
    refuse_fp16_on_cpu(accelerator)
    keep_fsdp_on_cpu(accelerator)
    return accelerator


def cpu_only_multiprocess() -> bool:
    """Several processes (torchrun) on a machine without GPUs: Accelerate then needs `cpu=True` to use gloo
    (`accelerate launch --cpu` says so itself)."""
    from accelerate.utils import is_npu_available, is_xpu_available

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return several and not (torch.cuda.is_available() or is_xpu_available() or is_npu_available())


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config (`distributed_type: FSDP`) says so in the environment."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def keep_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """FSDP2 on CPU processes (gloo), as on GPUs.

    Accelerate 1.15 reads the FSDP plugin only for GPU-like devices (accelerate/state.py, `AcceleratorState.__init__`,
    the branch `elif self.distributed_type in [DistributedType.MULTI_GPU, ...]`, which leaves MULTI_CPU out): CPU
    processes launched with an FSDP config silently train with DDP, without a message. PyTorch's `fully_shard`
    runs on CPU, so we set what that branch sets on GPUs (the distributed type and the plugin, read from the same
    environment variables); from there on Accelerate's own FSDP2 code runs (`fully_shard` of the wrapped layers,
    sharded checkpoints, gathered state dicts), the code a GPU run goes through.
    """
    if not fsdp_requested() or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(f"FSDP version {plugin.fsdp_version} does not run on CPU processes; set `fsdp_version: 2` "
                         "in the Accelerate config (see examples/accelerate/fsdp2.yaml)")
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState does on GPUs
    if accelerator.is_main_process:
        logger.info("FSDP2 on %d CPU processes (gloo)", accelerator.num_processes)


def refuse_fp16_on_cpu(accelerator: Accelerator) -> None:
    """Accelerate 1.15 turns float16 autocast and loss scaling on only off the CPU (accelerator.py: `self.native_amp`
    needs `self.device.type != "cpu"`); on CPU `fp16` would silently train in float32."""
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("--mixed_precision fp16 needs a GPU: on CPU Accelerate neither autocasts to float16 nor "
                         "scales the loss, so the run would silently train in float32. Use --mixed_precision bf16 "
                         "(or no) on CPU.")


def check_shared_output_dir(accelerator: Accelerator, output_dir: Path) -> None:
    """Every process writes into the same checkpoint folders (the main process the model, optimizer and exports,
    each process its own RNG state and, under FSDP, its own shards), and reads them back on --resume: all processes
    must see one --output_dir. The main process writes a marker that every process must be able to read; if some
    cannot (nodes with their own local disks), all stop with the same error instead of writing incomplete
    checkpoints."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast_object_list

    nonce = broadcast_object_list([secrets.token_hex(8)])[0]  # the main process's
    marker = output_dir / f".tmp-shared-{nonce}"
    if accelerator.is_main_process:
        write_text(marker, nonce)
    accelerator.wait_for_everyone()
    try:
        sees = marker.read_text(encoding="utf-8") == nonce
    except OSError:
        sees = False
    views = gather_object([(accelerator.process_index, socket.gethostname(), sees)])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker.unlink(missing_ok=True)
    blind = [f"rank {rank} on {host}" for rank, host, seen in views if not seen]
    if blind:
        raise RuntimeError(
            f"--output_dir {output_dir} is not shared by all processes: {', '.join(blind)} cannot see the files the "
            f"main process (rank 0 on {views[0][1]}) writes there. Checkpoints, the tokenizer and --resume need "
            "one directory that every node mounts (NFS, Lustre, ...); give every node the same path on it.")


@contextlib.contextmanager
def root_gathered(accelerator: Accelerator, model):
    """`generate()` runs the encoder directly, not through the model's forward, so under FSDP2 the parameters
    held by the root module (those outside the separately wrapped layers) would still be sharded there: gather
    them for the duration (every process takes part, as with all FSDP calls)."""
    if not accelerator.is_fsdp2:
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def forget_accelerate_state() -> None:
    """Forget Accelerate's process-wide state (device, processes, mixed precision), so that the next `Accelerator`
    of this process is set up afresh: a precision cannot change inside one `AcceleratorState`. For programs, and
    tests, that call `train` more than once in one process with another `--mixed_precision`; never during a run."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
