"""`python -m vanilla_transformer.training.demo` (what `make demo` runs): the documented module path of the demo, kept
as a thin shim; the demo itself is `vanilla_transformer.cli.demo`."""

if __name__ == "__main__":
    from ..cli.demo import main
    from ..cli.main import run_command

    raise SystemExit(run_command("demo", main))
