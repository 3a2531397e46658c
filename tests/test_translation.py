"""The translation layer: one `DecodingOptions` (ranges checked once, the same flags in every command), engines that
give every sentence its own §6.1 length limit, so that a sentence's translation never depends on its batch, and
sampling that is reproducible with a seed whatever it is decoded with.

The models are tiny and random. `runaway` can never end a sentence (its end token is suppressed), so every
translation runs to its length limit: a sentence decoded with a longer one under the longer one's limit would come
out longer, which is what these tests would catch.
"""

import dataclasses
import json
import random

import pytest
import torch

from vanilla_transformer.cli import main as cli
from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.deployment.ctranslate2_convert import export_ctranslate2
from vanilla_transformer.deployment.engines import load_engine
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.modeling.modeling_vanilla_transformer import EXTRA_OUTPUT_TOKENS
from vanilla_transformer.training.export import save_model_folder
from vanilla_transformer.translation import (DecodingOptions, DecodingOptionsError, TransformersEngine, translate,
                                             translate_alternatives)

from support.toy_task import WORDS, word_tokenizer

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]  # word_tokenizer's first ids
MAX_POSITIONS = 64

GREEDY = DecodingOptions(num_beams=1)
BEAM = DecodingOptions()  # §6.1: beam 4, length penalty 0.6
N_BEST = DecodingOptions(n_best=3)
SEARCHES = {"greedy": GREEDY, "beam": BEAM, "n_best": N_BEST}


def random_model(runaway: bool, seed: int = 0):
    """A random model; `runaway`: the special tokens (the end token among them) can never be generated."""
    torch.manual_seed(seed)
    config = VanillaTransformerConfig(vocab_size=len(SPECIAL + WORDS), d_model=32, encoder_layers=1, decoder_layers=1,
                                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                      decoder_ffn_dim=64, dropout=0.0, max_position_embeddings=MAX_POSITIONS,
                                      add_final_logits_bias=True)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 1.0)
        if runaway:
            model.final_logits_bias[..., :len(SPECIAL)] = -1e4
    return model


