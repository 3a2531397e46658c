"""Support code of the server tests (tests/test_serve.py, tests/test_serve_limits.py): two tiny models (one trained a
few dozen steps on reversing words, one random that never ends a sentence before its length limit), their folders and
CTranslate2 exports (pytest fixtures), and real `vanilla-transformer serve` processes."""

import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest
import torch

import vanilla_transformer.modeling  # noqa: F401  (registers the Auto classes)
from vanilla_transformer.configuration.configuration_vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.deployment.ctranslate2_convert import export_ctranslate2
from vanilla_transformer.hub_card import render_card
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.translation import TransformersEngine, translate

from .toy_task import WORDS, train_toy, word_tokenizer

START_SECONDS = 180  # bounds for a server start on a busy machine (not a timing judgment: a hang guard)

SHAPE = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=2,
             encoder_ffn_dim=64, decoder_ffn_dim=48, dropout=0.0, max_position_embeddings=64, vocab_size=20,
             normalize_before=False, positional_encoding="interleaved", activation_function="relu")


def trained_model():
    """The toy task's few dozen Adam steps (support.toy_task): non-degenerate weights, imperfect translations."""
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**SHAPE, label_smoothing=0.0))
    tokenizer = word_tokenizer()
    return train_toy(model, tokenizer), tokenizer


def endless_model():
    """A random model that only ever chooses words (its logits bias rules out </s>, the special tokens and the ids
    past the tokenizer's): every sentence runs to its own length limit."""
    torch.manual_seed(1)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**SHAPE, add_final_logits_bias=True))
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[..., :4] = -1e4
        model.final_logits_bias[..., 4 + len(WORDS):] = -1e4
    return model.eval(), word_tokenizer()


def save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    render_card({"data": {"source_lang": "es", "target_lang": "en", "dataset": "bible"},
                 "test": {"bleu": 12.34, "chrf": 40.5}}, folder)
    return export_ctranslate2(model, folder.parent / f"{folder.name}-ct2", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def served_model(tmp_path_factory):
    """(model folder with a model card, CTranslate2 export, model, tokenizer) of the trained model."""
    model, tokenizer = trained_model()
    folder = tmp_path_factory.mktemp("serve") / "model"
    return folder, save(model, tokenizer, folder), model, tokenizer


@pytest.fixture(scope="session")
def endless(tmp_path_factory):
    """(model folder, CTranslate2 export, model, tokenizer) of the model that runs to its length limit."""
    model, tokenizer = endless_model()
    folder = tmp_path_factory.mktemp("serve") / "endless"
    return folder, save(model, tokenizer, folder), model, tokenizer


def sentences(count: int, seed: int, longest: int = 12) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(count)]


def alone(model, tokenizer, sentence: str) -> str:
    """The offline translation of one sentence by itself."""
    return translate(TransformersEngine(model, tokenizer), [sentence])[0]


# ---------------------------------------------------------------------------------------------------------------------
# Servers
def limit_open_files(count: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class Server:
    """A `serve` process. Unless `args` name them, `--engine transformers --workers 1`: the tests of what a server
    answers must not depend on what `auto` picks on the machine running them (tests/test_serve_defaults.py tests
    that), nor write a conversion into the user's cache."""

    def __init__(self, *args: str, log_level: str = "warning", open_files: int | None = None):
        args = tuple(map(str, args))
        for flag, pinned in (("--engine", "transformers"), ("--workers", "1")):
            if flag not in args:
                args += (flag, pinned)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.log_file = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a flood of log lines never blocks
        self.process = subprocess.Popen([sys.executable, "-m", "vanilla_transformer.cli.main", "serve",
                                         *map(str, args), "--port", "0", "--log_level", log_level],
                                        stdout=subprocess.PIPE, stderr=self.log_file, text=True, env=env,
                                        preexec_fn=(lambda: limit_open_files(open_files)) if open_files else None)
        line = self._line(START_SECONDS)
        assert " on http://127.0.0.1:" in line, line + self.log()
        self.url = line.rsplit(" on ", 1)[1].strip()

    def log(self) -> str:
        self.log_file.seek(0)
        return self.log_file.read()

    def _line(self, seconds: float) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        return self.process.stdout.readline() if ready else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def call(self, path: str, body=None, content_type: str = "application/json", method: str | None = None,
             timeout: float = 120) -> tuple[int, dict, dict]:
        """(status, answer as JSON, headers (case-insensitive))."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type} if data is not None else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status, headers = response.read(), response.status, response.headers
        except urllib.error.HTTPError as error:
            raw, status, headers = error.read(), error.code, error.headers
        try:
            return status, json.loads(raw), headers
        except json.JSONDecodeError:
            return status, {"text": raw.decode()}, headers

    def metric(self, name: str) -> float:
        """The value of one sample of /metrics (summed over its labels when the name matches several)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=60) as response:
            text = response.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")]
        return sum(values)


def run_async(coroutine):
    return asyncio.run(coroutine)
