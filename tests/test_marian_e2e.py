"""A converted OPUS-MT model with its SentencePiece tokenizer (separate source and target models, the slow
`MarianTokenizer`), fine-tuned and then taken through every later command: `evaluate` (its hypotheses are
`translate`'s), `export --format ctranslate2` (the tokenizer round trip, greedy outputs equal to the model
folder's) and `serve` (the /translate answers are the offline translations).

A tiny random MarianMTModel and SentencePiece models trained here (tests/support/marian.py); nothing is downloaded."""

import json
from pathlib import Path

import pytest
import sacrebleu

import vanilla_transformer.modeling  # noqa: F401  (registers the Auto classes)
from support.commands import command
from support.marian import converted_marian
from support.serving import Server
from support.training import write_corpus
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.deployment.engines import load_engine
from vanilla_transformer.training.trainer import train
from vanilla_transformer.translation import DecodingOptions, translate

# MarianTokenizer recommends sacremoses (punctuation normalisation), which the tests do not need.
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

GREEDY = DecodingOptions(num_beams=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def tuned(corpus, tmp_path_factory) -> Path:
    """The converted tiny Marian model fine-tuned for 2 updates: its final/ folder."""
    root = tmp_path_factory.mktemp("marian")
    start = converted_marian(root)
    output_dir = root / "tuned"
    train(*parse_args(["--train_file", str(corpus / "train.tsv"), "--validation_file", str(corpus / "valid.tsv"),
                       "--source_lang", "es", "--target_lang", "en", "--max_tokens", "300", "--eval_batch_size", "16",
                       "--report_to", "none", "--output_dir", str(output_dir), "--init_from", str(start),
                       "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--eval_samples", "4",
                       "--learning_rate", "1e-4", "--warmup_steps", "1"]))
    final = output_dir / "final"
    for name in ("source.spm", "target.spm", "vocab.json"):  # the starting model's tokenizer, byte for byte
        assert (final / name).read_bytes() == (start / name).read_bytes(), name
    return final


def pairs_of(corpus: Path) -> tuple[list[str], list[str]]:
    """The sources and references of the corpus's test split."""
    lines = (corpus / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sources, references = zip(*(line.split("\t") for line in lines))
    return list(sources), list(references)


def test_evaluate_writes_the_hypotheses_that_translate_gives(tuned, corpus, tmp_path, capsys):
    sources, references = pairs_of(corpus)
    hypotheses_file = tmp_path / "hypotheses.txt"
    status, out, err = command(capsys, "evaluate", tuned, "--file", corpus / "test.tsv", "--source_lang", "es",
                               "--target_lang", "en", "--output", hypotheses_file, "--device", "cpu", "--json")
    assert status == 0, err
    scores = json.loads(out)
    hypotheses = hypotheses_file.read_text(encoding="utf-8").splitlines()
    assert scores["sentences"] == len(sources) == len(hypotheses)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)

    status, out, err = command(capsys, "translate", tuned, "--device", "cpu", *sources)
    assert status == 0, err
    assert out.splitlines() == hypotheses
    assert translate(load_engine(str(tuned), device="cpu"), sources) == hypotheses
    assert len(set(hypotheses)) > 1  # the translations depend on the source: the comparisons mean something


def test_the_ctranslate2_export_keeps_the_tokenizer_and_the_translations(tuned, corpus, tmp_path, capsys):
    from transformers import AutoTokenizer

    exported = tmp_path / "ct2"
    status, _, err = command(capsys, "export", tuned, exported, "--format", "ctranslate2")
    assert status == 0, err
    ours, theirs = AutoTokenizer.from_pretrained(tuned), AutoTokenizer.from_pretrained(exported / "tokenizer")
    assert type(theirs).__name__ == "MarianTokenizer"
    sources, references = pairs_of(corpus)
    assert theirs(sources, text_target=references)["input_ids"] == ours(sources, text_target=references)["input_ids"]
    assert theirs(sources, text_target=references)["labels"] == ours(sources, text_target=references)["labels"]
    labels = ours(text_target=references)["input_ids"]
    assert theirs.batch_decode(labels, skip_special_tokens=True) == references  # the target model decodes
    assert ours.batch_decode(labels, skip_special_tokens=True) == references

    # the exported vocabulary is the model's, id for id: float32 greedy search gives the same translations
    assert translate(load_engine(str(exported), "ctranslate2", "cpu"), sources, GREEDY) == \
        translate(load_engine(str(tuned), device="cpu"), sources, GREEDY)


def test_the_server_answers_the_offline_translations(tuned, corpus):
    sources, _ = pairs_of(corpus)
    expected = translate(load_engine(str(tuned), device="cpu"), sources)
    server = Server(tuned, "--max_wait_ms", "20", "--device", "cpu")
    try:
        status, answer, _ = server.call("/translate", {"q": sources, "source": "es", "target": "en"})
        assert status == 200, answer
        assert answer["translatedText"] == expected
        status, answer, _ = server.call("/translate", {"q": sources[0], "source": "es", "target": "en"})
        assert (status, answer["translatedText"]) == (200, expected[0])
    finally:
        assert server.stop() == 0


def test_the_card_describes_the_sentencepiece_tokenizer(tuned):
    card = (tuned / "README.md").read_text(encoding="utf-8")
    assert "fine-tuned from" in card
    assert "| Tokenizer | Marian's SentencePiece models, one per language (source.spm, target.spm)" in card
    assert "no byte fallback" not in card  # our BPE's limitation, not this tokenizer's
