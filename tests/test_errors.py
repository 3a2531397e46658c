"""Bad input and faults (issue 14): nothing silently wrong, nothing a user wrote lost, every mistake one line.

* The eight silent failures of the issue, each shown by a test that fails on the code before the fix.
* The commands' probes: one line `vanilla-transformer COMMAND: error: ...` naming what is wrong, exit status 2 for a
  usage error and 1 for a failure while running; `--debug` / VANILLA_TRANSFORMER_DEBUG=1 give the traceback.
* Files planted next to and inside every output path survive every command.

Tiny models on the synthetic corpus of test_training.py; new names are imported inside the tests that need them,
so that each test fails on its own when run against older code.
"""

import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vanilla_transformer.modeling  # noqa: F401  (registers the Auto classes)
from support.commands import FAST, command, error_line
from support.training import tiny_args, weights, write_corpus
from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli import main as cli
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.translation import (DecodingOptions, TransformersEngine, load_model_and_tokenizer,
                                             split_to_fit, translate)

GREEDY = DecodingOptions(num_beams=1)
from vanilla_transformer.training.train import train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_with_trainer.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    """4 updates with dropout, evaluated and saved every 2, all checkpoints kept: checkpoint-2, checkpoint-4,
    best/ and final/."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    train(*parse_args(tiny_args(corpus, output_dir, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2",
                                "--keep_last", "0", *FAST)))
    return output_dir


def digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below `folder`."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def plant(*paths: Path) -> dict[Path, str]:
    """A user's file at each path (parents created); returns {path: content} to check with `intact`."""
    planted = {}
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        planted[path] = f"the user's own {path.name}, {time.time_ns()}"
        path.write_text(planted[path], encoding="utf-8")
    return planted


def intact(planted: dict[Path, str]) -> None:
    for path, content in planted.items():
        assert path.is_file() and path.read_text(encoding="utf-8") == content, path


# ---------------------------------------------------------------------------------------------------------------------
# 1. An output folder never replaces a user's folder, an input or a file
# ---------------------------------------------------------------------------------------------------------------------


def test_average_never_replaces_a_users_folder_an_input_or_a_file(run, tmp_path, capsys):
    first, second = run / "checkpoint-2", run / "checkpoint-4"
    planted = plant(tmp_path / "mine" / "thesis.tex", tmp_path / "notes.txt")
    checkpoint_before = digest(second)
    for output, reason in ((tmp_path / "mine", "not a model folder"), (second, "input"),
                           (tmp_path / "notes.txt", "file"), (run, "input")):
        status, _, err = command(capsys, "average", first, second, "--output", output)
        assert status == 2, (output, err)
        assert "--output" in error_line(err) and reason in err
    intact(planted)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing moved aside
    from vanilla_transformer.training.checkpoints import checkpoint_problems

    assert digest(second) == checkpoint_before and checkpoint_problems(second) == []  # still resumable

    # --overwrite adds the model's files to the user's folder and keeps theirs; an input stays refused even so.
    assert command(capsys, "average", first, second, "--output", tmp_path / "mine", "--overwrite")[0] == 0
    intact(planted)
    assert (tmp_path / "mine" / "model.safetensors").is_file()
    assert command(capsys, "average", first, second, "--output", second, "--overwrite")[0] == 2
    assert digest(second) == checkpoint_before

    # A model folder an earlier average wrote is replaced (nothing of the user's is in it).
    for _ in range(2):
        assert command(capsys, "average", first, second, "--output", tmp_path / "avg")[0] == 0
    assert torch.equal(weights(tmp_path / "avg")["model.shared.weight"],
                       weights(tmp_path / "mine")["model.shared.weight"])


# ---------------------------------------------------------------------------------------------------------------------
# 2. Unknown config keywords raise; unknown keys of a saved config.json warn once
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_config_keywords_raise_naming_the_nearest_field():
    with pytest.raises(TypeError, match=r"'d_modle'.*did you mean 'd_model'"):
        VanillaTransformerConfig.tiny(d_modle=64)
    with pytest.raises(TypeError, match="'encoder_layer'.*'encoder_layers'"):
        VanillaTransformerConfig.preset("big", encoder_layer=2)
    with pytest.raises(TypeError, match="generation_config"):
        VanillaTransformerConfig(num_beams=5)
    # PreTrainedConfig's own keywords and the attribute aliases stay accepted.
    config = VanillaTransformerConfig.tiny(torch_dtype="float32", architectures=["X"], return_dict=False,
                                           output_attentions=False, name_or_path="here", hidden_size=64)
    assert config.d_model == 64 and config.dtype == torch.float32 and config.return_dict is False


