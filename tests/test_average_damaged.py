"""`vanilla-transformer average` names a damaged weights file (issue #27): a checkpoint whose model.safetensors was cut
short (a full disk, a killed copy) is one line naming that file, before anything is averaged or written."""

import pytest
import torch

from vanilla_transformer.cli import main as cli
from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration


def tiny_model():
    torch.manual_seed(0)
    return VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(
        vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32))


@pytest.mark.parametrize("damage", ["truncated", "not_safetensors"])
def test_average_names_a_damaged_weights_file(tmp_path, capsys, damage):
    model = tiny_model()
    for name in ("first", "second"):
        model.save_pretrained(tmp_path / name)
    weights = tmp_path / "second" / "model.safetensors"
    if damage == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[:len(data) // 2])
    else:
        weights.write_text("not a safetensors file")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["average", str(tmp_path / "first"), str(tmp_path / "second"), "--output", str(tmp_path / "avg")])
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "average: error" in line]
    assert f"{weights} cannot be read" in line and "damaged or incomplete" in line
    assert not (tmp_path / "avg").exists()
    # The intact checkpoints average as before.
    assert cli.main(["average", str(tmp_path / "first"), str(tmp_path / "first"), "--output",
                     str(tmp_path / "avg")]) == 0
