"""The software-message corpus (`--dataset gettext`, `vanilla-transformer gettext`): tiny gettext catalogs written
here with polib (nothing depends on this machine's locales for correctness), and one look at the machine's own
Spanish catalogs when they are installed."""

import collections
import json
from pathlib import Path

import polib
import pytest

from vanilla_transformer.cli import main as cli
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training import gettext_corpus
from vanilla_transformer.training.gettext_corpus import (CATALOGS, MissingCatalogsError, catalog_split, entry_pairs,
                                                         load_gettext, placeholder_rate,
                                                         placeholders)
from vanilla_transformer.training.trainer import train

# Pinned catalogs and the split their name hashes to (checked below): two train programs, one held out for each.
TRAIN_A, TRAIN_B, VALIDATION, TEST = "sed", "grep", "make", "coreutils"


def write_catalog(locale_dir: Path, lang: str, name: str, entries: list[polib.POEntry]) -> Path:
    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Language": lang,
                        "Plural-Forms": "nplurals=2; plural=(n != 1);"}
    for entry in entries:
        catalog.append(entry)
    folder = locale_dir / lang / "LC_MESSAGES"
    folder.mkdir(parents=True, exist_ok=True)
    catalog.save_as_mofile(str(folder / f"{name}.mo"))
    return folder / f"{name}.mo"


def E(msgid, msgstr="", **kwargs) -> polib.POEntry:  # noqa: N802
    return polib.POEntry(msgid=msgid, msgstr=msgstr, **kwargs)


@pytest.fixture
def locale_dir(tmp_path) -> Path:
    root = tmp_path / "locale"
    write_catalog(root, "es", TRAIN_A, [
        E("No such file or directory", "No existe el archivo o el directorio"),
        E("unterminated address regex", ""),  # untranslated
        E("Warning: %s", "Warning: %s"),  # identical to the English
        E("Open", "Abrir", msgctxt="menu"),  # one msgid, two contexts, two translations
        E("Open", "Abierto", msgctxt="state"),
        E("Copy {name} to %1$s\n", "Copiar {name} a %1$s\n"),  # placeholders and newline kept as they are
        polib.POEntry(msgid="%d file", msgid_plural="%d files", msgstr_plural={0: "%d archivo", 1: "%d archivos"}),
        E("Fuzzy message", "Mensaje difuso", flags=["fuzzy"]),
    ])
    write_catalog(root, "es", TRAIN_B, [
        E("No such file or directory", "No existe el archivo o el directorio"),  # a duplicate across catalogs
        E("invalid option -- '%c'", "opción inválida -- '%c'"),
    ])
    write_catalog(root, "es", VALIDATION, [
        E("Nothing to be done for '%s'.", "No se hace nada para '%s'."),
        E("invalid option -- '%c'", "opción inválida -- '%c'"),  # also in train: dropped from validation
    ])
    write_catalog(root, "es", TEST, [
        E("missing operand", "falta un operando"),
        E("No such file or directory", "No existe el fichero o el directorio"),  # English seen in train: dropped
        E("Nothing to be done for '%s'.", "No se hace nada para '%s'."),  # in validation: dropped from test
        E("write error", "error de escritura"),
        E("Try '%s --help'\nfor more information.\n", "Pruebe '%s --help'\npara más información.\n"),
    ])
    write_catalog(root, "de", TRAIN_A, [E("write error", "Schreibfehler")])
    write_catalog(root, "de", VALIDATION, [E("missing file", "fehlende Datei")])
    write_catalog(root, "de", TEST, [E("missing operand", "fehlender Operand")])
    return root


def pairs(split) -> list[tuple[str, str]]:
    return [(row["es"], row["en"]) for row in split["translation"]]


def test_the_chosen_catalogs_fall_in_the_splits_these_tests_assume():
    assert {TRAIN_A, TRAIN_B, VALIDATION, TEST} <= set(CATALOGS)
    assert [catalog_split(name) for name in (TRAIN_A, TRAIN_B, VALIDATION, TEST)] == \
        ["train", "train", "validation", "test"]
    assert catalog_split("psql-15") == catalog_split("psql-16")  # a new version keeps its split


