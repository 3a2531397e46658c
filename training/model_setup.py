"""The model the trainer trains: built from the preset and the tokenizer, and kept in checkpoints and exports under
its plain weight names (`canonical_state_dict`; the Accelerate hooks that save and load it)."""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from .arguments import ModelArguments, build_model_config
from .checkpoints import WEIGHTS_FILE


def build_model(model_args: ModelArguments, tokenizer):
    """The preset with the user's overrides, sized to the tokenizer, ids from the tokenizer."""
    from ..modeling import VanillaTransformerForConditionalGeneration

    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    config = build_model_config(model_args, vocab_size=len(tokenizer), special_ids=special)
    return VanillaTransformerForConditionalGeneration(config)


def canonical_state_dict(state_dict: dict, tied_keys) -> dict:
    """Model weights under their plain names (no DDP `module.` / torch.compile `_orig_mod.` prefix), each shared
    matrix once (the tied copies are restored on load)."""
    clean = {}
    for key, tensor in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        if key not in tied_keys:
            clean[key] = tensor
    return clean


def register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints keep the model under its plain names (a checkpoint folder loads with `from_pretrained` and
    `vanilla-transformer average`), and load into the unwrapped model. FSDP and DeepSpeed keep their own formats
    (for FSDP the trainer adds the gathered weights, see `Trainer.save`)."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return

    def save_hook(models, weights, output_dir):
        for index, model in enumerate(models):
            tied = set(getattr(accelerator.unwrap_model(model), "_tied_weights_keys", None) or {})
            weights[index] = canonical_state_dict(weights[index], tied)

    def load_hook(models, input_dir):
        for index, model in enumerate(models):
            name = WEIGHTS_FILE if index == 0 else WEIGHTS_FILE.replace(".", f"_{index}.")
            load_weights(accelerator.unwrap_model(model), Path(input_dir) / name)
        models.clear()  # loaded here; Accelerate skips them

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def load_weights(model, path: Path) -> None:
    """Load a canonical state dict in place; only tied copies may be absent."""
    from ..modeling.modeling_vanilla_transformer import split_fused_projections  # checkpoints of earlier versions

    put_weights(model, split_fused_projections(load_file(str(path))), str(path))


def put_weights(model, weights: dict, source: str) -> None:
    """Load `weights` (plain names, see `canonical_state_dict`) into `model` in place, on its device; only tied
    copies may be absent (RuntimeError naming `source` otherwise)."""
    device = next(model.parameters()).device
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"{source} does not fit the model: missing {sorted(set(missing) - tied)}, unexpected "
                           f"{sorted(unexpected)}")
