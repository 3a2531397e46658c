"""`vanilla-transformer gettext [--lang es] [--ensure-packages]`: prepare the software-message corpus (Debian's
gettext catalogs, `training.gettext_corpus`), print its size and its catalogs by split; or only make sure the
pinned Debian packages are installed (installing needs root). The library never installs anything: it names what
is missing."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time

from ..training.gettext_corpus import (DEFAULT_LOCALE_DIR, PACKAGES, SOURCE_LANG, MissingCatalogsError, catalog_table,
                                       default_cache_dir, find_catalogs, install_command, load_gettext,
                                       missing_catalogs_message)
from .parsing import CommandParser

logger = logging.getLogger(__name__)


def ensure_packages(lang: str, locale_dir: str) -> list:
    """Install the pinned packages when running as root and any is missing; the catalogs found for `lang`."""
    if len(find_catalogs(lang, locale_dir)) == sum(map(len, PACKAGES.values())):
        return find_catalogs(lang, locale_dir)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingCatalogsError(f"the gettext corpus needs the Debian packages {' '.join(sorted(PACKAGES))}; "
                                   f"install them with:  sudo {install_command()}")
    cmd = install_command().split()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env).returncode != 0:  # usually a stale package list: refresh it once and retry
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(cmd, env=env, check=False)
    found = find_catalogs(lang, locale_dir)
    if not found:
        raise MissingCatalogsError(missing_catalogs_message(lang, locale_dir))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="vanilla-transformer gettext",
        description="Prepare the software-message corpus: the English ↔ LANG pairs of the gettext catalogs of a "
                    "pinned list of Debian packages, split by whole catalogs (held-out programs); print its size and "
                    "catalog list. `train --dataset gettext` reads the same corpus.")
    parser.add_argument("--lang", default=SOURCE_LANG, help=f"the language paired with English (default "
                        f"{SOURCE_LANG}; a folder name under {DEFAULT_LOCALE_DIR})")
    parser.add_argument("--ensure-packages", action="store_true",
                        help="only check/install the pinned Debian packages (installing needs root)")
    parser.add_argument("--cache-dir", default=None, help=f"default: {default_cache_dir()}")
    parser.add_argument("--locale-dir", default=DEFAULT_LOCALE_DIR, help="where the catalogs are (<lang>/LC_MESSAGES)")
    args = parser.parse_args(argv)
    if args.lang == "en":
        parser.error("--lang: the messages are English already; give the other language (es, de, fr, ...)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.ensure_packages:
            found = ensure_packages(args.lang, args.locale_dir)
            print(f"{len(found)} catalogs for {args.lang} under {args.locale_dir}")
            return 0
        start = time.perf_counter()
        dataset = load_gettext(args.lang, "en", args.cache_dir, args.locale_dir)
    except MissingCatalogsError as error:
        print(f"vanilla-transformer gettext: error: {error}", file=sys.stderr)
        return 1
    table = catalog_table(dataset)
    for split in ("train", "validation", "test"):
        rows = [(name, count) for name, part, count in table if part == split]
        print(f"{split}: {len(dataset[split]):,} message pairs from {len(rows)} catalogs: "
              + ", ".join(f"{name} ({count:,})" for name, count in rows))
    total = sum(len(part) for part in dataset.values())
    print(f"{total:,} {args.lang}-en message pairs from {len(table)} catalogs; ready in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
