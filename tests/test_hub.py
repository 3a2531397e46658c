"""Hub round trips against the local Hub server (tests/support/hub_server/): transformers' own `push_to_hub` and
`from_pretrained` by branch and by commit, offline loading from the cache, remote code without the package, and
the `vanilla-transformer push` command (training/hub.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, snapshot_download
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from support.hub_server import HubServer, hub_offline, hub_server  # noqa: F401  (pytest fixtures)
from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.hub_card import front_matter, render_card
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.modeling.modeling_vanilla_transformer import AUTO_MAP
from vanilla_transformer.cli.push import main as cli
from vanilla_transformer.deployment.hub import CODE_FILES, NO_TOKEN_MESSAGE
from vanilla_transformer.training.tokenizer import train_shared_bpe

SENTENCES = [
    "el gato duerme en la casa", "the cat sleeps in the house",
    "un perro corre por el campo", "a dog runs through the field",
    "la niña lee un libro", "the girl reads a book",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_shared_bpe(SENTENCES, vocab_size=457, min_frequency=1)


def tiny_model(vocab_size: int, seed: int) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(seed)
    config = VanillaTransformerConfig.tiny(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
                                           encoder_attention_heads=2, decoder_attention_heads=2,
                                           encoder_ffn_dim=64, decoder_ffn_dim=64)
    return VanillaTransformerForConditionalGeneration(config).eval()


@torch.no_grad()
def logits(model, tokenizer) -> torch.Tensor:
    """Teacher-forced logits of two sentence pairs (padded batch)."""
    batch = tokenizer(SENTENCES[0:4:2], text_target=SENTENCES[1:4:2], return_tensors="pt", padding=True)
    return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"]).logits


def cache_is_empty() -> bool:
    cache = Path(os.environ["HF_HUB_CACHE"])
    return not cache.exists() or not any(cache.iterdir())


# ---------------------------------------------------------------------------------------------------------------------
# transformers' push_to_hub / from_pretrained
# ---------------------------------------------------------------------------------------------------------------------


def test_push_to_hub_then_pull_by_branch_and_commit_then_offline(hub_server: HubServer, hub_offline, tokenizer):
    repo = f"{hub_server.user}/tiny-es-en"
    first, second = tiny_model(len(tokenizer), seed=0), tiny_model(len(tokenizer), seed=1)
    first_commit = first.push_to_hub(repo)
    tokenizer.push_to_hub(repo)
    second_commit = second.push_to_hub(repo, revision="v2")  # a new branch, other weights
    expected = {"first": logits(first, tokenizer), "second": logits(second, tokenizer)}
    assert not torch.equal(expected["first"], expected["second"])
    on_hub = hub_server.files(repo)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", *CODE_FILES} <= set(on_hub)
    assert "model.safetensors" in hub_server.lfs_paths(repo)
    assert not any(name.endswith(".bin") for name in on_hub)

    shutil.rmtree(os.environ["HF_HUB_CACHE"])  # push_to_hub read README.md back (its model card step) into the cache
    assert cache_is_empty()
    pulled = AutoModelForSeq2SeqLM.from_pretrained(repo)
    pulled_tokenizer = AutoTokenizer.from_pretrained(repo)
    assert type(pulled) is VanillaTransformerForConditionalGeneration
    assert pulled.get_input_embeddings().weight is pulled.get_output_embeddings().weight
    assert torch.equal(logits(pulled, pulled_tokenizer), expected["first"])
    assert pulled_tokenizer(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]
    assert pulled_tokenizer.batch_decode(tokenizer(SENTENCES)["input_ids"], skip_special_tokens=True) == SENTENCES
    assert pulled.generation_config.num_beams == 4 and pulled.generation_config.length_penalty == 0.6

    by_revision = {"v2": "second", first_commit.oid: "first", second_commit.oid: "second"}
    for revision, name in by_revision.items():
        model = AutoModelForSeq2SeqLM.from_pretrained(repo, revision=revision)
        assert torch.equal(logits(model, tokenizer), expected[name]), revision

    requests_before = len(hub_server.requests)
    with hub_offline():  # everything above is in the cache now
        for revision, name in {None: "first", "v2": "second", first_commit.oid: "first"}.items():
            model = AutoModelForSeq2SeqLM.from_pretrained(repo, revision=revision)
            assert torch.equal(logits(model, tokenizer), expected[name]), revision
        offline_tokenizer = AutoTokenizer.from_pretrained(repo)
        assert offline_tokenizer(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]
    assert len(hub_server.requests) == requests_before  # offline really was offline


def test_pulled_snapshot_loads_with_remote_code_without_the_package(hub_server: HubServer, tokenizer, tmp_path):
    repo = f"{hub_server.user}/tiny-remote"
    model = tiny_model(len(tokenizer), seed=2)
    model.push_to_hub(repo)
    tokenizer.push_to_hub(repo)
    torch.save(logits(model, tokenizer), tmp_path / "expected.pt")

    shutil.rmtree(os.environ["HF_HUB_CACHE"])  # what push_to_hub read back: the pull starts from an empty cache
    snapshot = Path(snapshot_download(repo))  # the pull: every file of main
    assert {"config.json", "model.safetensors", "tokenizer.json", *CODE_FILES} <= {p.name for p in snapshot.iterdir()}
    assert json.loads((snapshot / "config.json").read_text())["auto_map"] == AUTO_MAP
    model.save_pretrained(tmp_path / "local")  # the code files on the Hub are those save_pretrained writes
    for name in CODE_FILES:
        assert (snapshot / name).read_text() == (tmp_path / "local" / name).read_text()
    modeling_source = (snapshot / "modeling_vanilla_transformer.py").read_text()
    assert "from .configuration_vanilla_transformer import" in modeling_source  # a sibling import, no package

    batch = tokenizer(SENTENCES[0:4:2], text_target=SENTENCES[1:4:2], padding=True)
    script = f"""
