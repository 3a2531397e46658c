"""A second real corpus: software messages, from the gettext catalogs Debian installs with its programs.

Every Debian package with translated messages ships them as compiled catalogs,
``/usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo``; each entry pairs an English message (``msgid``) with its
translation (``msgstr``). The corpus is made of the catalogs of a pinned list of packages (`PACKAGES`; `vanilla-
transformer gettext --ensure-packages` installs them as root), so that every machine with the same Debian release
gets the same corpus; catalogs of other packages on the machine are not read.

Rules (`catalog_pairs`), catalogs read with `polib` (a maintained gettext library, not a parser of our own):

* the header (empty msgid), untranslated entries and fuzzy ones are skipped (msgfmt leaves fuzzy entries out of a
  .mo anyway; a .po given by hand may hold them), and so is a translation identical to its English message;
* contexts are kept apart: the same msgid under two ``msgctxt`` is two entries, each with its own id
  (``catalog:context\\x04msgid``);
* plural forms are kept apart: ``msgid`` ↔ ``msgstr[0]`` and ``msgid_plural`` ↔ ``msgstr[1]`` (id suffix ``#1``);
* the text is kept as it is (placeholders ``%s``, ``%1$s``, ``{name}``, ``\\n`` included: a software translator
  must keep them).

Splits are by **whole catalogs** (held-out programs, as the Bible holds out whole chapters): a catalog goes to
validation or test by a hash of its name without a version suffix (``psql-15`` → ``psql``; `catalog_split`), so a
new PostgreSQL version does not move it. Pairs are deduplicated: once within the corpus, and a held-out pair whose
English or translated text occurs in train is dropped (no test pair is also a training pair; validation's are also
dropped from test). The prepared `DatasetDict` (`id`, `catalog`, `translation`) is cached with ``save_to_disk``,
keyed by the catalogs' names and contents.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..base.files import save_dataset_atomically

logger = logging.getLogger(__name__)

ENGLISH = "en"
SOURCE_LANG = "es"  # es → en by default, like the Bible
TARGET_LANG = ENGLISH
DEFAULT_LOCALE_DIR = "/usr/share/locale"
CACHE_VERSION = "v1"  # bump when the reading, filtering or split rules change

# The Debian (bookworm) packages whose catalogs form the corpus, and the catalogs (gettext domains) each installs.
PACKAGES = {
    "adduser": ("adduser",),
    "appstream": ("appstream",),
    "apt": ("apt",),
    "at-spi2-common": ("at-spi2-core",),
    "bash": ("bash",),
    "binutils-common": ("bfd", "binutils", "gas", "gold", "gprof", "ld", "opcodes"),
    "coreutils": ("coreutils",),
    "diffutils": ("diffutils",),
    "dpkg": ("dpkg",),
    "findutils": ("findutils",),
    "gettext": ("gettext-tools",),
    "gettext-base": ("gettext-runtime",),
    "git": ("git",),
    "gnupg-l10n": ("gnupg2",),
    "grep": ("grep",),
    "gsettings-desktop-schemas": ("gsettings-desktop-schemas",),
    "iso-codes": ("iso_15924", "iso_3166", "iso_3166-1", "iso_3166-2", "iso_3166-3", "iso_3166_2", "iso_4217",
                  "iso_639", "iso_639-2", "iso_639-3", "iso_639_3"),
    "libapt-pkg6.0": ("libapt-pkg6.0",),
    "libavahi-common-data": ("avahi",),
    "libc-l10n": ("libc",),
    "libdpkg-perl": ("dpkg-dev",),
    "libelf1": ("elfutils",),
    "libgdk-pixbuf2.0-common": ("gdk-pixbuf",),
    "libglib2.0-data": ("glib20",),
    "libgnutls30": ("gnutls30",),
    "libgstreamer1.0-0": ("gstreamer-1.0",),
    "libgtk2.0-common": ("gtk20", "gtk20-properties"),
    "libidn2-0": ("libidn2",),
    "libpam-runtime": ("Linux-PAM",),
    "libpq5": ("libpq5-15",),
    "login": ("shadow",),
    "make": ("make",),
    "man-db": ("man-db", "man-db-gnulib"),
    "packagekit": ("PackageKit",),
    "postgresql-15": ("initdb-15", "pg_archivecleanup-15", "pg_checksums-15", "pg_controldata-15", "pg_ctl-15",
                      "pg_resetwal-15", "pg_rewind-15", "pg_test_fsync-15", "pg_test_timing-15", "pg_upgrade-15",
                      "pg_waldump-15", "plpgsql-15", "postgres-15"),
    "postgresql-client-15": ("pg_amcheck-15", "pg_basebackup-15", "pg_config-15", "pg_dump-15", "pg_verifybackup-15",
                             "pgscripts-15", "psql-15"),
    "procps": ("procps-ng",),
    "psmisc": ("psmisc",),
    "python-apt-common": ("python-apt",),
    "sed": ("sed",),
    "shared-mime-info": ("shared-mime-info",),
    "software-properties-common": ("software-properties",),
    "systemd": ("systemd",),
    "tar": ("tar",),
    "wget": ("wget", "wget-gnulib"),
    "xdg-user-dirs": ("xdg-user-dirs",),
    "xkb-data": ("xkeyboard-config",),
    "xz-utils": ("xz",),
}
CATALOGS = tuple(sorted(name for names in PACKAGES.values() for name in names))

# Shares of catalogs held out (by a hash of the catalog's name), and the salt of that hash (pinned: changing it
# changes the corpus' splits).
VALIDATION_PERCENT = 8
TEST_PERCENT = 8
SPLIT_SALT = "gettext-split-1"


class MissingCatalogsError(RuntimeError):
    """The catalogs are not on this machine (a system without locales, or without the packages)."""


@dataclass(frozen=True)
class Catalog:
    name: str  # gettext domain, e.g. "coreutils"
    path: Path
    split: str


def install_command() -> str:
    return "apt-get install -y --no-install-recommends " + " ".join(sorted(PACKAGES))


def base_name(catalog: str) -> str:
    """The catalog's name without a version suffix: ``psql-15`` → ``psql``, ``gstreamer-1.0`` → ``gstreamer``."""
    return re.sub(r"-[0-9][0-9.]*$", "", catalog)