def sentences(count: int, seed: int) -> list[str]:
    """1 to 12 words: limits of new tokens from 52 to 63 (the position table's cap)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(count)]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """{name: engine}: our model and its CTranslate2 export, runaway and not."""
    tokenizer = word_tokenizer()
    found = {}
    for runaway in (True, False):
        model = random_model(runaway)
        kind = "runaway" if runaway else "ending"
        found[f"transformers-{kind}"] = TransformersEngine(model, tokenizer)
        folder = export_ctranslate2(model, tmp_path_factory.mktemp("ct2") / kind, tokenizer=tokenizer)
        found[f"ctranslate2-{kind}"] = load_engine(str(folder), "ctranslate2", "cpu")
    return found


def alone(engine, texts: list[str], options: DecodingOptions) -> list[list[str]]:
    return [translate_alternatives(engine, [text], options)[0] for text in texts]


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("name", ["transformers-runaway", "transformers-ending", "ctranslate2-runaway",
                                  "ctranslate2-ending"])
def test_a_sentence_gets_the_same_translations_alone_and_in_any_batch(engines, name, search):
    engine, options = engines[name], SEARCHES[search]
    texts = sentences(6, seed=1)
    expected = alone(engine, texts, options)
    assert all(len(alternatives) == options.n_best for alternatives in expected)
    shuffled = list(range(len(texts)))
    random.Random(2).shuffle(shuffled)
    for batch_size in (64, 3):  # one batch of every length; batches of neighbours in length
        together = translate_alternatives(engine, [texts[i] for i in shuffled], options, batch_size)
        assert [together[shuffled.index(i)] for i in range(len(texts))] == expected, batch_size
    if name.endswith("runaway"):  # every row ran to its own limit (so a shared limit would have shown)
        lengths = [len(ids) - 1 for ids in engine.tokenizer(texts)["input_ids"]]  # words, without </s>
        for text_length, alternatives in zip(lengths, expected):
            limit = min(text_length + 1 + EXTRA_OUTPUT_TOKENS, MAX_POSITIONS - 1)
            assert [len(translation.split()) for translation in alternatives] == [limit] * options.n_best


def test_lines_blank_lines_and_the_length_cap_of_a_text(engines):
    engine = engines["transformers-ending"]
    first, second = sentences(2, seed=3)
    [one, two] = translate(engine, [first, second], GREEDY)
    assert translate(engine, [f"{first}\n\n{second}\r", "", "  "], GREEDY) == [f"{one}\n\n{two}", "", "  "]
    capped = translate(engines["transformers-runaway"], [first], dataclasses.replace(GREEDY, max_new_tokens=5))
    assert len(capped[0].split()) == 5


def test_evaluate_scores_the_same_with_any_batch_size(engines, tmp_path, capsys):
    """`evaluate --batch_size 1` and `--batch_size 64` write the same hypotheses, so BLEU is the same."""
    engine = engines["transformers-ending"]
    folder = save_model_folder(engine.model, engine.tokenizer, tmp_path / "model")
    texts = sentences(8, seed=4)
    (tmp_path / "src.txt").write_text("".join(t + "\n" for t in texts))
    (tmp_path / "ref.txt").write_text("".join(" ".join(reversed(t.split())) + "\n" for t in texts))
    results = []
    for batch_size in (1, 64):
        output = tmp_path / f"hyp{batch_size}.txt"
        status = cli.main(["evaluate", str(folder), "--file", str(tmp_path / "src.txt"), "--target_file",
                           str(tmp_path / "ref.txt"), "--source_lang", "xx", "--target_lang", "yy", "--batch_size",
                           str(batch_size), "--output", str(output), "--json", "--device", "cpu"])
        assert status == 0
        out = capsys.readouterr().out
        scores = json.loads(out[out.index("{"):out.rindex("}") + 1])
        results.append((output.read_text(), scores["bleu"], scores["chrf"]))
    assert results[0] == results[1] and results[0][0].count("\n") == len(texts)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_with_a_seed_in_any_batch(engines):
    engine = engines["transformers-ending"]
    texts = sentences(5, seed=5)
    seeded = DecodingOptions(do_sample=True, seed=7, n_best=2, top_p=0.95, temperature=1.5)
    expected = alone(engine, texts, seeded)
    assert translate_alternatives(engine, texts[::-1], seeded, batch_size=3)[::-1] == expected
    assert translate_alternatives(engine, texts, seeded) == expected  # again, later: the same draws
    other = translate_alternatives(engine, texts, dataclasses.replace(seeded, seed=8))
    assert other != expected  # another seed, other samples
    assert any(first != second for first, second in expected)  # the n_best samples of a sentence are not copies


@pytest.mark.parametrize("name", ["transformers-ending", "ctranslate2-ending"])
def test_sampling_from_the_most_likely_token_only_is_greedy_search(engines, name):
    """top_k 1 leaves one token to draw: the sampler applies the warpers before it draws."""
    engine = engines[name]
    texts = sentences(4, seed=6)
    sampled = translate_alternatives(engine, texts, DecodingOptions(do_sample=True, top_k=1, n_best=2))
    assert sampled == [[greedy] * 2 for greedy in translate(engine, texts, GREEDY)]


def test_ctranslate2_sampling_refuses_a_seed_it_cannot_honour(engines, tmp_path, capsys):
    """CTranslate2's set_random_seed does not reach its workers' generators (OpenNMT/CTranslate2#1757)."""
    with pytest.raises(DecodingOptionsError, match="seed: CTranslate2's sampling cannot be seeded"):
        translate(engines["ctranslate2-ending"], ["w1"], DecodingOptions(do_sample=True, seed=1))
    exported = export_ctranslate2(engines["transformers-ending"].model, tmp_path / "ct2",
                                  tokenizer=engines["transformers-ending"].tokenizer)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["translate", str(exported), "w1", "--engine", "ctranslate2", "--do_sample", "--seed", "1"])
    assert exit_info.value.code == 2 and "seed: CTranslate2's sampling cannot be seeded" in capsys.readouterr().err
    unseeded = translate_alternatives(engines["ctranslate2-ending"], ["w1 w2"], DecodingOptions(do_sample=True,
                                                                                               n_best=3))
    assert len(unseeded[0]) == 3 and all(set(t.split()) <= set(WORDS) for t in unseeded[0])


# ---------------------------------------------------------------------------------------------------------------------
# One type of options: ranges, combinations, the same flags everywhere
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"length_penalty": float("nan")}, "length_penalty must be a finite number"),
    ({"length_penalty": float("inf")}, "length_penalty must be a finite number"),
    ({"length_penalty": 1e300}, "length_penalty must be in [-10.0, 10.0]"),
    ({"length_penalty": 10**5000}, "length_penalty must be a finite number, got an integer of"),
    ({"length_penalty": "0.6"}, "length_penalty must be a number"),
    ({"num_beams": 0}, "num_beams must be in [1, 64]"),
    ({"num_beams": True}, "num_beams must be an integer, got True"),
    ({"num_beams": 2.0}, "num_beams must be an integer"),
    ({"n_best": 5}, "n_best is 5, more than num_beams 4"),
    ({"max_new_tokens": 0}, "max_new_tokens must be in [1, 100000]"),
    ({"top_k": 5}, "top_k is a sampling option: add do_sample"),
    ({"seed": 1, "temperature": 0.5}, "temperature, seed are sampling options"),
    ({"do_sample": True, "num_beams": 4}, "num_beams is 4 with do_sample"),
    ({"do_sample": True, "top_p": 0.0}, "top_p must be in (0.0, 1.0]"),
    ({"do_sample": True, "temperature": -1.0}, "temperature must be in (0.0, 100.0]"),
    ({"do_sample": True, "seed": -1}, "seed must be in [0, "),
    ({"do_sample": 1}, "do_sample must be true or false"),
])
def test_every_option_is_checked_once_naming_it(values, message):
    with pytest.raises(DecodingOptionsError) as error:
        DecodingOptions(**values)
    assert message in str(error.value)