def test_a_saved_config_with_unknown_keys_loads_with_one_warning(tmp_path, caplog):
    from transformers import AutoConfig

    VanillaTransformerConfig.tiny(d_model=64).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "knob_from_version_9": 3}))
    with caplog.at_level(logging.WARNING):
        first = AutoConfig.from_pretrained(tmp_path)
        second = VanillaTransformerConfig.from_pretrained(tmp_path)
    assert first.d_model == second.d_model == 64
    warnings = [r for r in caplog.records if "knob_from_version_9" in r.getMessage()]
    assert len(warnings) == 1, caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# 5. Data that --max_length guts is refused before training
# ---------------------------------------------------------------------------------------------------------------------


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("es\ten\n" + "".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


SHORT = ("uno dos", "one two")
LONG = ("el perro verde come pan y el gato rojo ve la luna", "the green dog eats bread and the red cat sees the moon")


@pytest.mark.parametrize("short, long, validation, message", [
    (10, 11, [SHORT], "drops 11 of 21 training pairs"),
    (10, 10, [LONG] * 3, "drops all 3 validation pairs"),
], ids=["most-training-pairs", "every-validation-pair"])
def test_max_length_that_drops_the_data_is_refused(tmp_path, short, long, validation, message):
    train_file = write_pairs(tmp_path / "train.tsv", [SHORT] * short + [LONG] * long)
    validation_file = write_pairs(tmp_path / "valid.tsv", validation)
    argv = tiny_args(tmp_path, tmp_path / "run", "--max_length", "30", "--max_tokens", "300", "--max_steps", "2",
                     *FAST)
    argv[argv.index("--train_file") + 1], argv[argv.index("--validation_file") + 1] = train_file, validation_file
    with pytest.raises(ValueError, match=message) as error:  # a UsageError: exit status 2 on the command line
        train(*parse_args([str(a) for a in argv]))
    assert "--max_length 30" in str(error.value) and type(error.value).__name__ == "UsageError"
    assert not list((tmp_path / "run").glob("checkpoint-*")) and not (tmp_path / "run" / "final").exists()


def test_validation_loss_is_never_nan(monkeypatch):
    from vanilla_transformer.training.validation import validation_loss

    class OneProcess:
        num_processes, process_index, device = 1, 0, torch.device("cpu")

        def reduce(self, tensor, _):
            return tensor

    from datasets import Dataset

    empty = Dataset.from_dict({"input_ids": [], "labels": [], "src_length": [], "tgt_length": []})
    with pytest.raises(ValueError, match="no target token"):
        validation_loss(OneProcess(), torch.nn.Linear(1, 1), empty, None, 100)


# ---------------------------------------------------------------------------------------------------------------------
# 6. --resume passes over an incomplete checkpoint, naming what it lacks, and stays bit-exact
# ---------------------------------------------------------------------------------------------------------------------


def test_resume_passes_over_a_checkpoint_missing_a_state_file(run, corpus, tmp_path, caplog, capsys):
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    (resumed / "checkpoint-4" / "random_states_0.pkl").unlink()
    argv = tiny_args(corpus, resumed, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2", "--keep_last",
                     "0", *FAST)
    with caplog.at_level(logging.INFO):
        train(*parse_args([*argv, "--resume"]))
    assert "checkpoint-4 is incomplete (random_states_0.pkl missing)" in caplog.text
    assert f"resumed from {resumed / 'checkpoint-2'}" in caplog.text
    expected, actual = weights(run / "final"), weights(resumed / "final")  # dropout on: the RNG streams matter
    assert all(torch.equal(expected[key], actual[key]) for key in expected)

    # No complete checkpoint at all: refused before any work, naming the missing files.
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        (resumed / checkpoint / "random_states_0.pkl").unlink(missing_ok=True)
    status, _, err = command(capsys, "train", *argv, "--resume")
    assert status == 2 and "no complete checkpoint" in error_line(err) and "random_states_0.pkl missing" in err


def test_checkpoint_files_are_checked_against_what_was_written(run, tmp_path):
    from vanilla_transformer.training.checkpoints import checkpoint_problems, resumable_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert resumable_checkpoint(copy) == (copy / "checkpoint-4", [])
    (copy / "checkpoint-4" / "optimizer.bin").unlink()
    with open(copy / "checkpoint-2" / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    assert checkpoint_problems(copy / "checkpoint-4") == ["optimizer.bin missing"]
    assert checkpoint_problems(copy / "checkpoint-2")[0].startswith("model.safetensors has 1000 bytes")
    assert resumable_checkpoint(copy)[0] is None


def test_resume_with_another_model_is_refused(run, corpus, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    argv = [a if a != "32" else "64" for a in tiny_args(corpus, copy)]  # --d_model 64 instead of 32
    status, _, err = command(capsys, "train", *argv, "--resume")
    assert status == 2 and "d_model 32 there, 64 now" in error_line(err)


def test_a_full_disk_names_the_folder_and_keeps_the_previous_checkpoint(corpus, tmp_path, monkeypatch, capsys):
    from vanilla_transformer.base import errors
    from vanilla_transformer.training import checkpoints

    original = checkpoints.save_accelerate_state
    calls = {"n": 0}

    def fill_the_disk(accelerator, folder):
        calls["n"] += 1
        if calls["n"] == 1:
            return original(accelerator, folder)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "optimizer.bin").write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4 vs 2")

    monkeypatch.setattr(checkpoints, "save_accelerate_state", fill_the_disk)
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=0))
    output_dir = tmp_path / "run"
    status, _, err = command(capsys, "train", *tiny_args(corpus, output_dir, "--max_steps", "4", "--save_steps", "2",
                                                       "--eval_steps", "2", *FAST))
    assert status == 1
    line = error_line(err)
    assert f"no space left on {output_dir.resolve()}" in line and "checkpoint-2 is kept" in line
    from vanilla_transformer.training.checkpoints import checkpoint_problems

    assert checkpoint_problems(output_dir / "checkpoint-2") == []
    assert sorted(p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2"]
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------------------------------------
# 7. An empty input gives an empty output, without the model
# ---------------------------------------------------------------------------------------------------------------------


def counting_generate(model) -> list[tuple[int, int]]:
    """Record (source width, max_new_tokens) of every `generate` call of `model`."""
    calls = []
    original = model.generate

    def generate(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape[1], kwargs["max_new_tokens"]))
        return original(*args, **kwargs)

    model.generate = generate
    return calls


