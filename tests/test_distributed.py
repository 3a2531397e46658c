"""Data-parallel training is the same computation as one process on the same global batches.

Two CPU processes (torchrun, gloo) each take every other batch of the `TokenBatchSampler`; one process with two
accumulated micro-batches per update takes the same pairs of batches. The loss is normalised by the token count of
the global batch, so both runs must make the same updates: the two ranks end bit for bit equal, and equal to the
single process up to float32 rounding (the reductions add in another order).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from test_training import tiny_args, write_corpus

# Runs the trainer and saves this rank's own copy of the weights (the export only shows rank 0's).
WORKER = """
import sys, torch
from vanilla_transformer.training.arguments import parse_args
from vanilla_transformer.training.train import Trainer, setup_logging
setup_logging()
trainer = Trainer(*parse_args(sys.argv[2:]))
trainer.setup()
trainer.run()
accelerator = trainer.accelerator
state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(trainer.model).state_dict().items()}
torch.save(state, f"{sys.argv[1]}/rank{accelerator.process_index}.pt")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_match_one_process_on_the_same_global_batches(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    # Adam turns the float noise of exactly-zero gradients (the key-projection biases: softmax ignores a shift
    # shared by all keys) into full-size steps; a larger ε keeps those at the size of the noise.
    common = ["--max_steps", "6", "--eval_steps", "3", "--save_steps", "3", "--dropout", "0", "--adam_epsilon", "1e-3",
              "--report_to", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    (tmp_path / "two").mkdir()
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(worker), str(tmp_path / "two"),
         *tiny_args(corpus, tmp_path / "two" / "out", *common)],
        capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]

    (tmp_path / "one").mkdir()
    one = subprocess.run(
        [sys.executable, str(worker), str(tmp_path / "one"),
         *tiny_args(corpus, tmp_path / "one" / "out", *common, "--gradient_accumulation_steps", "2")],
        capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-4000:]

    rank0, rank1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "one" / "rank0.pt")
    assert rank0.keys() == rank1.keys() == single.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.allclose(rank0[key], single[key], rtol=1e-4, atol=1e-5), (key, (rank0[key] - single[key]).abs().max())

    summaries = [json.loads((tmp_path / run / "out" / "final" / "run_summary.json").read_text()) for run in ("two", "one")]
    assert summaries[0]["hardware"]["num_processes"] == 2 and "MULTI_CPU" in summaries[0]["hardware"]["distributed_type"]
    assert summaries[1]["hardware"]["num_processes"] == 1
    # The same global batches: the same tokens, the same validation losses.
    assert summaries[0]["target_tokens"] == summaries[1]["target_tokens"]
    assert summaries[0]["source_tokens"] == summaries[1]["source_tokens"]
    for a, b in zip(summaries[0]["evaluations"], summaries[1]["evaluations"]):
        assert abs(a["validation_loss"] - b["validation_loss"]) < 1e-4
    # Every process saved its own RNG state into the checkpoint.
    checkpoint = Path(tmp_path / "two" / "out" / "checkpoint-6")
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