def test_request_fields_keep_the_servers_defaults_and_follow_do_sample():
    defaults = DecodingOptions(num_beams=2, length_penalty=1.0)
    assert DecodingOptions.from_fields({"n_best": 2}, defaults) == DecodingOptions(num_beams=2, length_penalty=1.0,
                                                                                    n_best=2)
    assert DecodingOptions.from_fields({"do_sample": True}, defaults).num_beams == 1
    with pytest.raises(DecodingOptionsError, match="num_beams must be an integer"):
        DecodingOptions.from_fields({"num_beams": "4"})


@pytest.mark.parametrize("command", ["translate", "evaluate", "serve"])
@pytest.mark.parametrize("flags, message", [
    (["--length_penalty", "nan"], "--length_penalty must be a finite number, got nan"),
    (["--num_beams", "0"], "--num_beams must be in [1, 64], got 0"),
    (["--top_p", "0.9"], "--top_p is a sampling option: add do_sample"),
    (["--do_sample", "--temperature", "inf"], "--temperature must be a finite number"),
])
def test_every_decoding_command_has_the_same_flags_and_checks(engines, tmp_path, capsys, command, flags, message):
    engine = engines["transformers-ending"]
    folder = save_model_folder(engine.model, engine.tokenizer, tmp_path / "model")
    argv = {"translate": ["translate", str(folder), "w1"],
            "evaluate": ["evaluate", str(folder), "--dataset", "bible"],
            "serve": ["serve", str(folder)]}[command]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_exported_folders_keep_the_papers_length_rule(engines, tmp_path):
    """generation_config.json holds beam 4 / α 0.6 and no length, so `generate` itself gives source + 50 tokens."""
    from transformers import AutoModelForSeq2SeqLM

    engine = engines["transformers-runaway"]
    folder = save_model_folder(engine.model, engine.tokenizer, tmp_path / "model")
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["num_beams"], generation["length_penalty"], "max_length" in generation) == (4, 0.6, False)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    source = engine.tokenizer(["w1 w2 w3"], return_tensors="pt")
    output = model.generate(**source, num_beams=1)
    assert output.shape[1] == 1 + source["input_ids"].shape[1] + EXTRA_OUTPUT_TOKENS  # + the decoder start token


# ---------------------------------------------------------------------------------------------------------------------
# A model and a tokenizer that do not belong together are refused by every command, before anything runs
# ---------------------------------------------------------------------------------------------------------------------

FOREIGN_TOKENIZERS = {
    "more words": lambda: word_tokenizer(names=SPECIAL + WORDS + ["w16"]),
    "other special ids": lambda: word_tokenizer(names=["</s>", "<unk>", "<s>", "<pad>"] + WORDS),
}


@pytest.mark.parametrize("foreign", FOREIGN_TOKENIZERS)
def test_a_folder_with_another_models_tokenizer_is_refused_by_every_command(engines, tmp_path, capsys, foreign):
    engine = engines["transformers-ending"]
    folder = save_model_folder(engine.model, engine.tokenizer, tmp_path / "model")
    exported = export_ctranslate2(folder, tmp_path / "ct2")
    FOREIGN_TOKENIZERS[foreign]().save_pretrained(folder)
    FOREIGN_TOKENIZERS[foreign]().save_pretrained(exported / "tokenizer")
    for argv in (["translate", folder, "w1"], ["evaluate", folder, "--dataset", "bible"],
                 ["export", folder, tmp_path / "again", "--format", "ctranslate2"], ["serve", folder],
                 ["inspect", folder, "--src", "w1", "--out", tmp_path / "figures"],
                 ["translate", exported, "w1", "--engine", "ctranslate2"]):
        try:
            status = cli.main([str(a) for a in argv])
        except SystemExit as exit_info:
            status = exit_info.code
        err = capsys.readouterr().err
        assert status in (1, 2) and "does not belong to the" in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "again").exists() and not (tmp_path / "figures").exists()


def test_translate_prints_the_n_best_of_each_line_tab_separated(engines, tmp_path, capsys):
    engine = engines["transformers-ending"]
    folder = save_model_folder(engine.model, engine.tokenizer, tmp_path / "model")
    texts = sentences(2, seed=8)
    assert cli.main(["translate", str(folder), *texts, "--n_best", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t") for line in lines] == translate_alternatives(engine, texts, N_BEST)


def test_each_lines_margins_come_back_around_its_translation(engines):
    """Help texts are indented and messages end in a space before a placeholder: the tokenizer drops that white
    space, translate() puts it back around each line's translation."""
    engine = engines["transformers-ending"]
    first, second = sentences(2, seed=4)
    [one, two] = translate(engine, [first, second], GREEDY)
    assert translate(engine, [f"  {first}\t \n\n   \n{second} "], GREEDY) == [f"  {one}\t \n\n   \n{two} "]