def catalog_split(catalog: str) -> str:
    """``"train"``, ``"validation"`` or ``"test"`` for a catalog, by a stable hash of its base name."""
    bucket = int(hashlib.sha256(f"{SPLIT_SALT}:{base_name(catalog)}".encode()).hexdigest(), 16) % 100
    if bucket < VALIDATION_PERCENT:
        return "validation"
    if bucket < VALIDATION_PERCENT + TEST_PERCENT:
        return "test"
    return "train"


def foreign_language(source_lang: str, target_lang: str) -> str:
    """The non-English side of the pair (msgid is English); ValueError when neither or both are English."""
    if (source_lang == ENGLISH) == (target_lang == ENGLISH):
        raise ValueError(f"--dataset gettext pairs English (the messages' msgid) with another language; got "
                         f"--source_lang {source_lang} --target_lang {target_lang}")
    return target_lang if source_lang == ENGLISH else source_lang


def find_catalogs(lang: str, locale_dir: str | os.PathLike = DEFAULT_LOCALE_DIR,
                  names: tuple[str, ...] = CATALOGS) -> list[Catalog]:
    """The catalogs of `names` present under `<locale_dir>/<lang>/LC_MESSAGES`, sorted by name, with their split."""
    folder = Path(locale_dir) / lang / "LC_MESSAGES"
    return [Catalog(name, folder / f"{name}.mo", catalog_split(name)) for name in sorted(names)
            if (folder / f"{name}.mo").is_file()]


def missing_catalogs_message(lang: str, locale_dir) -> str:
    excludes = ""
    for config in sorted(Path("/etc/dpkg/dpkg.cfg.d").glob("*")) if Path("/etc/dpkg/dpkg.cfg.d").is_dir() else []:
        try:
            if "/usr/share/locale" in config.read_text(errors="replace"):
                excludes = f" (note: {config} tells dpkg not to install /usr/share/locale: remove that line first)"
        except OSError:
            pass
    return (f"no gettext catalogs for {lang!r} under {Path(locale_dir) / lang / 'LC_MESSAGES'}: the corpus reads the "
            f"catalogs of {len(PACKAGES)} Debian packages; install them with `sudo vanilla-transformer gettext "
            f"--ensure-packages` (or: sudo {install_command()}){excludes}")


