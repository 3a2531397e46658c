"""A run's contract (issue 21): `--resume` refuses what the checkpoint cannot honour, one writer per output folder,
and the last tracebacks and misleading messages of the commands.

Tiny models on the synthetic corpus of test_training.py (the `run` fixture: 4 updates, checkpoints at 2 and 4,
greedy evaluation); new names are imported inside the tests that need them, so that each test fails on its own
against older code.
"""

import io
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.commands import FAST, command, error_line, tiny_model_folder
from support.training import tiny_args, write_corpus
from vanilla_transformer.cli import main as cli
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.train import train

RUN_ARGS = ("--max_steps", "4", "--save_steps", "2", "--eval_steps", "2", "--keep_last", "0", *FAST)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("run") / "out"
    train(*parse_args(tiny_args(corpus, output_dir, *RUN_ARGS)))
    return output_dir


def resumable_copy(run: Path, folder: Path) -> Path:
    """The run's folder without final/ (a run stopped after checkpoint-4), to resume."""
    shutil.copytree(run, folder)
    shutil.rmtree(folder / "final")
    return folder


def with_value(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag`'s value replaced (or the flag added)."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


# ---------------------------------------------------------------------------------------------------------------------
# --resume refuses what the checkpoint cannot honour, and the summary records the truth
# ---------------------------------------------------------------------------------------------------------------------


def test_resume_refuses_other_data_vocabulary_seed_schedule_and_batches(run, corpus, tmp_path, capsys):
    copy = resumable_copy(run, tmp_path / "run")
    other = tmp_path / "other.tsv"
    other.write_text((corpus / "train.tsv").read_text() + "uno\tone\n", encoding="utf-8")
    argv = tiny_args(corpus, copy, *RUN_ARGS, "--resume")
    for flag, value in (("--train_file", str(other)), ("--vocab_size", "656"), ("--seed", "2"),
                        ("--warmup_steps", "8"), ("--max_tokens", "400")):
        argv = with_value(argv, flag, value)
    before = sorted(p.name for p in copy.iterdir())
    status, _, err = command(capsys, "train", *argv)
    line = error_line(err)
    assert status == 2, err
    for change in (f"--train_file {corpus / 'train.tsv'}", f"→ {other}", "--vocab_size 457 → 656", "--seed 1 → 2",
                   "--warmup_steps 4 → 8", "--max_tokens 300 → 400"):
        assert change in line, line
    assert "--max_steps" in line and "may change only" in line  # the line says what may change
    assert sorted(p.name for p in copy.iterdir()) == before  # refused before any work

    # The same data under another name is the same data; the same name with other content is not.
    moved = tmp_path / "moved.tsv"
    shutil.copy(corpus / "train.tsv", moved)
    argv = with_value(tiny_args(corpus, copy, *RUN_ARGS, "--resume"), "--validation_file", str(other))
    status, _, err = command(capsys, "train", *argv)
    assert status == 2 and "--validation_file" in error_line(err)


def test_resume_refuses_another_tokenizer(run, corpus, tmp_path, capsys):
    copy = resumable_copy(run, tmp_path / "run")
    other_run = tmp_path / "other"
    train(*parse_args(tiny_args(corpus, other_run, "--max_steps", "1", "--vocab_size", "486", *FAST)))
    argv = tiny_args(corpus, copy, *RUN_ARGS, "--resume")
    argv = argv[:argv.index("--vocab_size")] + argv[argv.index("--vocab_size") + 2:]
    status, _, err = command(capsys, "train", *argv, "--tokenizer", str(other_run / "tokenizer"))
    assert status == 2 and "tokenizer" in error_line(err) and "other vocabulary" in error_line(err), err


def test_resume_of_an_unrecorded_checkpoint_still_refuses_another_vocabulary(run, corpus, tmp_path, capsys):
    """A checkpoint written before runs were recorded: the tokenizer's size is compared with the model's (it used to
    end in torch's size-mismatch traceback)."""
    copy = resumable_copy(run, tmp_path / "run")
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        state_file = copy / checkpoint / "trainer_state.json"
        state = json.loads(state_file.read_text())
        del state["run"]
        state_file.write_text(json.dumps(state))
    other_run = tmp_path / "other"
    train(*parse_args(tiny_args(corpus, other_run, "--max_steps", "1", "--vocab_size", "486", *FAST)))
    argv = tiny_args(corpus, copy, *RUN_ARGS, "--resume")
    argv = argv[:argv.index("--vocab_size")] + argv[argv.index("--vocab_size") + 2:]
    status, _, err = command(capsys, "train", *argv, "--tokenizer", str(other_run / "tokenizer"))
    assert status == 2 and "was trained with a vocabulary of 457 tokens" in error_line(err), err


def test_resume_refuses_max_steps_below_the_checkpoint(run, corpus, tmp_path, capsys):
    copy = resumable_copy(run, tmp_path / "run")
    status, _, err = command(capsys, "train", *with_value(tiny_args(corpus, copy, *RUN_ARGS, "--resume"),
                                                          "--max_steps", "3"))
    assert status == 2 and "--max_steps 3 is below the step checkpoint-4 reached (4)" in error_line(err)
    assert not (copy / "final").exists()


def test_resume_may_change_what_the_readme_lists_and_the_summary_records_it(run, corpus, tmp_path, caplog):
    from vanilla_transformer.training.run_record import MAY_CHANGE

    copy = resumable_copy(run, tmp_path / "run")
    moved = tmp_path / "moved.tsv"
    shutil.copy(corpus / "train.tsv", moved)  # the same data under another name
    argv = with_value(tiny_args(corpus, copy, *RUN_ARGS, "--resume"), "--train_file", str(moved))
    argv = with_value(with_value(argv, "--max_steps", "6"), "--logging_steps", "1")
    train(*parse_args(argv))
    summary = json.loads((copy / "final" / "run_summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["resumes"] == [{"from_step": 4, "changed": {"max_steps": [4, 6], "logging_steps": [2, 1]}}]
    assert summary["hyperparameters"]["max_steps"] == 6
    assert summary["data"]["files"]["train_file"]["path"] == str(moved)
    readme = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    table = readme[readme.index("## What `--resume` may change"):readme.index("**One writer per output folder.**")]
    for name in MAY_CHANGE:
        assert f"`--{name}`" in table, name


def test_the_summary_records_the_vocabulary_the_run_used(run, corpus):
    summary = json.loads((run / "final" / "run_summary.json").read_text())
    from transformers import AutoTokenizer

    assert summary["hyperparameters"]["vocab_size"] == len(AutoTokenizer.from_pretrained(run / "final"))
    assert summary["data"]["tokenizer"]["sha256"]
    assert summary["data"]["files"]["train_file"]["size"] == (corpus / "train.tsv").stat().st_size


# ---------------------------------------------------------------------------------------------------------------------
# One writer per output folder
# ---------------------------------------------------------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from vanilla_transformer.base.locks import OutputLock
    OutputLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def hold_lock(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_into_the_same_output_dir_refuses_naming_the_first(corpus, tmp_path, capsys):
    output_dir = tmp_path / "out"
    holder = hold_lock(output_dir)  # a run that has started writing there
    try:
        status, _, err = command(capsys, "train", *tiny_args(corpus, output_dir, "--max_steps", "1", *FAST))
        line = error_line(err)
        assert status == 1, err
        assert f"--output_dir {output_dir} is in use by another run: process {holder.pid} on" in line, line
        assert sorted(p.name for p in output_dir.iterdir()) == [".vanilla-transformer.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_lock_is_taken_over_with_a_warning_and_released_at_the_end(corpus, tmp_path, caplog):
    output_dir = tmp_path / "out"
    holder = hold_lock(output_dir)
    holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays, the lock does not
    holder.wait()
    assert (output_dir / ".vanilla-transformer.lock").is_file()
    with caplog.at_level(logging.WARNING):
        train(*parse_args(tiny_args(corpus, output_dir, "--max_steps", "1", *FAST)))
    assert f"taking over the lock left by process {holder.pid}" in caplog.text
    assert (output_dir / "final" / "model.safetensors").is_file()
    assert not (output_dir / ".vanilla-transformer.lock").exists()  # released when the run ended


def test_the_lock_excludes_a_second_holder_and_frees_on_release(tmp_path):
    from vanilla_transformer.base.locks import OutputFolderBusy, OutputLock

    with OutputLock(tmp_path / "out"):
        with pytest.raises(OutputFolderBusy, match=f"process {os.getpid()} on "):
            OutputLock(tmp_path / "out").acquire()
    with OutputLock(tmp_path / "out"):  # free again
        pass


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers training cannot use, tokenizers that do not belong to the model, out-of-range floats
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token, meaning", [("eos_token", "end-of-sentence"), ("pad_token", "padding")])
def test_a_tokenizer_without_end_or_pad_token_is_refused(run, corpus, tmp_path, capsys, token, meaning):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    setattr(tokenizer, token, None)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    assert getattr(AutoTokenizer.from_pretrained(tmp_path / "tokenizer"), f"{token}_id") is None
    argv = tiny_args(corpus, tmp_path / "out", "--max_steps", "1", *FAST)
    argv = argv[:argv.index("--vocab_size")] + argv[argv.index("--vocab_size") + 2:]
    status, _, err = command(capsys, "train", *argv, "--tokenizer", tmp_path / "tokenizer")
    assert status == 2 and f"has no {meaning} token ({token})" in error_line(err), err
    assert not (tmp_path / "out").exists()


def test_inspect_refuses_a_tokenizer_that_does_not_belong_to_the_model(run, corpus, tmp_path, capsys):
    other = tmp_path / "other"
    train(*parse_args(tiny_args(corpus, other, "--max_steps", "1", "--vocab_size", "486", *FAST)))
    status, _, err = command(capsys, "inspect", run / "final", "--src", "uno dos", "--out", tmp_path / "figures",
                             "--tokenizer", other / "tokenizer")
    assert status == 2 and "does not belong to the model" in error_line(err) and "tokens" in error_line(err), err
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "{final}", "--file", "{corpus}/test.tsv", "--source_lang", "es", "--target_lang", "en",
      "--output", "{tmp}/hyp.txt", "--length_penalty", "nan"], "--length_penalty must be a finite number, got nan"),
    (["translate", "{final}", "uno", "--length_penalty", "inf"], "--length_penalty must be a finite number, got inf"),
    (["train", "--lr_scale", "nan"], "--lr_scale must be a finite number, got nan"),
    (["train", "--clip_norm", "inf"], "--clip_norm must be a finite number, got inf"),
    (["train", "--adam_epsilon", "nan"], "--adam_epsilon must be a finite number"),
    (["train", "--length_penalty=-inf"], "--length_penalty must be a finite number"),
])
def test_float_options_must_be_finite(run, corpus, tmp_path, capsys, argv, message):
    values = dict(final=run / "final", corpus=corpus, tmp=tmp_path)
    argv = [a.format(**values) for a in argv]
    if argv[0] == "train":
        argv = ["train", *tiny_args(corpus, tmp_path / "out", "--max_steps", "1"), *argv[1:]]
    status, _, err = command(capsys, *argv)
    assert status == 2 and message in error_line(err), err


def test_published_folders_carry_the_papers_decoding_whatever_training_evaluated_with(run):
    """The run evaluated greedily (--num_beams 1); final/, best/ and the checkpoints decode as the README promises
    for published models (beam 4, length penalty 0.6, §6.1), and the summary records what evaluation used."""
    for folder in ("final", "best", "checkpoint-2"):
        generation = json.loads((run / folder / "generation_config.json").read_text())
        assert (generation["num_beams"], generation["length_penalty"]) == (4, 0.6), folder
    summary = json.loads((run / "final" / "run_summary.json").read_text())
    assert summary["hyperparameters"]["num_beams"] == 1
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "generation_config.json` (beam 4" in " ".join(readme.split())


# ---------------------------------------------------------------------------------------------------------------------
# translate: sentences after the options; the export's printed hint runs; stdin that is not text
# ---------------------------------------------------------------------------------------------------------------------


def test_translate_takes_sentences_after_the_options(run, capsys):
    assert cli.main(["translate", str(run / "final"), "--num_beams", "1", "uno dos", "tres"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> tuple[Path, str]:
    """(the CTranslate2 export of final/, the command `export` printed)."""
    folder = tmp_path_factory.mktemp("ct2") / "export dir"  # a space: the printed command must quote it
    stdout = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, stdout
    try:
        assert cli.main(["export", str(run / "final"), str(folder), "--format", "ctranslate2"]) == 0
    finally:
        sys.stdout = sys_stdout
    return folder, stdout.getvalue()


def test_the_export_hint_runs_as_printed(exported, capsys):
    folder, printed = exported
    hint = printed[printed.index("translate with: ") + len("translate with: "):].strip()
    argv = shlex.split(hint)
    assert argv[:2] == ["vanilla-transformer", "translate"] and argv[-1] == "..."
    assert cli.main(argv[1:-1] + ["uno dos"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_translate_names_a_stdin_line_that_is_not_utf8(run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"uno dos\n\xff\xfe\x00garbage\n")))
    status, out, err = command(capsys, "translate", run / "final", "--num_beams", "1")
    assert status == 1 and "stdin, line 2: not valid UTF-8" in error_line(err), err
    assert out == ""


# ---------------------------------------------------------------------------------------------------------------------
# Folders that are not what the command expects: one line naming the file and the fix
# ---------------------------------------------------------------------------------------------------------------------


def broken_copy(run: Path, tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / name
    shutil.copytree(run / "final", folder)
    config = folder / "config.json"
    text = edit(json.loads(config.read_text()))
    config.write_text(text if isinstance(text, str) else json.dumps(text))
    return folder


BROKEN_CONFIGS = {
    "vocab": (lambda c: {**c, "vocab_size": c["vocab_size"] + 7}, "the weights do not fit config.json"),
    "no_model_type": (lambda c: {k: v for k, v in c.items() if k != "model_type"}, "has no model_type"),
    "bart": (lambda c: {**c, "model_type": "bart"}, "is the config of a 'bart' model"),
    "list": (lambda c: [c], "holds a JSON list"),
    "empty": (lambda c: "", "cannot be read as JSON"),
}


@pytest.mark.parametrize("name", BROKEN_CONFIGS)
@pytest.mark.parametrize("verb", ["translate", "evaluate", "inspect", "export"])
def test_a_broken_model_folder_is_one_line_naming_it(run, corpus, tmp_path, capsys, monkeypatch, name, verb):
    edit, message = BROKEN_CONFIGS[name]
    folder = broken_copy(run, tmp_path, name, edit)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # never waits for an answer (no [y/N] prompt)
    argv = {"translate": ["translate", folder, "uno"],
            "evaluate": ["evaluate", folder, "--file", corpus / "test.tsv", "--source_lang", "es", "--target_lang",
                         "en", "--output", tmp_path / "hyp.txt"],
            "inspect": ["inspect", folder, "--src", "uno", "--out", tmp_path / "figures"],
            "export": ["export", folder, tmp_path / "ct2", "--format", "ctranslate2"]}[verb]
    status, _, err = command(capsys, *argv)
    line = error_line(err)
    assert status == 2 and message in line and name in line, line


@pytest.mark.parametrize("given, message", [
    ("tokenizer", "holds a tokenizer but no model (no config.json)"),
    ("run", "is a training run's --output_dir, not a model folder (no config.json): give its final/"),
])
def test_a_tokenizer_or_run_folder_given_as_the_model(run, tmp_path, capsys, given, message):
    folder = {"tokenizer": run / "tokenizer", "run": run}[given]
    for argv in (["export", folder, tmp_path / "ct2", "--format", "ctranslate2"], ["translate", folder, "uno"]):
        status, _, err = command(capsys, *argv)
        assert status == 2 and message in error_line(err), err


def test_an_export_into_an_unwritable_place_names_that_place(run, capsys):
    status, _, err = command(capsys, "export", run / "final", "/proc/vanilla-export", "--format", "ctranslate2")
    line = error_line(err)
    assert status == 2 and "/proc/vanilla-export cannot be written" in line and ".tmp" not in line, line


def test_an_export_without_engine_ctranslate2_says_so(exported, capsys):
    folder, _ = exported
    status, _, err = command(capsys, "translate", folder, "uno")
    assert status == 2 and "is a CTranslate2 export" in error_line(err) and "--engine ctranslate2" in err


@pytest.mark.parametrize("damage, message", [
    ("truncated model.bin", "CTranslate2 cannot load the export"),
    ("garbled decoding.json", "decoding.json cannot be read as JSON"),
    ("empty config.json", "config.json cannot be read as JSON"),
    ("no tokenizer", "tokenizer is missing or holds no tokenizer"),
    ("empty tokenizer", "tokenizer is missing or holds no tokenizer"),
])
def test_a_damaged_export_is_one_line_naming_the_file(exported, tmp_path, capsys, damage, message):
    folder = tmp_path / "ct2"
    shutil.copytree(exported[0], folder)
    if damage == "truncated model.bin":
        with open(folder / "model.bin", "r+b") as handle:
            handle.truncate(100)
    elif damage == "garbled decoding.json":
        (folder / "decoding.json").write_bytes(b"{\x00\x01 not json")
    elif damage == "empty config.json":
        (folder / "config.json").write_text("")
    else:
        shutil.rmtree(folder / "tokenizer")
        if damage == "empty tokenizer":
            (folder / "tokenizer").mkdir()
    status, _, err = command(capsys, "translate", folder, "uno", "--engine", "ctranslate2")
    line = error_line(err)
    assert status == 2 and message in line and str(folder) in line, line


def test_average_config_from_an_export_or_another_model(run, exported, tmp_path, capsys):
    checkpoints = [run / "checkpoint-2", run / "checkpoint-4"]
    status, _, err = command(capsys, "average", *checkpoints, "--output", tmp_path / "avg", "--config_from",
                             exported[0])
    assert status == 2 and "--config_from" in error_line(err) and "is a CTranslate2 export" in err, err

    bart = broken_copy(run, tmp_path, "bart", lambda c: {**c, "model_type": "bart"})
    status, _, err = command(capsys, "average", *checkpoints, "--output", tmp_path / "avg", "--config_from", bart)
    assert status == 2 and "is the config of a 'bart' model" in error_line(err), err

    wider = tiny_model_folder(tmp_path / "wider", run / "final", d_model=64)
    status, _, err = command(capsys, "average", *checkpoints, "--output", tmp_path / "avg", "--config_from", wider)
    assert status == 1 and "the weights do not fit the config of" in error_line(err), err
    assert not (tmp_path / "avg").exists()


# ---------------------------------------------------------------------------------------------------------------------
# The last tracebacks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, tgt", [("", None), ("   ", None), ("uno", "")])
def test_inspect_refuses_an_empty_sentence(run, tmp_path, capsys, src, tgt):
    argv = ["inspect", run / "final", "--src", src, "--out", tmp_path / "figures"]
    status, _, err = command(capsys, *argv, *(["--tgt", tgt] if tgt is not None else []))
    assert status == 2 and "is empty" in error_line(err), err
    assert not (tmp_path / "figures").exists()


def test_push_to_an_unreachable_endpoint_is_one_line(run):
    environment = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token",
                   "HF_HUB_DISABLE_TELEMETRY": "1"}
    pushed = subprocess.run([sys.executable, "-m", "vanilla_transformer.cli.main", "push", str(run / "final"),
                             "user/model"], capture_output=True, text=True, env=environment, timeout=300)
    assert pushed.returncode == 1, pushed.stderr
    line = error_line(pushed.stderr)
    assert "cannot reach the Hub at http://127.0.0.1:9" in line, line


def test_ctrl_c_while_a_command_is_importing_is_one_line(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_command", interrupted)
    try:
        status = cli.main(["evaluate", "x"])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped from the command (a traceback for the user)")
    assert status == 130
    assert capsys.readouterr().err.strip() == "vanilla-transformer evaluate: interrupted"
