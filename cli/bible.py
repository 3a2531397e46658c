"""`python -m vanilla_transformer.cli.bible [--ensure-packages]`: prepare the bundled Spanish–English Bible corpus,
or only make sure its Debian packages are installed (what `make sword` runs; installing needs root). The library
(`training.bible`) never installs anything: it names the packages it misses."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time

from ..training.bible import (TEXTS, DEFAULT_SWORD_PATH, MissingBibleError, default_cache_dir, find_modules,
                              install_command, load_bible)
from .parsing import CommandParser

logger = logging.getLogger(__name__)


def ensure_packages() -> dict[str, tuple[str, str]]:
    """Make sure both SWORD modules are present; install the Debian packages when running as root.

    Returns what `find_modules` returns. Raises `MissingBibleError` saying what to install otherwise.
    """
    found = find_modules()
    if found:
        return found
    packages = " ".join(t.package for t in TEXTS)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingBibleError(
            f"The Bible corpus needs the Debian packages {packages} (SWORD modules under {DEFAULT_SWORD_PATH}). "
            f"Install them with:  sudo {install_command()}"
        )
    logger.info("installing %s", packages)
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages.split()]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env).returncode != 0:
        # Usually a stale or empty package list (fresh containers): refresh it once and retry.
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(cmd, env=env, check=False)
    found = find_modules()
    if not found:
        raise MissingBibleError(f"Installing {packages} failed; try by hand:  sudo {install_command()}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m vanilla_transformer.cli.bible",
        description="Prepare the Spanish-English Bible corpus (or only make sure its Debian packages are installed).",
    )
    parser.add_argument("--ensure-packages", action="store_true", help="only check/install the SWORD packages")
    parser.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.ensure_packages:
            for lang, (root, module) in ensure_packages().items():
                print(f"{lang}: SWORD module {module} in {root}")
            return 0
        start = time.perf_counter()
        dataset = load_bible(args.cache_dir)
    except MissingBibleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, split in dataset.items():
        print(f"{name}: {len(split)} verse pairs")
    print(f"ready in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