def test_catalogs_are_read_filtered_and_split_by_whole_catalogs(locale_dir, tmp_path):
    corpus = load_gettext("es", "en", tmp_path / "cache", locale_dir)
    train_pairs = pairs(corpus["train"])
    assert sorted(train_pairs) == sorted([
        ("No existe el archivo o el directorio", "No such file or directory"),  # once, though in two catalogs
        ("Abrir", "Open"), ("Abierto", "Open"),
        ("Copiar {name} a %1$s\n", "Copy {name} to %1$s\n"),
        ("%d archivo", "%d file"), ("%d archivos", "%d files"),
        ("opción inválida -- '%c'", "invalid option -- '%c'"),
    ])
    assert pairs(corpus["validation"]) == [("No se hace nada para '%s'.", "Nothing to be done for '%s'.")]
    assert pairs(corpus["test"]) == [("Pruebe '%s --help'\npara más información.\n",
                                      "Try '%s --help'\nfor more information.\n"),
                                     ("falta un operando", "missing operand"), ("error de escritura", "write error")]
    ids = corpus["train"]["id"]
    assert "sed:menu\x04Open" in ids and "sed:state\x04Open" in ids and "sed:%d file#1" in ids
    assert set(corpus["test"]["catalog"]) == {TEST} and set(corpus["validation"]["catalog"]) == {VALIDATION}
    held_out = {text for split in ("validation", "test") for pair in pairs(corpus[split]) for text in pair}
    assert not held_out & {text for pair in train_pairs for text in pair}  # no test pair is also in train


def test_fuzzy_and_obsolete_entries_are_skipped():
    assert entry_pairs(E("Fuzzy message", "Mensaje difuso", flags=["fuzzy"])) == []
    assert entry_pairs(E("Old", "Viejo", obsolete=True)) == []
    assert entry_pairs(E("", "Content-Type: text/plain")) == []  # the header
    assert entry_pairs(E("Yes", "Sí")) == [("", "Yes", "Sí")]


def test_any_language_with_english_in_either_direction(locale_dir, tmp_path):
    corpus = load_gettext("en", "de", tmp_path / "cache", locale_dir)
    assert [row for row in corpus["test"]["translation"]] == [{"de": "fehlender Operand", "en": "missing operand"}]
    with pytest.raises(ValueError, match="English"):
        load_gettext("es", "de", tmp_path / "cache", locale_dir)
    (locale_dir / "de" / "LC_MESSAGES" / f"{VALIDATION}.mo").unlink()
    with pytest.raises(MissingCatalogsError, match="give no validation pairs"):
        load_gettext("de", "en", tmp_path / "cache", locale_dir)


def test_the_corpus_is_cached_by_the_catalogs_contents(locale_dir, tmp_path):
    first = load_gettext("es", "en", tmp_path / "cache", locale_dir)
    assert len(list((tmp_path / "cache").glob("gettext-es-en-*"))) == 1
    again = load_gettext("es", "en", tmp_path / "cache", locale_dir)
    assert pairs(again["train"]) == pairs(first["train"])
    write_catalog(locale_dir, "es", TRAIN_B, [E("write failed", "falló la escritura")])
    changed = load_gettext("es", "en", tmp_path / "cache", locale_dir)
    assert ("falló la escritura", "write failed") in pairs(changed["train"])
    assert len(list((tmp_path / "cache").glob("gettext-es-en-*"))) == 2


