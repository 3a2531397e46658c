"""Which recipe a run gets when its flags leave it open (docs/training.md, "Which recipe a preset gets"): the
paper's (§5.3) for the paper's presets, the small-model one for `--preset tiny` from scratch; a flag the user gives
always wins, and `prepare` resolves the same batch size as `train`."""

import pytest

from vanilla_transformer.cli.prepare import check_arguments
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.schedule import learning_rate


def arguments(tmp_path, *extra, check=None):
    return parse_args(["--dataset", "bible", "--output_dir", str(tmp_path / "run"), *extra], check=check)


@pytest.mark.parametrize("preset, warmup, max_tokens", [(None, 4000, 4096), ("base", 4000, 4096),
                                                        ("big", 4000, 4096), ("tiny", 600, 2500)])
def test_a_preset_from_scratch_gets_its_recipe(tmp_path, preset, warmup, max_tokens):
    data, model, train = arguments(tmp_path, *(["--preset", preset] if preset else []))
    assert (train.lr_schedule, train.warmup_steps, data.max_tokens, train.learning_rate) == (
        "noam", warmup, max_tokens, None)


def test_the_small_recipe_peaks_on_the_papers_curve(tmp_path):
    _, _, train = arguments(tmp_path, "--preset", "tiny")
    rates = [learning_rate(step, 256, train) for step in (1, 300, 600, 601, 2400)]
    assert rates[2] == pytest.approx(256 ** -0.5 * 600 ** -0.5)  # the peak, at the end of the warmup
    assert rates[0] < rates[1] < rates[2] > rates[3]
    assert rates[4] == pytest.approx(rates[2] / 2)  # then 1/sqrt(step)


def test_flags_the_user_gives_win_over_the_small_recipe(tmp_path):
    data, _, train = arguments(tmp_path, "--preset", "tiny", "--warmup_steps", "4000", "--max_tokens", "4096")
    assert (train.warmup_steps, data.max_tokens) == (4000, 4096)


def test_prepare_resolves_the_batch_size_train_uses(tmp_path):
    data, _, _ = arguments(tmp_path, "--preset", "tiny", check=check_arguments)
    assert data.max_tokens == 2500
    data, _, _ = arguments(tmp_path, check=check_arguments)
    assert data.max_tokens == 4096
