"""The `vanilla-transformer` command.

    vanilla-transformer train ...              train (see `vanilla-transformer train --help`)
    vanilla-transformer evaluate MODEL_DIR ... BLEU and chrF of a model on a test set
    vanilla-transformer average CKPT... --output DIR   average checkpoints (§6.1)
    vanilla-transformer translate MODEL_DIR "sentence" ...
    vanilla-transformer export MODEL_DIR OUT --format ctranslate2   export for a deployment engine
    vanilla-transformer convert-marian ...     import an OPUS-MT (Marian) checkpoint
    vanilla-transformer inspect ...            attention maps and other views of a model
    vanilla-transformer push ...               upload a model folder to the Hugging Face Hub

Every subcommand's module is imported only when it runs, so a missing optional piece gives a clear error instead
of breaking the whole command.
"""

from __future__ import annotations

import importlib
import sys

# subcommand: (module, function taking argv, one-line help)
COMMANDS = {
    "train": ("vanilla_transformer.training.train", "main", "train a model (Accelerate: CPU, GPUs, nodes, FSDP)"),
    "evaluate": ("vanilla_transformer.training.evaluate", "evaluate_main", "BLEU and chrF of a model on a test set"),
    "average": ("vanilla_transformer.training.checkpoints", "main", "average checkpoints into a model folder"),
    "translate": ("vanilla_transformer.training.evaluate", "translate_main", "translate sentences with a model"),
    "export": ("vanilla_transformer.training.ctranslate2_export", "main", "export a model for CTranslate2"),
    "convert-marian": ("vanilla_transformer.modeling.convert_marian", "cli", "import a Marian (OPUS-MT) checkpoint"),
    "inspect": ("vanilla_transformer.inspection.cli", "cli", "inspect a model (attention maps, ...)"),
    "push": ("vanilla_transformer.training.hub", "cli", "upload a model folder to the Hugging Face Hub"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    return ("usage: vanilla-transformer COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines)
            + "\n\n`vanilla-transformer COMMAND --help` describes each command.")


def load_command(name: str):
    """The function behind a subcommand; ImportError/AttributeError become a message naming what is missing."""
    module_name, function_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        raise SystemExit(f"vanilla-transformer {name}: cannot import {module_name} ({missing} missing: {error})")
    function = getattr(module, function_name, None)
    if function is None:
        raise SystemExit(f"vanilla-transformer {name}: {module_name} has no {function_name}()")
    return function


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vanilla-transformer: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    result = load_command(name)(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
