"""A model folder's CTranslate2 export, converted once and kept in a cache (`serve --engine auto`).

The cache folder is named by a key: SHA-256 over the contents of the files the conversion reads (config, generation
config, weights, tokenizer), the CTranslate2 version (its model.bin format) and the converter's own source, so a
changed weight file, tokenizer or converter gives a new key and a restart with nothing changed finds its export.
The export is written into a temporary folder in the cache and renamed into place, so a key folder is complete or
absent; two servers converting the same model at once both succeed and one export stays.

    folder, converted = cached_export("runs/demo/final")   # ~/.cache/vanilla_transformer/ctranslate2/<key>

Where: `--cache_dir`, else `$VANILLA_TRANSFORMER_CACHE/ctranslate2`, else `~/.cache/vanilla_transformer/ctranslate2`.
The export keeps float32 weights: the same tokens as `generate` with `early_stopping=True` (ctranslate2_runtime).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..base.files import content_sha256

# The files of a model folder the conversion reads (any other, such as README.md or run_summary.json, may change
# without changing the export).
CONVERTED_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "target_vocab.json", "source.spm", "target.spm")


def default_cache_dir() -> Path:
    """``$VANILLA_TRANSFORMER_CACHE/ctranslate2``, else ``~/.cache/vanilla_transformer/ctranslate2``."""
    root = os.environ.get("VANILLA_TRANSFORMER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "vanilla_transformer") / "ctranslate2"


def converted_files(model_dir: str | os.PathLike) -> list[Path]:
    """The files of `model_dir` that the conversion reads: those of `CONVERTED_FILES` and the weight shards."""
    folder = Path(model_dir)
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    return [folder / name for name in CONVERTED_FILES if (folder / name).is_file()] + shards


def cache_key(model_dir: str | os.PathLike) -> str:
    """The cache folder's name for `model_dir` (see the module docstring): 32 hex digits."""
    import ctranslate2

    from . import ctranslate2_convert

    digest = hashlib.sha256(f"ctranslate2 {ctranslate2.__version__}\0".encode())
    digest.update(content_sha256(ctranslate2_convert.__file__).encode())
    for path in converted_files(model_dir):
        digest.update(f"\0{path.name}\0{content_sha256(path)}".encode())
    return digest.hexdigest()[:32]


def is_complete(folder: Path) -> bool:
    from .ctranslate2_runtime import check_export

    try:
        check_export(folder)
    except ValueError:
        return False
    return True


def load_checked(model_dir: str | os.PathLike):
    """(model, tokenizer) of a model folder; ValueError when the tokenizer does not belong to the model, as every
    command checks (before anything is written)."""
    from ..translation.folders import tokenizer_mismatch
    from .ctranslate2_convert import load_for_export

    model, tokenizer = load_for_export(model_dir)
    mismatch = tokenizer_mismatch(tokenizer, model.config)
    if mismatch:
        raise ValueError(f"{model_dir}: the tokenizer does not belong to the model ({mismatch})")
    return model, tokenizer


def cached_export(model_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """(the export's folder, whether it was converted now); the conversion's own error when it cannot convert."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / cache_key(model_dir)
    if is_complete(target):
        return target, False
    if target.exists():
        raise ValueError(f"the cache folder {target} is incomplete or damaged (not written by this package's "
                         "conversion, which renames complete folders into place): delete it")
    from .ctranslate2_convert import check_exportable, export_ctranslate2

    model, tokenizer = load_checked(model_dir)
    check_exportable(model.config)  # before the cache is touched
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
    try:
        export_ctranslate2(model, staging / "export", tokenizer=tokenizer)
        try:
            os.rename(staging / "export", target)
        except OSError:
            if not is_complete(target):  # not another server's export of the same key, finished meanwhile
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True