import sys
sys.modules["vanilla_transformer"] = None  # the package is unimportable here
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained({repo!r}, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained({repo!r})
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert tokenizer({SENTENCES[0:4:2]!r}, text_target={SENTENCES[1:4:2]!r}, padding=True)["labels"] == {batch["labels"]!r}
batch = tokenizer({SENTENCES[0:4:2]!r}, text_target={SENTENCES[1:4:2]!r}, return_tensors="pt", padding=True)
with torch.no_grad():
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).logits
assert torch.equal(logits, torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True))
print("same logits")
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": os.environ["HF_HOME"], "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"],
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1", "PATH": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same logits" in result.stdout


# ---------------------------------------------------------------------------------------------------------------------
# vanilla-transformer push
# ---------------------------------------------------------------------------------------------------------------------


def exported_folder(path: Path, tokenizer, seed: int = 3) -> VanillaTransformerForConditionalGeneration:
    """What an export looks like: save_pretrained + the tokenizer + a README."""
    model = tiny_model(len(tokenizer), seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "README.md").write_text("# My translation model\n\nHand-written card.\n", encoding="utf-8")
    return model


def test_push_command_uploads_an_exported_folder(hub_server: HubServer, tokenizer, tmp_path, capsys):
    folder = tmp_path / "final"
    model = exported_folder(folder, tokenizer)
    # An older folder: without the code files and auto_map, with a checkpoint's pickle that must stay local.
    for name in CODE_FILES:
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "optimizer.bin").write_bytes(b"not for the hub")

    status = cli([str(folder), "tiny-pushed", "--private", "--revision", "v1"])  # a bare name: the token's user
    assert status == 0
    repo = f"{hub_server.user}/tiny-pushed"
    printed = capsys.readouterr().out
    assert repo in printed and "v1" in printed

    on_hub = hub_server.files(repo, revision="v1")
    assert on_hub["README.md"].decode() == "# My translation model\n\nHand-written card.\n"  # a user's card is kept
    assert "optimizer.bin" not in on_hub
    model.save_pretrained(tmp_path / "reference")
    for name in CODE_FILES:  # written into the folder, then uploaded
        assert on_hub[name] == (tmp_path / "reference" / name).read_bytes() == (folder / name).read_bytes()
    assert json.loads(on_hub["config.json"])["auto_map"] == AUTO_MAP
    assert "model.safetensors" not in hub_server.files(repo, revision="main")  # pushed to the branch only
    assert HfApi().model_info(repo).private

    pulled = AutoModelForSeq2SeqLM.from_pretrained(repo, revision="v1")
    pulled_tokenizer = AutoTokenizer.from_pretrained(repo, revision="v1")
    assert torch.equal(logits(pulled, pulled_tokenizer), logits(model, tokenizer))
    assert pulled_tokenizer(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]


