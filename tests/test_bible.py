"""The bundled Bible corpus: markup cleaning, verse alignment, chapter-disjoint splits, cache, packages.

Reads the SWORD modules of the Debian packages sword-text-sparv and sword-text-web (`make test` installs them).
"""

import re
import time

import pytest

from vanilla_transformer.cli import bible as bible_command
from vanilla_transformer.training import bible

# A lowercase letter directly followed by an uppercase one inside a word: the sign of two words glued together.
GLUED = re.compile(r"\w*[a-záéíóúñü][A-ZÁÉÍÓÚÑ]\w*")


def glued_words(rows):
    return [(r["id"], w) for r in rows for text in r["translation"].values() for w in GLUED.findall(text)]


@pytest.fixture(scope="module")
def ruth():
    return bible.extract_verses(books=["Ruth"])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bible-cache")
    start = time.perf_counter()
    dataset = bible.load_bible(cache_dir=cache)
    return dataset, cache, time.perf_counter() - start


def test_clean_osis_keeps_words_and_drops_markup():
    raw = (
        '<div type="x-milestone" subType="x-preverse" sID="pv1"/><title type="section">Heading</title>'
        '<w lemma="strong:H0430">God</w><note placement="foot"><reference type="annotateRef">1:1 </reference>'
        'The Hebrew word is “Elohim”.</note><w lemma="strong:H1254">created</w> his only born</q>'
        '<note placement="foot">Or, only begotten</note><q marker="" who="Jesus"><w>Son</w>, '
        '“<w>Don’t</w> go<note n="a">x</note>.” <l level="1" sID="l1"/>Line one<l eID="l1"/><lb/>Line two '
        '&amp; <speaker>Beloved</speaker> <milestone type="x-p"/>end.'
    )
    assert bible.clean_osis(raw) == "God created his only born Son, “Don’t go.” Line one Line two & end."


def test_clean_osis_keeps_canonical_psalm_titles_and_cuts_after_the_last_book():
    raw = (
        '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="a"/>Yahweh, hear me. '
        '<div canonical="true" eID="gen1" osisID="Rev" type="book"/> <div sID="g" type="glossary"/> Abaddon ...'
    )
    assert bible.clean_osis(raw) == "A Psalm by David. Yahweh, hear me."


def test_clean_osis_separates_words_the_module_glued_but_keeps_enclitics():
    raw = (
        '<w lemma="1">Rehum</w><transChange type="added">y</transChange><w lemma="2">Baana</w>, '
        '<w lemma="3">y díjo</w><transChange type="added">le</transChange><w lemma="4">Dios</w>: '
        '<w lemma="5">Estas</w><transChange type="added"><w lemma="6">son</w></transChange><w lemma="7">las</w>'
    )
    known = {"díjole"}  # written as one word elsewhere in the module
    assert bible.clean_osis(raw, known) == "Rehum y Baana, y díjole Dios: Estas son las"
    # Without evidence that the joined form is a word, the pieces stay apart rather than glued.
    assert bible.clean_osis(raw) == "Rehum y Baana, y díjo le Dios: Estas son las"


def test_one_book_is_aligned_and_clean(ruth):
    assert len(ruth) > 80  # Ruth has 85 verses
    ids = [r["id"] for r in ruth]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"Ruth\.[1-4]\.\d+", i) for i in ids)
    assert ids[0] == "Ruth.1.1"
    for row in ruth:
        es, en = row["translation"]["es"], row["translation"]["en"]
        assert es and en and es == es.strip() and en == en.strip()
        assert "<" not in es + en and ">" not in es + en and "  " not in es + en
    verse = {r["id"]: r["translation"] for r in ruth}["Ruth.1.16"]
    assert "Tu pueblo será mi pueblo" in verse["es"] and "Ruth" in verse["es"]
    assert "Your people will be my people" in verse["en"] and "Ruth" in verse["en"]
    assert glued_words(ruth) == []


def test_full_corpus_splits_are_chapter_disjoint_and_sized(full):
    dataset, _, seconds = full
    print(f"full Bible extraction + cache write: {seconds:.1f} s")
    assert set(dataset) == {"train", "validation", "test"}
    sizes = {name: len(split) for name, split in dataset.items()}
    assert 28_000 < sum(sizes.values()) < 31_500
    assert 500 <= sizes["validation"] <= 3000 and 500 <= sizes["test"] <= 3000
    chapters = {name: {i.rsplit(".", 1)[0] for i in split["id"]} for name, split in dataset.items()}
    assert not chapters["train"] & chapters["validation"]
    assert not chapters["train"] & chapters["test"]
    assert not chapters["validation"] & chapters["test"]
    for name, names in chapters.items():  # held-out chapters are whole and come from the hash rule
        assert all(bible.chapter_split(c) == name for c in names)
    all_ids = [i for split in dataset.values() for i in split["id"]]
    assert len(all_ids) == len(set(all_ids))