def entry_pairs(entry) -> list[tuple[str, str, str]]:
    """(id suffix, English, translation) of one polib entry; none for the header, an untranslated, fuzzy or
    obsolete entry; a form whose translation is empty or identical to the English is left out."""
    if not entry.msgid or getattr(entry, "obsolete", False) or "fuzzy" in (getattr(entry, "flags", None) or []):
        return []
    if entry.msgid_plural:
        forms = entry.msgstr_plural or {}
        candidates = [("", entry.msgid, forms.get(0, "")), ("#1", entry.msgid_plural, forms.get(1, ""))]
    else:
        candidates = [("", entry.msgid, entry.msgstr)]
    return [(suffix, english, translated) for suffix, english, translated in candidates
            if translated and translated.strip() and translated != english]


def catalog_pairs(path: str | os.PathLike, name: str, lang: str) -> list[dict]:
    """The rows of one catalog (a .mo file, or a .po): {"id", "catalog", "translation": {lang, "en"}}."""
    import polib

    path = Path(path)
    catalog = polib.pofile(str(path)) if path.suffix == ".po" else polib.mofile(str(path))
    rows = []
    for entry in catalog:
        context = f"{entry.msgctxt}\x04" if entry.msgctxt else ""
        for suffix, english, translated in entry_pairs(entry):
            rows.append({"id": f"{name}:{context}{entry.msgid}{suffix}", "catalog": name,
                         "translation": {lang: translated, ENGLISH: english}})
    return rows