def test_empty_input_translates_to_empty_output_without_the_model(run, monkeypatch, capsys):
    model, tokenizer = load_model_and_tokenizer(str(run / "final"), "cpu")
    calls = counting_generate(model)
    engine = TransformersEngine(model, tokenizer)
    assert translate(engine, ["", "   "], GREEDY) == ["", "   "]  # white space alone is kept as it is
    assert calls == []
    alone = translate(engine, ["uno dos", "tres"], GREEDY)
    assert translate(engine, ["uno dos", "", "tres"], GREEDY) == [alone[0], "", alone[1]]

    status, out, _ = command(capsys, "translate", run / "final", "", "--num_beams", "1")
    assert (status, out) == (0, "\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("uno dos\n\ntres\n"))
    status, out, _ = command(capsys, "translate", run / "final", "--num_beams", "1")
    assert status == 0 and out.split("\n") == [alone[0], "", alone[1], ""]  # line i of the output is input line i


# ---------------------------------------------------------------------------------------------------------------------
# 8. An input longer than the model's length is split at sentence boundaries; the output is capped
# ---------------------------------------------------------------------------------------------------------------------


def test_long_input_is_split_at_sentence_boundaries_and_the_output_capped(run):
    from transformers import AutoTokenizer

    limit = 24
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=limit)).eval()
    sentences = ["uno dos tres.", "el perro come pan.", "la luna y el sol!", "casa verde?", "agua y pan.",
                 "el gato ve."]
    text = " ".join(sentences)
    assert len(tokenizer(text)["input_ids"]) > 2 * limit
    calls = counting_generate(model)
    engine = TransformersEngine(model, tokenizer)
    [translation] = translate(engine, [text], GREEDY)
    assert len(calls) >= 1 and all(width <= limit and new_tokens <= limit - 1 for width, new_tokens in calls), calls

    pieces = split_to_fit(text, tokenizer, limit)
    assert len(pieces) > 2 and " ".join(pieces) == text  # whole sentences, in order
    assert all(piece.endswith((".", "!", "?")) for piece in pieces)
    assert translation == " ".join(t for t in translate(engine, pieces, GREEDY) if t)
    # One sentence longer than the limit is cut between words.
    run_on = " ".join(["perro verde"] * 12)
    assert all(len(tokenizer(p)["input_ids"]) <= limit for p in split_to_fit(run_on, tokenizer, limit))
    assert " ".join(split_to_fit(run_on, tokenizer, limit)) == run_on