def test_full_corpus_text(full):
    dataset, _, _ = full
    rows = [row for split in dataset.values() for row in split]
    assert glued_words(rows) == []
    verses = {r["id"]: r["translation"] for r in rows}
    assert verses["Gen.1.1"]["es"].lower().startswith("en el principio crió dios los cielos y la tierra")
    assert verses["Gen.1.1"]["en"] == "In the beginning, God created the heavens and the earth."
    assert "de tal manera amó Dios al mundo" in verses["John.3.16"]["es"]
    assert "For God so loved the world" in verses["John.3.16"]["en"]
    assert "only born Son" in verses["John.3.16"]["en"]  # pysword's clean=True gives "bornSon"
    assert all(set(r["translation"]) == {"es", "en"} and all(r["translation"].values()) for r in rows)
    assert not any("<" in t or ">" in t for r in rows for t in r["translation"].values())
    # The Reina-Valera's subscriptions to the epistles ("Escrita de Roma á los Efesios...") are not verse text...
    assert verses["Eph.6.24"]["es"].endswith("en sinceridad. Amén.")
    # ...nor is the WEB glossary after Revelation 22:21.
    assert "Abaddon" not in verses["Rev.22.21"]["en"]
    # Known misnumbered chapter (the Spanish Job 40 runs five verses ahead of the English one) is left out.
    assert not any(i.startswith("Job.40.") for i in verses)


def test_second_load_comes_from_the_cache(full):
    dataset, cache, _ = full
    entries = list(cache.iterdir())
    assert [e.name for e in entries] == [f"es-en-{bible.CACHE_VERSION}"]  # no temporary directory left behind
    start = time.perf_counter()
    again = bible.load_bible(cache_dir=cache)
    assert time.perf_counter() - start < 5
    assert {k: len(v) for k, v in again.items()} == {k: len(v) for k, v in dataset.items()}
    assert again["test"][0] == dataset["test"][0]


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VANILLA_TRANSFORMER_CACHE", str(tmp_path))
    assert bible.default_cache_dir() == tmp_path / "bible"
    monkeypatch.delenv("VANILLA_TRANSFORMER_CACHE")
    assert bible.default_cache_dir().parts[-3:] == (".cache", "vanilla_transformer", "bible")


def test_split_rule_is_deterministic_and_holds_out_about_three_percent_of_chapters():
    chapters = [f"Book{b}.{c}" for b in range(40) for c in range(1, 31)]
    first = [bible.chapter_split(c) for c in chapters]
    assert first == [bible.chapter_split(c) for c in chapters]
    counts = {name: first.count(name) for name in ("train", "validation", "test")}
    assert 15 <= counts["validation"] <= 60 and 15 <= counts["test"] <= 60
    rows = [{"id": f"{c}.{v}", "translation": {}} for c in chapters[:200] for v in (1, 2)]
    split = bible.split_rows(rows)
    for name, part in split.items():
        assert all(bible.chapter_split(r["id"].rsplit(".", 1)[0]) == name for r in part)


def test_missing_packages_without_root_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(bible, "DEFAULT_SWORD_PATH", str(tmp_path))
    monkeypatch.delenv("SWORD_PATH", raising=False)
    monkeypatch.setattr(bible_command, "DEFAULT_SWORD_PATH", str(tmp_path))
    monkeypatch.setattr(bible_command.os, "geteuid", lambda: 1000)
    with pytest.raises(bible.MissingBibleError) as err:
        bible_command.ensure_packages()
    assert "apt-get install -y sword-text-sparv sword-text-web" in str(err.value)
    assert bible_command.main(["--ensure-packages"]) == 1
    with pytest.raises(bible.MissingBibleError, match="sword-text-sparv sword-text-web"):
        bible.extract_verses(books=["Ruth"])


def test_missing_packages_as_root_are_installed_with_apt(monkeypatch, tmp_path):
    monkeypatch.setattr(bible, "DEFAULT_SWORD_PATH", str(tmp_path))
    monkeypatch.delenv("SWORD_PATH", raising=False)
    monkeypatch.setattr(bible_command.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bible_command.shutil, "which", lambda name: "/usr/bin/" + name)
    commands = []

    class Done:
        def __init__(self, returncode):
            self.returncode = returncode

    def fake_run(cmd, **kwargs):
        commands.append(cmd[:2])
        if cmd[:2] == ["apt-get", "update"]:
            return Done(0)
        if len(commands) == 1:
            return Done(100)  # first install fails: no package lists yet
        (tmp_path / "mods.d").mkdir(exist_ok=True)  # the retry "installs" both modules
        for name in ("spaRV1909eb", "engWEB2015eb"):
            (tmp_path / "mods.d" / f"{name.lower()}.conf").write_text(f"[{name}]\nModDrv=zText\n")
        return Done(0)

    monkeypatch.setattr(bible_command.subprocess, "run", fake_run)
    found = bible_command.ensure_packages()
    assert commands == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]
    assert found == {"es": (str(tmp_path), "spaRV1909eb"), "en": (str(tmp_path), "engWEB2015eb")}


def test_ensure_packages_entry_point_succeeds_when_installed(capsys):
    assert bible_command.main(["--ensure-packages"]) == 0
    out = capsys.readouterr().out
    assert "es: SWORD module" in out and "en: SWORD module" in out


def test_loading_the_corpus_never_installs_packages(monkeypatch, tmp_path):
    """The library names the missing Debian packages; installing them is the command's job (`make sword`)."""
    monkeypatch.setattr(bible, "DEFAULT_SWORD_PATH", str(tmp_path))
    monkeypatch.delenv("SWORD_PATH", raising=False)
    ran = []
    monkeypatch.setattr(bible_command.subprocess, "run", lambda *args, **kwargs: ran.append(args))
    with pytest.raises(bible.MissingBibleError, match="apt-get install -y sword-text-sparv sword-text-web"):
        bible.load_bible(tmp_path / "cache")
    assert ran == [] and not (tmp_path / "cache").exists()
