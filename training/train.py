"""`python -m vanilla_transformer.training.train ...` and `accelerate launch -m vanilla_transformer.training.train ...`:
the documented module path of `vanilla-transformer train`, kept as a thin shim. The trainer is `trainer.py`, the
command's parser `vanilla_transformer.cli.train`; `from vanilla_transformer.training.train import train` still works.
"""

from .trainer import train  # noqa: F401

if __name__ == "__main__":
    from ..cli.main import run_command
    from ..cli.train import main

    raise SystemExit(run_command("train", main))