# ---------------------------------------------------------------------------------------------------------------------
# The probes: one line, exit status 2 (usage) or 1 (runtime)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    contents = {"noheader.tsv": b"uno dos\tone two\n", "otherlangs.tsv": b"de\tfr\nuno\tone\n",
                "threecolumns.tsv": b"es\ten\nuno\tone\textra\n", "latin1.tsv": b"es\ten\nni\xf1o\tchild\n",
                "empty.tsv": b"", "headeronly.tsv": b"es\ten\n", "emptyside.tsv": b"es\ten\nuno\t \n",
                "x.es": b"uno\n"}
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    (folder / "emptydir").mkdir()
    (folder / "notmodel").mkdir()
    (folder / "notmodel" / "notes.txt").write_text("notes")
    (folder / "afile").write_text("a file")
    return folder


def train_probe(data_file: str, *extra: str) -> list[str]:
    return ["train", "--train_file", data_file, "--validation_file", "{corpus}/valid.tsv", "--source_lang", "es",
            "--target_lang", "en", "--preset", "tiny", "--vocab_size", "457", "--report_to", "none", "--max_steps",
            "1", "--output_dir", "{tmp}/out", *extra]


PROBES = [
    # train: data files (runtime errors naming the file and line)
    (train_probe("{bad}/noheader.tsv"), 1, "noheader.tsv, line 1: no column 'es' in the header"),
    (train_probe("{bad}/otherlangs.tsv"), 1, "otherlangs.tsv, line 1: no column 'es'"),
    (train_probe("{bad}/threecolumns.tsv"), 1, "line 2: 3 tab-separated fields, the header has 2"),
    (train_probe("{bad}/latin1.tsv"), 1, "latin1.tsv, line 2: not valid UTF-8"),
    (train_probe("{bad}/empty.tsv"), 1, "empty.tsv, line 1: empty file"),
    (train_probe("{bad}/headeronly.tsv"), 1, "headeronly.tsv: no sentence pairs"),
    (train_probe("{bad}/emptyside.tsv"), 1, "emptyside.tsv, line 2: empty 'en' side"),
    (train_probe("{bad}/x.es"), 1, "--train_target_file"),
    # train: arguments (usage errors)
    (train_probe("{corpus}/train.tsv", "--tokenizer", "{bad}/emptydir"), 2, "holds no tokenizer"),
    (train_probe("{corpus}/train.tsv", "--output_dir", "{bad}/afile"), 2, "is a file"),
    (train_probe("{corpus}/train.tsv", "--output_dir", "{bad}/afile/run"), 2, "is a file"),
    (train_probe("{corpus}/train.tsv", "--vocab_size", "120"), 2, "--vocab_size 120 is below the 457"),
    (train_probe("{corpus}/train.tsv", "--max_step", "3"), 2, "--max_step (did you mean --max_steps?)"),
    (train_probe("{corpus}/train.tsv", "--resume"), 2, "--resume: no checkpoint"),
    (train_probe("{corpus}/train.tsv", "--train_target_file", "{corpus}/valid.tsv", "--train_file", "{bad}/nope"),
     2, "--train_file {bad}/nope does not exist"),
    # evaluate
    (["evaluate", "{final}", "--file", "{bad}/threecolumns.tsv", "--source_lang", "es", "--target_lang", "en",
      "--output", "{tmp}/hyp.txt"], 1, "line 2: 3 tab-separated fields"),
    (["evaluate", "{final}", "--file", "{tmp}/missing.tsv", "--source_lang", "es", "--target_lang", "en"], 2,
     "--file {tmp}/missing.tsv does not exist"),
    (["evaluate", "{bad}/notmodel", "--file", "{corpus}/test.tsv", "--source_lang", "es", "--target_lang", "en"], 2,
     "is not a model folder (no config.json)"),
    (["evaluate", "{final}", "--file", "{corpus}/test.tsv", "--source_lang", "es", "--target_lang", "en",
      "--output", "{corpus}/test.tsv"], 2, "is the input"),
    # translate
    (["translate", "{final}", "uno", "--batch_size", "0"], 2, "--batch_size must be positive, got 0"),
    (["translate", "{final}", "uno", "--num_beams", "0"], 2, "--num_beams must be in [1, 64], got 0"),
    (["translate", "{final}", "uno", "--device", "cuda:99"], 2, "--device cuda:99"),
    (["translate", "{final}", "uno", "--device", "gpu"], 2, "is not a device name"),
    (["translate", "{bad}/notmodel", "uno"], 2, "is not a model folder"),
    # average
    (["average", "{ckpt}", "{bad}/notmodel", "--output", "{tmp}/avg"], 1, "notmodel: no model.safetensors found"),
    (["average", "{ckpt}", "{other_shape}", "--output", "{tmp}/avg"], 1, "model.shared.weight has shape"),
    (["average", "{ckpt}", "{tmp}/nope", "--output", "{tmp}/avg"], 2, "not found: {tmp}/nope"),
    # push, convert-marian, inspect
    (["push", "{final}", "not a repo id"], 2, "invalid REPO_ID"),
    (["convert-marian", "{tmp}/no-such-folder", "{tmp}/out"], 2, "no such folder"),
    (["inspect", "{final}", "--src", "uno", "--out", "{bad}/afile"], 2, "--out {bad}/afile is an existing file"),
    (["inspect", "{final}", "--src", "uno", "--out", "{final}/figures"], 2, "is (or is inside) the input"),
]