def test_push_command_rerenders_a_generated_card_with_the_repo_id(hub_server: HubServer, tokenizer, tmp_path):
    folder = tmp_path / "final"
    exported_folder(folder, tokenizer)
    summary = {"data": {"source_lang": "es", "target_lang": "en", "dataset": "bible"}, "steps": 1234,
               "test": {"bleu": 12.345, "chrf": 33.3, "split": "test", "sentences": 100}}
    (folder / "run_summary.json").write_text(json.dumps(summary))
    render_card(summary, folder)  # as the export does, before the repo id is known
    assert 'model_id = "path/to/this/folder"' in (folder / "README.md").read_text()

    assert cli([str(folder), f"{hub_server.user}/card-demo"]) == 0
    card = hub_server.files(f"{hub_server.user}/card-demo")["README.md"].decode()
    assert f'model_id = "{hub_server.user}/card-demo"' in card
    results = front_matter(card)["model-index"][0]["results"]
    assert results[0]["metrics"][0] == {"type": "bleu", "value": 12.35, "name": "BLEU"}


def test_push_command_writes_a_card_when_the_folder_has_none(hub_server: HubServer, tokenizer, tmp_path):
    folder = tmp_path / "final"
    model = exported_folder(folder, tokenizer)
    (folder / "README.md").unlink()
    assert cli([str(folder), f"{hub_server.user}/no-card"]) == 0
    card = hub_server.files(f"{hub_server.user}/no-card")["README.md"].decode()
    assert card == (folder / "README.md").read_text(encoding="utf-8")  # written into the folder, then uploaded
    assert front_matter(card)["pipeline_tag"] == "translation"
    assert f"| Parameters | {sum(p.numel() for p in model.parameters()):,} |" in card
    assert "model-index" not in front_matter(card)  # no run_summary.json: no scores to report


def test_push_command_without_a_token_stops_before_any_request(hub_server: HubServer, tokenizer, tmp_path,
                                                              capsys, monkeypatch):
    exported_folder(tmp_path / "final", tokenizer)
    monkeypatch.delenv("HF_TOKEN")  # and the fixture's HF_HOME holds no stored login
    status = cli([str(tmp_path / "final"), f"{hub_server.user}/no-token"])
    assert status != 0
    assert NO_TOKEN_MESSAGE in capsys.readouterr().err
    assert hub_server.requests == []  # not even a read: the server saw nothing, so no write


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_push_command_refuses_a_folder_that_is_not_a_model(hub_server: HubServer, tokenizer, tmp_path, capsys,
                                                           missing):
    model = exported_folder(tmp_path / "final", tokenizer)
    (tmp_path / "final" / missing).unlink()
    if missing == "model.safetensors":
        torch.save(model.state_dict(), tmp_path / "final" / "pytorch_model.bin")
    status = cli([str(tmp_path / "final"), f"{hub_server.user}/not-a-model"])
    assert status != 0
    error = capsys.readouterr().err
    assert f"{missing} missing" in error
    if missing == "model.safetensors":
        assert "pickle weights are not pushed" in error
    assert hub_server.requests == []
