"""Which recipe a run gets when its flags leave it open (docs/training.md, "Which recipe a preset gets"): the
paper's (§5.3) for the paper's presets, the small-model one for `--preset tiny` from scratch; a flag the user gives
always wins, and `prepare` resolves the same batch size as `train`."""

import pytest

from vanilla_transformer.cli.prepare import check_arguments
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.training.arguments import build_model_config
from vanilla_transformer.training.schedule import learning_rate


def arguments(tmp_path, *extra, check=None):
    return parse_args(["--dataset", "bible", "--output_dir", str(tmp_path / "run"), *extra], check=check)


PAPER = {"learning_rate": None, "adam_beta2": 0.98, "adam_epsilon": 1e-9, "clip_norm": 0.0}
SMALL = {"learning_rate": 5e-4, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "clip_norm": 1.0}


def optimizer_of(train) -> dict:
    return {name: getattr(train, name) for name in PAPER}


@pytest.mark.parametrize("preset, warmup, max_tokens, optimizer", [
    (None, 4000, 4096, PAPER), ("base", 4000, 4096, PAPER), ("big", 4000, 4096, PAPER), ("tiny", 600, 2500, SMALL)])
def test_a_preset_from_scratch_gets_its_recipe(tmp_path, preset, warmup, max_tokens, optimizer):
    data, model, train = arguments(tmp_path, *(["--preset", preset] if preset else []))
    assert (train.lr_schedule, train.warmup_steps, data.max_tokens) == ("noam", warmup, max_tokens)
    assert optimizer_of(train) == optimizer


def test_the_small_recipe_warms_up_to_its_peak_then_decays_as_one_over_sqrt_step(tmp_path):
    _, _, train = arguments(tmp_path, "--preset", "tiny")
    rates = [learning_rate(step, 256, train) for step in (1, 300, 600, 601, 2400)]
    assert rates[2] == pytest.approx(5e-4)  # the peak, at the end of the warmup
    assert rates[1] == pytest.approx(rates[2] / 2)  # a linear warmup
    assert rates[0] < rates[1] < rates[2] > rates[3]
    assert rates[4] == pytest.approx(rates[2] / 2)  # then 1/sqrt(step)


@pytest.mark.parametrize("scale", [2.0, 1.0])
def test_a_given_lr_scale_keeps_the_papers_curve_for_the_small_preset(tmp_path, scale):
    # (even 1: how a run started before the small recipe existed is resumed on its own schedule)
    _, _, train = arguments(tmp_path, "--preset", "tiny", "--lr_scale", str(scale))
    assert train.learning_rate is None
    assert learning_rate(600, 256, train) == pytest.approx(scale * 256 ** -0.5 * 600 ** -0.5)


def test_flags_the_user_gives_win_over_the_small_recipe(tmp_path):
    data, _, train = arguments(tmp_path, "--preset", "tiny", "--warmup_steps", "4000", "--max_tokens", "4096",
                               "--learning_rate", "1e-3", "--adam_beta2", "0.98", "--adam_epsilon", "1e-9",
                               "--clip_norm", "0")
    assert (train.warmup_steps, data.max_tokens) == (4000, 4096)
    assert optimizer_of(train) == {"learning_rate": 1e-3, **{k: v for k, v in PAPER.items() if k != "learning_rate"}}


def test_flags_the_user_gives_win_over_the_papers_recipe(tmp_path):
    _, _, train = arguments(tmp_path, "--preset", "base", "--adam_beta2", "0.999", "--clip_norm", "5")
    assert (train.adam_beta2, train.adam_epsilon, train.clip_norm) == (0.999, 1e-9, 5.0)


@pytest.mark.parametrize("extra, init_std", [(["--preset", "tiny"], 0.02), (["--preset", "base"], None),
                                             ([], None),
                                             (["--preset", "tiny", "--model_overrides", "init_std=0.05"], 0.05)])
def test_the_small_recipe_initialises_from_n_0_002_unless_told(tmp_path, extra, init_std):
    _, model, _ = arguments(tmp_path, *extra)
    config = build_model_config(model, vocab_size=1000)
    assert config.init_std == init_std


def test_the_small_recipes_model_has_weights_of_std_002(tmp_path):
    _, model, _ = arguments(tmp_path, "--preset", "tiny")
    weights = VanillaTransformerForConditionalGeneration(build_model_config(model, vocab_size=1000)).state_dict()
    for name in ("model.shared.weight", "model.encoder.layers.0.self_attn.q_proj.weight",
                 "model.decoder.layers.2.ffn.fc2.weight"):
        assert weights[name].std().item() == pytest.approx(0.02, rel=0.05), name


def test_prepare_resolves_the_batch_size_train_uses(tmp_path):
    data, _, _ = arguments(tmp_path, "--preset", "tiny", check=check_arguments)
    assert data.max_tokens == 2500
    data, _, _ = arguments(tmp_path, check=check_arguments)
    assert data.max_tokens == 4096