def test_missing_catalogs_are_one_clear_line(tmp_path, capsys):
    with pytest.raises(MissingCatalogsError) as error:
        load_gettext("es", "en", tmp_path / "cache", tmp_path / "no-locales")
    message = str(error.value)
    assert "\n" not in message and "no-locales" in message and "--ensure-packages" in message
    assert cli.main(["gettext", "--locale-dir", str(tmp_path / "no-locales"), "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no gettext catalogs for 'es'" in err


def test_the_command_prints_the_size_and_the_catalogs(locale_dir, tmp_path, capsys):
    assert cli.main(["gettext", "--locale-dir", str(locale_dir), "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    # the duplicate counts for grep, read first
    assert "train: 7 message pairs from 2 catalogs: grep (2), sed (5)" in out
    assert "validation: 1 message pairs from 1 catalogs: make (1)" in out
    assert "test: 3 message pairs from 1 catalogs: coreutils (3)" in out
    assert "11 es-en message pairs from 4 catalogs" in out


def test_train_dataset_gettext(locale_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gettext_corpus, "DEFAULT_LOCALE_DIR", str(locale_dir))
    common = ["--dataset", "gettext", "--cache_dir", str(tmp_path / "cache"), "--preset", "tiny", "--d_model", "32",
              "--layers", "1", "--heads", "2", "--ffn_dim", "64", "--vocab_size", "457", "--max_tokens", "300",
              "--warmup_steps", "2", "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2",
              "--report_to", "none", "--output_dir", str(tmp_path / "run")]
    data, model, args = parse_args(common)
    assert (data.source_lang, data.target_lang) == ("es", "en")
    summary = train(data, model, args)
    assert summary["data"]["dataset"] == "gettext" and summary["data"]["train_pairs"] == 7
    assert json.loads((tmp_path / "run" / "final" / "run_summary.json").read_text())["steps"] == 2
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert "trained from scratch on the Debian software messages" in card
    evaluate = ["evaluate", str(tmp_path / "run" / "final"), "--dataset", "gettext", "--cache_dir",
                str(tmp_path / "cache"), "--num_beams", "1", "--output"]
    # A message with line breaks is translated line by line, so a file of a hypothesis a line would misalign.
    with pytest.raises(SystemExit):
        cli.main(evaluate + [str(tmp_path / "test.txt")])
    assert "1 of the 3 sources hold line breaks" in capsys.readouterr().err
    assert not (tmp_path / "test.txt").exists()
    assert cli.main(evaluate + [str(tmp_path / "test.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["source"] for row in rows] == [es for es, en in pairs(load_gettext("es", "en", tmp_path / "cache")
                                                                      ["test"])]
    for row in rows:  # each line of a message is a line of its translation
        assert row["hypothesis"].count("\n") == row["source"].count("\n")
    with pytest.raises(SystemExit):
        parse_args(common + ["--source_lang", "es", "--target_lang", "de", "--overwrite_output_dir"])
    assert "--dataset gettext pairs English" in capsys.readouterr().err


MACHINE_CATALOG = Path(gettext_corpus.DEFAULT_LOCALE_DIR) / "es" / "LC_MESSAGES" / "coreutils.mo"


@pytest.mark.skipif(not MACHINE_CATALOG.is_file(),
                    reason=f"this machine has no Spanish gettext catalogs ({MACHINE_CATALOG} is missing; "
                           "`vanilla-transformer gettext --ensure-packages` as root installs them)")
def test_this_machines_spanish_catalogs(tmp_path):
    corpus = load_gettext("es", "en", tmp_path / "cache")
    sizes = {split: len(part) for split, part in corpus.items()}
    assert sizes["train"] > 1000 and sizes["validation"] > 50 and sizes["test"] > 50, sizes
    train_pairs = set(pairs(corpus["train"]))
    assert not train_pairs & set(pairs(corpus["test"]))
    assert set(corpus["test"]["catalog"]).isdisjoint(corpus["train"]["catalog"])
    for row in corpus["train"].select(range(200))["translation"]:
        assert row["es"] and row["en"] and row["es"] != row["en"]


def test_train_on_a_system_without_locales_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gettext_corpus, "DEFAULT_LOCALE_DIR", str(tmp_path / "no-locales"))
    status = cli.main(["train", "--dataset", "gettext", "--cache_dir", str(tmp_path / "cache"), "--preset", "tiny",
                       "--report_to", "none", "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if "no gettext catalogs for 'es'" in line]


def test_ensure_packages_without_root_names_the_packages(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    status = cli.main(["gettext", "--ensure-packages", "--locale-dir", str(tmp_path / "no-locales")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert "sudo apt-get install -y --no-install-recommends" in err and "coreutils" in err and "postgresql-15" in err


@pytest.mark.parametrize("message, expected", [
    ("cannot open %1$s: %2$s\n", ["%1$s", "%2$s", "\n"]),
    ("%s of %d files (%lu bytes) %-10.3lf %zu %*s", ["%s", "%d", "%lu", "%-10.3lf", "%zu", "%*s"]),
    ("100%% of {name} in ${HOME}: %(count)d {0}", ["%%", "{name}", "${HOME}", "%(count)d", "{0}"]),
    ("a 50 % discount, 2 {  } braces", []),  # prose: no conversion
])
def test_placeholders_are_the_format_conversions_and_line_breaks(message, expected):
    assert placeholders(message) == collections.Counter(expected)


def test_placeholder_rate_judges_only_messages_with_placeholders_in_any_order():
    sources = ["abrir %1$s en %2$s", "sin nada", "%d archivos\n", "%s y %s", "hola {name}"]
    translations = ["open %2$s in %1$s", "nothing", "%d files", "%s and", "hello {nombre}"]
    assert placeholder_rate(sources, translations) == (1, 4)
    with pytest.raises(ValueError, match="2 sources but 1 translations"):
        placeholder_rate(["a", "b"], ["a"])