def split_rows(rows_by_catalog: dict[str, list[dict]], splits_of: dict[str, str], lang: str) -> dict[str, list]:
    """Train / validation / test rows: whole catalogs, duplicates removed, held-out pairs seen in train dropped."""
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    seen_pairs: set[tuple[str, str]] = set()
    seen_texts: dict[str, set[str]] = {"train": set(), "validation": set()}
    for split in ("train", "validation", "test"):  # train first: it decides what the held-out splits may not hold
        for name in sorted(rows_by_catalog):
            if splits_of[name] != split:
                continue
            for row in rows_by_catalog[name]:
                english, translated = row["translation"][ENGLISH], row["translation"][lang]
                if (english, translated) in seen_pairs:
                    continue
                earlier = [seen_texts[s] for s in ("train", "validation")[: ("train", "validation", "test")
                                                                           .index(split)]]
                if any(english in texts or translated in texts for texts in earlier):
                    continue
                seen_pairs.add((english, translated))
                if split in seen_texts:
                    seen_texts[split].update((english, translated))
                splits[split].append(row)
    return splits


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corpus_key(lang: str, catalogs: list[Catalog]) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}:{SPLIT_SALT}:{lang}".encode())
    for catalog in catalogs:
        digest.update(f"\0{catalog.name}\0{file_sha256(catalog.path)}".encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$VANILLA_TRANSFORMER_CACHE/gettext``, else ``~/.cache/vanilla_transformer/gettext``."""
    root = os.environ.get("VANILLA_TRANSFORMER_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "vanilla_transformer") / "gettext"


def build_dataset(splits: dict[str, list[dict]], lang: str):
    from datasets import Dataset, DatasetDict, Features, Translation, Value

    features = Features({"id": Value("string"), "catalog": Value("string"),
                         "translation": Translation(languages=sorted([lang, ENGLISH]))})
    return DatasetDict({name: Dataset.from_dict({"id": [r["id"] for r in rows],
                                                 "catalog": [r["catalog"] for r in rows],
                                                 "translation": [r["translation"] for r in rows]},
                                                features=features)
                        for name, rows in splits.items()})


def load_gettext(source_lang: str = SOURCE_LANG, target_lang: str = TARGET_LANG,
                 cache_dir: str | os.PathLike | None = None, locale_dir: str | os.PathLike | None = None,
                 names: tuple[str, ...] = CATALOGS):
    """The software-message corpus of the pair (one side English) as a `DatasetDict` (train / validation / test),
    prepared once and cached; `MissingCatalogsError` (one line) when this machine has none of the catalogs."""
    from datasets import load_from_disk

    lang = foreign_language(source_lang, target_lang)
    locale_dir = locale_dir or DEFAULT_LOCALE_DIR
    catalogs = find_catalogs(lang, locale_dir, names)
    if not catalogs:
        raise MissingCatalogsError(missing_catalogs_message(lang, locale_dir))
    missing = sorted(set(names) - {c.name for c in catalogs})
    if missing and names == CATALOGS:
        logger.warning("%d of the %d pinned catalogs are missing for %r (%s%s): the corpus differs from the reference "
                       "one; `vanilla-transformer gettext --ensure-packages` installs the packages", len(missing),
                       len(names), lang, ", ".join(missing[:8]), ", ..." if len(missing) > 8 else "")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"gettext-{lang}-{ENGLISH}-{corpus_key(lang, catalogs)}"
    if (target / "dataset_dict.json").exists():
        return load_from_disk(str(target))
    start = time.perf_counter()
    rows = {catalog.name: catalog_pairs(catalog.path, catalog.name, lang) for catalog in catalogs}
    splits = split_rows(rows, {c.name: c.split for c in catalogs}, lang)
    empty = [split for split, part in splits.items() if not part]
    if empty:
        raise MissingCatalogsError(
            f"the {len(catalogs)} gettext catalogs for {lang!r} under {locale_dir} give no {' and no '.join(empty)} "
            f"pairs (splits are whole catalogs: {', '.join(f'{c.name} → {c.split}' for c in catalogs[:12])}"
            f"{', ...' if len(catalogs) > 12 else ''}); install more of the pinned packages (`vanilla-transformer "
            "gettext --ensure-packages`)")
    dataset = build_dataset(splits, lang)
    save_dataset_atomically(dataset, target)
    logger.info("gettext corpus (%s-%s, %d catalogs) prepared in %.1f s and cached at %s", lang, ENGLISH,
                len(catalogs), time.perf_counter() - start, target)
    return load_from_disk(str(target))


def catalog_table(dataset) -> list[tuple[str, str, int]]:
    """(catalog, split, pairs) of a loaded corpus, by split then name."""
    counts = []
    for split in ("train", "validation", "test"):
        if split in dataset:
            counted = collections.Counter(list(dataset[split]["catalog"]))
            counts += sorted((name, split, count) for name, count in counted.items())
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# Placeholders: what a software translation must carry over unchanged
# ---------------------------------------------------------------------------------------------------------------------

# The placeholders of the formats the catalogs use: C's printf conversions with their flags, width, precision, length
# and positional `%1$s` (`%%` is a literal percent sign, kept as one too), Python's `%(name)s` and `{name}` / `{0}`,
# shell's `${var}`, and line breaks: the conversions gettext's `msgfmt --check-format` checks in c-format and
# python-format strings, written down once here for a metric; nothing is parsed with it. (The space flag, `% d`, is
# left out: in prose "50 % off" would read as a conversion.)
PLACEHOLDER = re.compile(
    r"%(?:\d+\$|\([A-Za-z_][A-Za-z0-9_]*\))?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?"
    r"(?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcspnr%]"
    r"|\$\{[A-Za-z_][A-Za-z0-9_]*\}"
    r"|\{[A-Za-z_0-9][A-Za-z0-9_.]*\}"
    r"|\n"
)


def placeholders(text: str) -> collections.Counter:
    """The placeholders of `text`, counted (order is free: a translation may move `%1$s` and `%2$s`)."""
    return collections.Counter(PLACEHOLDER.findall(text))


def placeholder_rate(sources: list[str], translations: list[str]) -> tuple[int, int]:
    """(kept, messages): of the `messages` sources holding at least one placeholder, how many translations hold
    exactly the same ones, each as often."""
    if len(sources) != len(translations):
        raise ValueError(f"{len(sources)} sources but {len(translations)} translations")
    judged = [(placeholders(source), translation) for source, translation in zip(sources, translations)]
    judged = [(wanted, translation) for wanted, translation in judged if wanted]
    return sum(placeholders(translation) == wanted for wanted, translation in judged), len(judged)
