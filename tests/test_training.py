"""Training with Accelerate: arguments, the loop, checkpoints and exact resume, averaging, export, evaluation.

Tiny models (d_model 32, one layer) on a tiny synthetic corpus (word-for-word "Spanish" → "English") written to a
temporary folder (tests/support/training.py), so the whole file runs in about a minute on two CPU cores.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

import vanilla_transformer.modeling  # noqa: F401  (registers the Auto classes)
from support.train_then_die import KILL_AFTER_CHECKPOINT_ENV
from vanilla_transformer.cli import main as cli
from vanilla_transformer.cli import train as train_command
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training import step as step_module
from vanilla_transformer.training.checkpoints import average_checkpoints, list_checkpoints, rotate_checkpoints
from vanilla_transformer.training.export import save_model_folder
from vanilla_transformer.training.schedule import build_optimizer, noam_lr
from vanilla_transformer.training.step import NonFiniteLossError, batch_losses
from vanilla_transformer.training.trainer import train
from support.training import tiny_args, weights, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


TRAIN_THEN_DIE = Path(__file__).parent / "support" / "train_then_die.py"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m vanilla_transformer.training.train ARGS`; with KILL_AFTER_CHECKPOINT in `env`, the same training
    killed by SIGKILL right after that checkpoint (tests/support/train_then_die.py)."""
    program = [str(TRAIN_THEN_DIE)] if KILL_AFTER_CHECKPOINT_ENV in (env or {}) else \
        ["-m", "vanilla_transformer.training.train"]
    return subprocess.run([sys.executable, *program, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


# ---------------------------------------------------------------------------------------------------------------------
# Arguments fail before any work, naming what is wrong
# ---------------------------------------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (["--dataset", "bible", "--train_file", "{train}", "--validation_file", "{valid}"], ["--dataset", "--train_file"]),
    (["--source_lang", "es", "--target_lang", "en"], ["--dataset", "--train_file"]),
    (["--train_file", "{train}", "--validation_file", "{valid}"], ["--source_lang", "--target_lang"]),
    (["--train_file", "{train}", "--source_lang", "es", "--target_lang", "en"], ["--validation_file"]),
    (["--train_file", "{train}", "--validation_file", "{valid}", "--source_lang", "es", "--target_lang", "en",
      "--save_steps", "150", "--eval_steps", "100"], ["--save_steps", "--eval_steps"]),
    (["--dataset", "bible", "--preset", "huge"], ["--preset", "huge"]),
    (["--dataset", "bible", "--bogus_flag", "1"], ["--bogus_flag"]),
    (["--dataset", "bible", "--tokenizer", "{corpus}", "--vocab_size", "100"], ["--vocab_size", "--tokenizer"]),
    (["--dataset", "bible", "--model_overrides", "d_modle=64"], ["--model_overrides", "d_modle"]),
    (["--dataset", "bible", "--d_model", "30", "--heads", "4"], ["d_model", "encoder_attention_heads"]),
    (["--dataset", "bible", "--source_lang", "de", "--target_lang", "en"], ["--dataset bible", "--source_lang"]),
    (["--dataset", "bible", "--resume"], ["--resume", "checkpoint"]),
    (["--dataset", "bible", "--max_time", "soon"], ["--max_time", "soon"]),
    (["--dataset", "bible", "--warmup_steps", "0", "--max_tokens", "-5"], ["--warmup_steps", "--max_tokens"]),
    (["--dataset", "bible", "--average_last", "-1", "--average_every", "0"], ["--average_last", "--average_every"]),
]


@pytest.mark.parametrize("arguments, named", BAD_ARGUMENTS, ids=[" ".join(a[:4]) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_naming_them_before_any_work(arguments, named, corpus, tmp_path, capsys):
    output_dir = tmp_path / "run"
    argv = [a.format(train=corpus / "train.tsv", valid=corpus / "valid.tsv", corpus=corpus) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        train_command.main([*argv, "--output_dir", str(output_dir)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    for name in named:
        assert name in message, message
    assert not output_dir.exists()  # nothing was done


def test_python_api_raises_value_error_naming_arguments(corpus, tmp_path):
    data, model, args = parse_args(tiny_args(corpus, tmp_path / "run"))
    data.dataset = "bible"
    with pytest.raises(ValueError, match="--dataset and --train_file"):
        train(data, model, args)
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume_or_overwrite(corpus, tmp_path, capsys):
    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    with pytest.raises(SystemExit):
        parse_args(tiny_args(corpus, tmp_path / "run"))
    message = capsys.readouterr().err
    assert "--resume" in message and "--overwrite_output_dir" in message and "checkpoint-3" in message


def test_config_file_values_and_command_line_precedence(corpus, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"train_file: {corpus / 'train.tsv'}\nvalidation_file: {corpus / 'valid.tsv'}\n"
                      "source_lang: es\ntarget_lang: en\npreset: tiny\nmax_steps: 7\nlr_scale: 3.0\n"
                      "model_overrides: {activation_function: gelu}\n")
    data, model, args = parse_args(["--config", str(config), "--max_steps", "9"])
    assert (data.source_lang, model.preset, args.lr_scale, args.max_steps) == ("es", "tiny", 3.0, 9)
    assert json.loads(model.model_overrides) == {"activation_function": "gelu"}
    config.write_text("preset: tiny\nlearn_rate: 0.1\n")  # (learning_rate is an argument: --lr_schedule's peak)
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config)])
    assert "learn_rate" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# The recipe: schedule and loss
# ---------------------------------------------------------------------------------------------------------------------


def test_learning_rate_schedule_is_the_papers():
    d_model, warmup = 512, 4000
    assert noam_lr(warmup, d_model, warmup) == pytest.approx(d_model ** -0.5 * warmup ** -0.5)
    assert noam_lr(100, d_model, warmup) == pytest.approx(100 * d_model ** -0.5 * warmup ** -1.5)  # linear warmup
    assert noam_lr(4 * warmup, d_model, warmup) == pytest.approx(noam_lr(warmup, d_model, warmup) / 2)  # 1/sqrt
    assert noam_lr(10, d_model, warmup, scale=2.0) == pytest.approx(2 * noam_lr(10, d_model, warmup))

    from vanilla_transformer.training.arguments import TrainArguments

    optimizer, scheduler = build_optimizer(torch.nn.Linear(2, 2), d_model, TrainArguments(warmup_steps=warmup))
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-9
    rates = []
    for _ in range(3):
        rates.append(optimizer.param_groups[0]["lr"])  # the rate update n (1-based) uses
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([noam_lr(n, d_model, warmup) for n in (1, 2, 3)])


def test_fused_adam_is_the_default_and_updates_like_the_loop():
    from vanilla_transformer.training.arguments import TrainArguments

    updated = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        optimizer, scheduler = build_optimizer(model, 512, TrainArguments(warmup_steps=10, adam_fused=fused))
        assert optimizer.defaults["fused"] is (True if fused else None)
        for step in range(5):
            model(torch.randn(4, 8, generator=torch.Generator().manual_seed(step))).square().mean().backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        updated[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert TrainArguments().adam_fused is True
    torch.testing.assert_close(updated[True], updated[False], atol=1e-6, rtol=1e-5)


def loss_sums_as_they_were(logits, labels, label_smoothing):
    """The trainer's own copy of the label-smoothed loss before it used the model's (issue 30): the reference that
    keeps training's numbers what they were."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != -100
    nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    smooth = -log_probs.mean(dim=-1)
    return ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mul(mask).sum(), (nll * mask).sum()


def test_the_trainer_loss_is_the_models_and_what_it_was():
    from vanilla_transformer.modeling import VanillaTransformerConfig, VanillaTransformerForConditionalGeneration

    torch.manual_seed(0)
    config = VanillaTransformerConfig.tiny(vocab_size=50, d_model=32, encoder_layers=1, decoder_layers=1,
                                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                           decoder_ffn_dim=64, dropout=0.0, label_smoothing=0.1)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    labels = torch.tensor([[5, 6, 7, 2], [8, 2, -100, -100]])
    batch = {"input_ids": torch.tensor([[4, 5, 2], [6, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
             "labels": labels, "decoder_input_ids": torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])}
    loss_sum, nll_sum, tokens = batch_losses(model, batch, 0.1)
    assert int(tokens) == 6 and loss_sum.item() != pytest.approx(nll_sum.item(), rel=1e-3)  # ε does something
    # Bit for bit what the trainer computed before, ...
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert all(torch.equal(a, b) for a, b in zip((loss_sum, nll_sum), loss_sums_as_they_were(logits, labels, 0.1)))
    # ... and what the model's loss is (the mean over labelled tokens; ε = 0 gives the plain NLL).
    assert torch.equal(model(**batch).loss, loss_sum / tokens)
    assert torch.equal(model(**batch, num_items_in_batch=torch.tensor(40)).loss, loss_sum / 40)
    model.config.label_smoothing = 0.0
    assert torch.equal(model(**batch).loss, nll_sum / tokens)
    # Both are sums of torch's cross-entropy (up to the order of the additions).
    flat = logits.flatten(0, 1)
    assert loss_sum.item() == pytest.approx(F.cross_entropy(flat, labels.flatten(), label_smoothing=0.1,
                                                            reduction="sum").item(), rel=1e-5)
    assert nll_sum.item() == pytest.approx(F.cross_entropy(flat, labels.flatten(), reduction="sum").item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# One real run: outputs, export, best checkpoint, evaluation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """12 updates, evaluated and saved every 4, all checkpoints kept, test set translated at the end."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    args = tiny_args(corpus, output_dir, "--test_file", str(corpus / "test.tsv"), "--max_steps", "12",
                     "--eval_steps", "4", "--save_steps", "4", "--keep_last", "0", "--do_test", "--report_to",
                     "tensorboard")
    summary = train(*parse_args(args))
    return output_dir, summary


def test_run_writes_checkpoints_best_and_final(run):
    output_dir, summary = run
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    checkpoint = output_dir / "checkpoint-8"
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json",
                 "config.json", "tokenizer.json"):
        assert (checkpoint / name).is_file(), name
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["batches_in_epoch"] + state["epoch"] > 0
    assert not [p for p in output_dir.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert summary["steps"] == 12 and summary["target_tokens"] > 0 and summary["train_seconds"] > 0
    assert [e["step"] for e in summary["evaluations"]] == [4, 8, 12]


def test_final_export_loads_with_auto_classes(run):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    output_dir, summary = run
    final = output_dir / "final"
    model = AutoModelForSeq2SeqLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert model.lm_head.weight is model.model.shared.weight
    for key, tensor in weights(final).items():
        assert torch.equal(model.state_dict()[key], tensor), key
    # The last checkpoint holds the same weights under the same names.
    assert all(torch.equal(t, weights(output_dir / "checkpoint-12")[k]) for k, t in weights(final).items())
    generation = json.loads((final / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and generation["length_penalty"] == 0.6
    assert "max_length" not in generation  # so that generate applies the §6.1 rule, source length + 50
    assert tokenizer("uno dos")["input_ids"][-1] == tokenizer.eos_token_id == model.config.eos_token_id

    saved = json.loads((final / "run_summary.json").read_text())
    for key in ("steps", "target_tokens", "train_seconds", "best_validation_bleu", "test", "hyperparameters",
                "libraries", "hardware"):
        assert key in saved, key
    assert saved["hyperparameters"]["max_tokens"] == 300 and saved["libraries"]["torch"] == torch.__version__
    assert saved["hardware"]["num_processes"] == 1


def test_best_folder_is_the_checkpoint_with_the_highest_bleu(run):
    output_dir, summary = run
    scores = [e["bleu"] for e in summary["evaluations"]]
    best = summary["evaluations"][scores.index(max(scores))]  # the first of equal scores
    assert summary["best_step"] == best["step"] and summary["best_validation_bleu"] == best["bleu"]
    best_weights = weights(output_dir / "best")
    assert all(torch.equal(t, best_weights[k]) for k, t in weights(output_dir / f"checkpoint-{best['step']}").items())
    assert json.loads((output_dir / "best" / "run_summary.json").read_text())["step"] == best["step"]


def test_test_bleu_in_summary_is_sacrebleu_of_the_exported_model(run, corpus, tmp_path, capsys):
    output_dir, summary = run
    references = [line.split("\t")[1] for line in (corpus / "test.tsv").read_text().splitlines()[1:]]
    hypotheses_file = tmp_path / "hyp.txt"
    assert cli.main(["evaluate", str(output_dir / "final"), "--file", str(corpus / "test.tsv"), "--source_lang", "es",
                     "--target_lang", "en", "--output", str(hypotheses_file), "--batch_size", "16"]) == 0
    printed = capsys.readouterr().out
    hypotheses = hypotheses_file.read_text().splitlines()
    assert hypotheses == (output_dir / "final" / "test_hypotheses.txt").read_text().splitlines()
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    assert summary["test"]["bleu"] == bleu and summary["test"]["chrf"] == chrf
    assert f"BLEU  {bleu:.2f}" in printed and f"chrF  {chrf:.2f}" in printed


def test_tensorboard_logs_training_and_evaluation(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output_dir, _ = run
    accumulator = EventAccumulator(str(output_dir / "runs" / "train"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for tag in ("train/loss", "train/lr", "train/tokens_per_second", "train/grad_norm", "train/padding_fraction",
                "eval/bleu", "eval/loss"):
        assert tag in tags, tags
    assert [e.step for e in accumulator.Scalars("eval/bleu")] == [4, 8, 12]


def test_translate_command_prints_one_line_per_sentence(run, capsys):
    output_dir, _ = run
    assert cli.main(["translate", str(output_dir / "final"), "uno dos tres", "el perro come pan"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


# ---------------------------------------------------------------------------------------------------------------------
# Averaging (§6.1)
# ---------------------------------------------------------------------------------------------------------------------


def test_average_of_two_checkpoints_is_the_elementwise_mean(run, tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM

    output_dir, _ = run
    first, second = output_dir / "checkpoint-4", output_dir / "checkpoint-8"
    assert cli.main(["average", str(first), str(second), "--output", str(tmp_path / "avg")]) == 0
    averaged, a, b = weights(tmp_path / "avg"), weights(first), weights(second)
    assert set(averaged) == set(a)
    for key in a:
        assert torch.equal(averaged[key], ((a[key].double() + b[key].double()) / 2).float()), key
    assert not torch.equal(averaged["model.shared.weight"], a["model.shared.weight"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "avg")
    assert torch.equal(model.lm_head.weight, averaged["model.shared.weight"])
    assert (tmp_path / "avg" / "tokenizer.json").is_file()

    assert cli.main(["average", "--last", "2", "--run_dir", str(output_dir), "--output", str(tmp_path / "avg2")]) == 0
    last_two = average_checkpoints([output_dir / "checkpoint-8", output_dir / "checkpoint-12"])
    assert all(torch.equal(last_two[k], t) for k, t in weights(tmp_path / "avg2").items())


def test_rotation_keeps_the_last_k(tmp_path):
    for step in (2, 4, 6, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / ".tmp-checkpoint-12").mkdir()  # an unfinished one is not a checkpoint
    rotate_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-10"]


# ---------------------------------------------------------------------------------------------------------------------
# Exact resume after SIGKILL
# ---------------------------------------------------------------------------------------------------------------------


def test_resume_after_sigkill_gives_bitwise_the_same_weights(corpus, tmp_path):
    """Dropout on, two micro-batches per update, an epoch boundary crossed after the checkpoint, evaluation between
    checkpoints: the resumed run must still end with exactly the weights of the uninterrupted one."""
    common = ["--max_steps", "8", "--save_steps", "4", "--eval_steps", "2", "--dropout", "0.1", "--max_tokens", "800",
              "--gradient_accumulation_steps", "2", "--keep_last", "1", "--eval_samples", "4",
              "--average_last", "4", "--average_every", "2"]  # snapshots 2 and 4 travel in checkpoint-4
    straight = run_cli(*tiny_args(corpus, tmp_path / "straight", *common))
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = run_cli(*tiny_args(corpus, tmp_path / "resumed", *common), env={KILL_AFTER_CHECKPOINT_ENV: "4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["checkpoint-4"]
    assert not (tmp_path / "resumed" / "final").exists()

    resumed = run_cli(*tiny_args(corpus, tmp_path / "resumed", *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert "tokenized data from the cache" in resumed.stderr and "tokenizing" not in resumed.stderr

    expected, actual = weights(tmp_path / "straight" / "final"), weights(tmp_path / "resumed" / "final")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    summaries = [json.loads((tmp_path / run / "final" / "run_summary.json").read_text())
                 for run in ("straight", "resumed")]
    assert summaries[0]["epochs"] > 1  # the data order crossed an epoch boundary
    for key in ("steps", "target_tokens", "source_tokens", "evaluations", "averaging"):
        assert summaries[0][key] == summaries[1][key], key
    assert summaries[1]["averaging"]["snapshot_steps"] == [2, 4, 6, 8]
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["checkpoint-8"]


# ---------------------------------------------------------------------------------------------------------------------
# Non-finite losses
# ---------------------------------------------------------------------------------------------------------------------


def nan_at(updates: set[int] | None):
    """A `step.batch_losses` (the training step's, not validation's) whose loss is NaN at the given (1-based)
    calls, or always (None)."""
    calls = {"n": 0}
    original = batch_losses

    def patched(model, batch, label_smoothing):
        loss_sum, nll_sum, tokens = original(model, batch, label_smoothing)
        calls["n"] += 1
        if updates is None or calls["n"] in updates:
            loss_sum = loss_sum * float("nan")
        return loss_sum, nll_sum, tokens

    return patched


def test_a_non_finite_loss_skips_the_update(corpus, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(step_module, "batch_losses", nan_at({2}))
    summary = train(*parse_args(tiny_args(corpus, tmp_path / "run", "--max_steps", "4", "--eval_steps", "4",
                                          "--save_steps", "4")))
    assert summary["steps"] == 4 and summary["skipped_steps"] == 1
    assert "update skipped" in caplog.text
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "run" / "final").values())


def test_five_non_finite_losses_in_a_row_abort(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(step_module, "batch_losses", nan_at(None))
    with pytest.raises(NonFiniteLossError, match="5 updates in a row"):
        train(*parse_args(tiny_args(corpus, tmp_path / "run", "--max_steps", "4", "--eval_steps", "4",
                                    "--save_steps", "4")))


# ---------------------------------------------------------------------------------------------------------------------
# Export hook and the command dispatcher
# ---------------------------------------------------------------------------------------------------------------------


def test_export_calls_the_model_card_hook_when_present(run, tmp_path, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    import vanilla_transformer.hub_card as hub_card

    calls = []

    def render_card(summary, out_dir):
        calls.append(summary)
        (Path(out_dir) / "README.md").write_text("card")

    monkeypatch.setattr(hub_card, "render_card", render_card, raising=False)
    model = AutoModelForSeq2SeqLM.from_pretrained(run[0] / "final")
    save_model_folder(model, None, tmp_path / "export", summary={"steps": 1})
    assert calls == [{"steps": 1}] and (tmp_path / "export" / "README.md").read_text() == "card"
    assert json.loads((tmp_path / "export" / "run_summary.json").read_text()) == {"steps": 1}


def test_cli_dispatch(monkeypatch, capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    monkeypatch.setitem(cli.COMMANDS, "push", ("no_such_module", "push"))
    with pytest.raises(SystemExit, match="cannot import vanilla_transformer.cli.no_such_module"):
        cli.main(["push", "x"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--bogus"])
    assert exit_info.value.code == 2
    assert cli.main([]) == 2 and "train" in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("vanilla-transformer")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("train", "evaluate", "average", "translate", "convert-marian", "inspect", "push"):
        assert command in result.stdout
