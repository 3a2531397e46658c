"""Model folders written at the end of training (`final/`), for the best validation BLEU (`best/`) and by averaging.

A folder holds what `AutoModelForSeq2SeqLM.from_pretrained` and `AutoTokenizer.from_pretrained` need (after
`import vanilla_transformer.modeling`, or with `trust_remote_code=True` thanks to the code files the model writes):
`model.safetensors`, `config.json`, `generation_config.json` with the §6.1 decoding defaults (beam 4, length
penalty 0.6, and no length: the model's `generate` then applies the §6.1 rule, source length + 50, so that
`Seq2SeqTrainer` and `pipeline` neither stop at transformers' default of 20 tokens nor run to a fixed cap), the
tokenizer files, and `run_summary.json` when given one.
It is written under a temporary name and put in place when complete (`outputs.install_folder`: an older model
folder of ours is replaced, files this package did not write are never removed). A full disk raises
`DiskFullError` naming the folder, and an older folder at that place is kept.

With a run summary, the folder gets its model card too (`hub_card.render_card`: README.md).
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import platform
import shutil
from pathlib import Path

import torch
from transformers import GenerationConfig

from ..base.errors import DiskFullError, is_disk_full
from ..base.files import write_json
from ..base.outputs import SUMMARY_FILE, install_folder, temporary_folder
from .. import hub_card
from ..modeling.modeling_vanilla_transformer import BEAM_SIZE, LENGTH_PENALTY

logger = logging.getLogger(__name__)

LIBRARIES = ("vanilla-transformer", "torch", "transformers", "accelerate", "datasets", "tokenizers", "sacrebleu",
             "safetensors")


def paper_generation_config(config, num_beams: int = BEAM_SIZE, length_penalty: float = LENGTH_PENALTY
                            ) -> GenerationConfig:
    """§6.1 decoding defaults, without a length (see the module docstring). A length penalty only exists for beam
    search: with `num_beams=1` it is left out (transformers refuses to save it)."""
    beam = {"length_penalty": length_penalty} if num_beams > 1 else {}
    return GenerationConfig(
        num_beams=num_beams,
        **beam,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
    )


def save_model_folder(model, tokenizer, out_dir: str | os.PathLike, summary: dict | None = None,
                      state_dict: dict | None = None, num_beams: int = BEAM_SIZE,
                      length_penalty: float = LENGTH_PENALTY,
                      extra_files: dict[str, str] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write `model` (or `state_dict` into its structure, for FSDP/DDP-gathered weights), `tokenizer` and the
    text files `extra_files` ({name: content}) to `out_dir` atomically. Call on the main process only.

    `dtype` (e.g. torch.bfloat16) casts the saved floating-point weights and is recorded as the config's `dtype`, so
    that `from_pretrained` loads them in it; the model itself is left as it is."""
    out_dir = Path(out_dir)
    temporary = temporary_folder(out_dir)
    try:
        if dtype is not None and dtype != torch.float32:
            weights = model.state_dict() if state_dict is None else state_dict
            state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
        model.save_pretrained(temporary, state_dict=state_dict)
        if dtype is not None and dtype != torch.float32:
            config = copy.deepcopy(model.config)  # save_pretrained recorded the model's own (float32) dtype
            config.dtype = str(dtype).removeprefix("torch.")
            config.save_pretrained(temporary)
        paper_generation_config(model.config, num_beams, length_penalty).save_pretrained(temporary)
        if tokenizer is not None:
            tokenizer.save_pretrained(temporary)
        for name, text in (extra_files or {}).items():
            (temporary / name).write_text(text, encoding="utf-8")
        if summary is not None:
            write_json(temporary / SUMMARY_FILE, summary)
            try:
                hub_card.render_card(summary, temporary)
            except Exception:  # noqa: BLE001  (a card is a convenience: never lose a trained model over it)
                logger.warning("model card not written to %s", out_dir, exc_info=True)
    except Exception as error:
        full = is_disk_full(error, out_dir.parent)  # before the temporary folder is removed and frees space
        shutil.rmtree(temporary, ignore_errors=True)
        if full:
            kept = " (the older folder there is kept)" if out_dir.exists() else ""
            raise DiskFullError(f"no space left on {out_dir.parent.resolve()} while writing {out_dir.name}{kept}: "
                                "free some space and run again") from error
        raise
    install_folder(temporary, out_dir)
    logger.info("model written to %s", out_dir)
    return out_dir


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware(accelerator=None) -> dict:
    """What the run ran on: CPU, threads, accelerators, processes and precision."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
    }
    if accelerator is not None:
        info.update(num_processes=accelerator.num_processes, distributed_type=str(accelerator.distributed_type),
                    device=str(accelerator.device), mixed_precision=accelerator.mixed_precision)
    return info
