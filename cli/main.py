"""The `vanilla-transformer` command: the dispatcher, and `run_command`, which gives every command its one-line errors
and exit statuses. Each command's parser and `main(argv)` is a module of this package (`cli/train.py`, ...); the
work they call lives in the layer it belongs to (training, deployment, inspection).

    vanilla-transformer prepare ...            tokenizer and tokenized data ahead of time (cached for `train`)
    vanilla-transformer train ...              train (see `vanilla-transformer train --help`)
    vanilla-transformer evaluate MODEL_DIR ... BLEU and chrF of a model on a test set
    vanilla-transformer average CKPT... --output DIR   average checkpoints (§6.1)
    vanilla-transformer translate MODEL_DIR "sentence" ...
    vanilla-transformer export MODEL_DIR OUT --format ctranslate2   export for a deployment engine
    vanilla-transformer convert-marian ...     import an OPUS-MT (Marian) checkpoint
    vanilla-transformer inspect ...            attention maps and other views of a model
    vanilla-transformer push ...               upload a model folder to the Hugging Face Hub
    vanilla-transformer serve MODEL_DIR        serve a model over HTTP (see deployment/server)

Every subcommand's module is imported only when it runs, so a missing optional piece gives a clear error instead
of breaking the whole command.

Errors: a mistake in the arguments exits with status 2, a failure while running (a bad data file, a missing model,
a full disk) with status 1; either way one line `vanilla-transformer COMMAND: error: ...` on stderr names what is
wrong. `--debug` (anywhere on the command line) or VANILLA_TRANSFORMER_DEBUG=1 shows the traceback instead.
`run_command` does this for every entry point (this dispatcher and each module's `python -m`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable

from ..base.errors import UsageError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "VANILLA_TRANSFORMER_DEBUG"

# subcommand: (module of this package, one-line help); each module has `main(argv) -> int`
COMMANDS = {
    "prepare": ("prepare", "train the tokenizer and tokenize the data ahead of time, into the cache `train` reads"),
    "train": ("train", "train a model (Accelerate: CPU, GPUs, nodes, FSDP)"),
    "evaluate": ("evaluate", "BLEU and chrF of a model on a test set"),
    "average": ("average", "average checkpoints into a model folder"),
    "translate": ("translate", "translate sentences with a model"),
    "export": ("export", "export a model for CTranslate2"),
    "convert-marian": ("convert_marian", "import a Marian (OPUS-MT) checkpoint"),
    "inspect": ("inspect", "inspect a model (attention maps, ...)"),
    "push": ("push", "upload a model folder to the Hugging Face Hub"),
    "serve": ("serve", "serve a model over HTTP (batched, LibreTranslate-compatible)"),
    "gettext": ("gettext_corpus", "prepare the software-message corpus (Debian's gettext catalogs); list it"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return ("usage: vanilla-transformer COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines)
            + "\n\n`vanilla-transformer COMMAND --help` describes each command. Errors print one line and exit with "
            "status 2 (bad arguments) or 1 (a failure while running); --debug (or VANILLA_TRANSFORMER_DEBUG=1) "
            "shows the traceback.")


def load_command(name: str):
    """The function behind a subcommand; ImportError/AttributeError become a message naming what is missing."""
    module_name, function_name = f"{__package__}.{COMMANDS[name][0]}", "main"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        raise SystemExit(f"vanilla-transformer {name}: cannot import {module_name} ({missing} missing: {error})")
    function = getattr(module, function_name, None)
    if function is None:
        raise SystemExit(f"vanilla-transformer {name}: {module_name} has no {function_name}()")
    return function


def expected_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause: bad values and files (ValueError), the file system and the network (OSError, which
    includes the Hub's HTTP errors), torch's and safetensors' complaints about a file or a device (RuntimeError,
    SafetensorError). Anything else is a bug and keeps its traceback."""
    errors: list[type[BaseException]] = [ValueError, OSError, RuntimeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


def one_line(error: BaseException) -> str:
    """The exception's message on one line (`filename: reason` for the file system's errors)."""
    if isinstance(error, OSError) and error.filename and error.strerror and type(error).__str__ is OSError.__str__:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def run_command(name: str, function: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run `function(argv)` (argv without `--debug`) and turn an expected error into one line and its exit status:
    2 for a `UsageError`, 1 otherwise. With `--debug` or VANILLA_TRANSFORMER_DEBUG=1 the error propagates with its
    traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return int(function(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"vanilla-transformer {name}: interrupted", file=sys.stderr)
        return 130
    except expected_errors() as error:
        if debug:
            raise
        print(f"vanilla-transformer {name}: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if DEBUG_FLAG in argv[:1]:  # `vanilla-transformer --debug COMMAND ...`
        argv = argv[1:] + [DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vanilla-transformer: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:  # importing a command (torch, transformers) takes seconds: Ctrl-C then is no traceback either
        function = load_command(name)
    except KeyboardInterrupt:
        if debug_requested(rest):
            raise
        print(f"vanilla-transformer {name}: interrupted", file=sys.stderr)
        return 130
    return run_command(name, function, rest)


if __name__ == "__main__":
    raise SystemExit(main())