@pytest.fixture(scope="module")
def other_shape(run, tmp_path_factory) -> Path:
    """A checkpoint folder whose embedding is narrower than the run's."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("narrow")
    shutil.copy(run / "checkpoint-2" / "config.json", folder)
    tensors = weights(run / "checkpoint-2")
    tensors["model.shared.weight"] = tensors["model.shared.weight"][:, :16].contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("argv, status, message", PROBES, ids=[f"{p[0][0]}-{i}" for i, p in enumerate(PROBES)])
def test_probe_gives_one_line_and_its_exit_status(argv, status, message, run, corpus, bad_files, other_shape,
                                                  tmp_path, capsys):
    values = dict(corpus=corpus, bad=bad_files, tmp=tmp_path, final=run / "final", ckpt=run / "checkpoint-2",
                  other_shape=other_shape)
    got, _, err = command(capsys, *[a.format(**values) for a in argv])
    line = error_line(err)
    assert got == status, err
    assert message.format(**values) in line, line


def test_debug_shows_the_traceback(run, bad_files, monkeypatch, capsys):
    argv = ["evaluate", str(run / "final"), "--file", str(bad_files / "threecolumns.tsv"), "--source_lang", "es",
            "--target_lang", "en", "--output", str(bad_files / "hyp.txt")]
    with pytest.raises(ValueError, match="3 tab-separated fields"):
        cli.main([*argv, "--debug"])
    with pytest.raises(ValueError, match="3 tab-separated fields"):
        cli.main(["--debug", *argv])
    monkeypatch.setenv("VANILLA_TRANSFORMER_DEBUG", "1")
    with pytest.raises(ValueError, match="3 tab-separated fields"):
        cli.main(argv)


@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "bible", "--max_step", "3"],
    ["evaluate", "m", "--dataset", "bible", "--batch", "2"],
    ["translate", "m", "x", "--beams", "2"],
    ["translate", "m", "x", "--num_beam", "2"],
    ["average", "a", "--output", "x", "--over"],
    ["push", "m", "user/repo", "--priv"],
    ["convert-marian", "a", "b", "--over"],
    ["inspect", "m", "--src", "x", "--out", "y", "--top", "3"],
], ids=lambda argv: argv[0])
def test_abbreviated_flags_are_refused(argv, capsys):
    status, _, err = command(capsys, *argv)
    assert status == 2 and "unrecognized arguments" in error_line(err)


def test_abbreviated_flags_are_refused_by_the_scripts(capsys):
    from vanilla_transformer.cli import demo

    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--step", "3"])  # not --steps; refused before the corpus is prepared
    assert exit_info.value.code == 2 and "--step" in capsys.readouterr().err
    spec = importlib.util.spec_from_file_location("finetune_with_trainer", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(["--model", "m", "--output", "x"])  # not --output_dir
    assert exit_info.value.code == 2


def test_data_files_that_should_simply_work(corpus, tmp_path):
    from vanilla_transformer.training.data import load_parallel
    from vanilla_transformer.training.prepare import load_raw_data

    trailing = tmp_path / "trailing.tsv"
    trailing.write_text((corpus / "train.tsv").read_text() + "\n\n", encoding="utf-8")
    assert len(load_parallel(trailing, "es", "en")["train"]) == 160
    middle = tmp_path / "middle.tsv"
    middle.write_text("es\ten\nuno\tone\n\ndos\ttwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match="middle.tsv, line 3"):
        load_parallel(middle, "es", "en")

    rows = [line.split("\t") for line in (corpus / "train.tsv").read_text().splitlines()[1:]]
    (tmp_path / "x.es").write_text("".join(s + "\n" for s, _ in rows), encoding="utf-8")
    (tmp_path / "x.en").write_text("".join(t + "\n" for _, t in rows), encoding="utf-8")
    data, _, _ = parse_args(tiny_args(corpus, tmp_path / "run", "--train_file", str(tmp_path / "x.es"),
                                      "--train_target_file", str(tmp_path / "x.en")))
    splits = load_raw_data(data)
    assert splits["train"][0]["translation"] == {"es": rows[0][0], "en": rows[0][1]}


def test_a_hub_dataset_offline_fails_fast(tmp_path):
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vanilla_transformer.training.train", "--dataset", "someone/wmt-like", "--source_lang",
         "de", "--target_lang", "en", "--output_dir", str(tmp_path / "run"), "--report_to", "none"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1
    assert "not in the cache and HF_HUB_OFFLINE=1" in error_line(result.stderr)
    assert time.perf_counter() - start < 60


def test_a_hub_dataset_without_network_fails_before_any_retry(monkeypatch):
    import datasets

    from vanilla_transformer.training import data

    monkeypatch.setattr(data, "hub_offline", lambda: False)
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("tried the Hub"))
    with pytest.raises(ConnectionError, match="cannot reach the Hugging Face Hub"):
        data.load_parallel("someone/wmt-like", "de", "en")


def test_api_errors_name_the_problem(run):
    from transformers import AutoTokenizer

    from vanilla_transformer.inspection import nearest_tokens
    from vanilla_transformer.modeling.translation_pipeline import TranslationPipeline
    from vanilla_transformer.training.tokenizer import MIN_VOCAB_SIZE, train_shared_bpe

    model, tokenizer = load_model_and_tokenizer(str(run / "final"), "cpu")
    for k in (-1, 0):
        with pytest.raises(ValueError, match=f"k must be a positive number of neighbours, got {k}"):
            nearest_tokens(model, tokenizer, 5, k=k)
    assert TranslationPipeline(model=model, tokenizer=AutoTokenizer.from_pretrained(run / "final"))([]) == []
    with pytest.raises(ValueError, match="no text to train the tokenizer on"):
        train_shared_bpe(["", "  "], vocab_size=MIN_VOCAB_SIZE)
    with pytest.raises(ValueError, match=f"vocab_size 120 is below the {MIN_VOCAB_SIZE} tokens"):
        train_shared_bpe(["uno dos"], vocab_size=120)
    assert len(train_shared_bpe(["uno dos"], vocab_size=MIN_VOCAB_SIZE)) == MIN_VOCAB_SIZE


def test_num_beams_1_runs_and_saves_its_generation_config(run):
    """`--num_beams 1` (greedy evaluation) used to fail at the first checkpoint: transformers refuses to save a
    length penalty without beam search. It only sets how training evaluates: the saved folders decode with the
    paper's beam 4 (issue 21, tests/test_contract.py)."""
    generation = json.loads((run / "checkpoint-2" / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and generation["length_penalty"] == 0.6


# ---------------------------------------------------------------------------------------------------------------------
# Files planted next to and inside every output path survive every command
# ---------------------------------------------------------------------------------------------------------------------


def test_training_keeps_the_users_files(corpus, tmp_path):
    output_dir = tmp_path / "run"
    planted = plant(tmp_path / "next-to-run.txt", tmp_path / ".tmp-run", output_dir / "notes.txt",
                    output_dir / ".old-final", output_dir / "final" / "my-notes.txt",
                    output_dir / "runs" / "my-plot.png")
    argv = tiny_args(corpus, output_dir, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2",
                     "--keep_last", "1", "--report_to", "tensorboard", *FAST)
    train(*parse_args(argv))
    intact(planted)
    assert (output_dir / "final" / "model.safetensors").is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    # Written under private temporary names, the outputs still get the ordinary permissions of the user's umask.
    assert (output_dir / "final").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (output_dir / "checkpoint-4" / "trainer_state.json").stat().st_mode & 0o777 == 0o666 & ~umask

    # Inside every folder a run writes, then a fresh start over it: only the run's own files go.
    planted.update(plant(*(output_dir / name / "mine.txt" for name in ("checkpoint-4", "best", "tokenizer"))))
    train(*parse_args([*argv, "--overwrite_output_dir", "--keep_last", "1"]))
    intact(planted)
    assert sorted(p.name for p in output_dir.glob("checkpoint-*/trainer_state.json")) == ["trainer_state.json"]
    assert (output_dir / "checkpoint-4" / "trainer_state.json").is_file()  # the new run's last checkpoint


def test_commands_keep_the_users_files(run, tmp_path, capsys):
    from transformers import MarianConfig, MarianMTModel

    final = run / "final"
    # average
    planted = plant(tmp_path / "avg-notes.txt", tmp_path / "avg" / "notes.txt")
    assert command(capsys, "average", run / "checkpoint-2", run / "checkpoint-4", "--output", tmp_path / "avg")[0] == 2
    assert command(capsys, "average", run / "checkpoint-2", run / "checkpoint-4", "--output", tmp_path / "avg",
                   "--overwrite")[0] == 0
    # evaluate: the hypotheses file replaces an older one of its name, nothing else
    (tmp_path / "test.tsv").write_text("es\ten\nuno dos\tone two\n", encoding="utf-8")
    planted.update(plant(tmp_path / "hyp.txt.bak"))
    assert command(capsys, "evaluate", final, "--file", tmp_path / "test.tsv", "--source_lang", "es",
                   "--target_lang", "en", "--output", tmp_path / "hyp.txt", "--num_beams", "1")[0] == 0
    # inspect
    planted.update(plant(tmp_path / "figures" / "notes.txt", tmp_path / "figures.txt"))
    assert command(capsys, "inspect", final, "--src", "uno dos", "--tgt", "one two", "--out", tmp_path / "figures",
                   "--positions", "8")[0] == 0
    assert (tmp_path / "figures" / "report.txt").is_file()
    # convert-marian
    torch.manual_seed(0)
    marian = MarianMTModel(MarianConfig(vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1,
                                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                                        decoder_ffn_dim=16, pad_token_id=19, decoder_start_token_id=19,
                                        eos_token_id=0, max_position_embeddings=32))
    marian.save_pretrained(tmp_path / "marian")
    planted.update(plant(tmp_path / "converted" / "notes.txt", tmp_path / "converted.txt"))
    assert command(capsys, "convert-marian", tmp_path / "marian", tmp_path / "converted")[0] == 2
    assert command(capsys, "convert-marian", tmp_path / "marian", tmp_path / "marian")[0] == 2
    assert command(capsys, "convert-marian", tmp_path / "marian", tmp_path / "converted", "--overwrite")[0] == 0
    assert (tmp_path / "converted" / "model.safetensors").is_file()
    intact(planted)
    assert (tmp_path / "marian" / "config.json").is_file()


def test_the_trainer_example_keeps_the_users_files(run, tmp_path):
    spec = importlib.util.spec_from_file_location("finetune_with_trainer", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model_before = digest(run / "final")
    planted = plant(tmp_path / "tuned" / "notes.txt", tmp_path / "tuned.txt")
    common = ["--model", str(run / "final"), "--max_steps", "1", "--batch_size", "4"]
    from vanilla_transformer.base.errors import UsageError

    with pytest.raises(UsageError, match="notes.txt"):
        example.main([*common, "--output_dir", str(tmp_path / "tuned")])
    with pytest.raises(UsageError, match="input"):
        example.main([*common, "--output_dir", str(run / "final"), "--overwrite"])
    assert example.main([*common, "--output_dir", str(tmp_path / "tuned"), "--overwrite"]) == 0
    intact(planted)
    assert (tmp_path / "tuned" / "model.safetensors").is_file() and digest(run / "final") == model_before
