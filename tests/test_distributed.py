"""Distributed training, run for real on CPU processes (gloo): DDP across two "nodes", FSDP2 through
`accelerate launch --config_file examples/accelerate/fsdp2.yaml`, and one process, all on the same global batches.

Every process takes every other batch of the `TokenBatchSampler`; 2 processes × 2 accumulated micro-batches per
update take the same four batches as 1 process × 4. The loss is normalised by the token count of the global batch,
so all three runs make the same updates up to float32 rounding (the reductions add in another order). Dropout is
off (its random streams differ per process) and Adam's ε is raised: the key-projection biases get exactly-zero
gradients (softmax ignores a shift shared by all keys), and Adam would turn their float noise into full-size steps.

The runs are tiny (d_model 32, one layer, 8 updates) and share one module fixture; the file takes about a minute.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu
import torch

from support.training import tiny_args, weights, write_corpus
from vanilla_transformer.base.locks import LOCK_FILE
from vanilla_transformer.cli import main as cli
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.checkpoints import average_checkpoints, list_checkpoints
from support.train_then_die import KILL_AFTER_CHECKPOINT_ENV
from vanilla_transformer.training.trainer import VALIDATION_HYPOTHESES, train

REPO = Path(__file__).resolve().parent.parent
FSDP_CONFIG = REPO / "examples" / "accelerate" / "fsdp2.yaml"
COMMON = ["--max_steps", "8", "--eval_steps", "4", "--save_steps", "4", "--keep_last", "2", "--dropout", "0",
          "--adam_epsilon", "1e-3", "--eval_samples", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# Runs the trainer and saves this rank's own copy of the weights (the export only shows rank 0's).
WORKER = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from support.train_then_die import install
install()  # KILL_AFTER_CHECKPOINT=N: die right after checkpoint-N
from vanilla_transformer.cli.train import parse_args, setup_logging
from vanilla_transformer.training.trainer import Trainer
setup_logging()
trainer = Trainer(*parse_args(sys.argv[2:]))
trainer.setup()
trainer.run()
accelerator = trainer.accelerator
state = {{k: v.detach().clone() for k, v in accelerator.unwrap_model(trainer.model).state_dict().items()}}
torch.save(state, f"{{sys.argv[1]}}/rank{{accelerator.process_index}}.pt")
"""

# strace logs which process opens which file for writing and renames what (C++ and Rust writers included).
STRACE = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=open,openat,creat,rename,renameat,renameat2",
          "-e", "signal=none", "-s", "4096"]


def strace_works() -> bool:
    """strace is installed and may trace here (containers can forbid ptrace)."""
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run([*STRACE, "-o", os.devnull, sys.executable, "-c", "pass"], capture_output=True, timeout=60)
    return probe.returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_fsdp(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """What a user types: accelerate launch with the example FSDP2 config, two processes (with KILL_AFTER_CHECKPOINT
    in `env`: the training of tests/support/train_then_die.py, killed right after that checkpoint)."""
    program = [str(Path(__file__).parent / "support" / "train_then_die.py")] \
        if KILL_AFTER_CHECKPOINT_ENV in (env or {}) else ["-m", "vanilla_transformer.training.train"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
               "--num_processes", "2", "--main_process_port", str(free_port()), *program, *args]
    return subprocess.run(command, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=300)


def launch_two_nodes(folder: Path, args_of_node, env: dict | None = None, trace: bool = False,
                     tag: str = "run") -> list[dict]:
    """`torchrun --nnodes 2 --nproc_per_node 1 --node_rank {0,1} --rdzv-endpoint 127.0.0.1:PORT WORKER ...`, the two
    "nodes" started side by side on this machine; returns each node's exit code and log (and strace log)."""
    port, nodes = free_port(), []
    for rank in (0, 1):
        log = folder / f"node{rank}-{tag}.log"
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--node_rank", str(rank), "--rdzv-endpoint", f"127.0.0.1:{port}", str(folder / "worker.py"),
                   str(folder), *args_of_node(rank)]
        trace_log = folder / f"node{rank}-{tag}.strace"
        if trace:
            command = [*STRACE, "-o", str(trace_log), *command]
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True,
                                       env={**ENV, **(env or {})})
        nodes.append({"process": process, "log": log, "strace": trace_log if trace else None})
    for node in nodes:
        node["returncode"] = node["process"].wait(timeout=300)
        node["output"] = node["log"].read_text()
    return nodes


def summary(folder: Path) -> dict:
    return json.loads((folder / "run_summary.json").read_text())


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (4 micro-batches per update); two nodes with DDP (2 × 2), killed by SIGKILL after checkpoint-4
    and resumed; FSDP2 (2 × 2) straight through, and killed and resumed likewise."""
    root = tmp_path_factory.mktemp("distributed")
    start = [time.perf_counter()]

    def lap(name):  # shown with pytest -s
        print(f"{name}: {time.perf_counter() - start[0]:.1f} s")
        start[0] = time.perf_counter()

    corpus = write_corpus(root / "corpus")
    out = {"root": root, "corpus": corpus}

    train(*parse_args(tiny_args(corpus, root / "one", *COMMON, "--gradient_accumulation_steps", "4")))
    out["one"] = root / "one"
    lap("one process")

    nodes = root / "nodes"
    nodes.mkdir()
    (nodes / "worker.py").write_text(WORKER)
    trace = strace_works()
    args = tiny_args(corpus, nodes / "out", *COMMON, "--gradient_accumulation_steps", "2")
    killed = launch_two_nodes(nodes, lambda rank: args, env={KILL_AFTER_CHECKPOINT_ENV: "4"}, trace=trace,
                              tag="killed")
    out["nodes_killed_checkpoints"] = [p.name for p in list_checkpoints(nodes / "out")]
    out["nodes_killed_final"] = (nodes / "out" / "final").exists()
    lap("two nodes, killed")
    resumed = launch_two_nodes(nodes, lambda rank: [*args, "--resume"], trace=trace, tag="resumed")
    lap("two nodes, resumed")
    out.update(nodes=nodes, nodes_killed=killed, nodes_resumed=resumed, traced=trace)

    fsdp = launch_fsdp(*tiny_args(corpus, root / "fsdp", *COMMON, "--gradient_accumulation_steps", "2"))
    assert fsdp.returncode == 0, fsdp.stderr[-4000:]
    lap("fsdp")
    fsdp_args = tiny_args(corpus, root / "fsdp_resumed", *COMMON, "--gradient_accumulation_steps", "2")
    fsdp_killed = launch_fsdp(*fsdp_args, env={KILL_AFTER_CHECKPOINT_ENV: "4"})
    out["fsdp_killed_checkpoints"] = [p.name for p in list_checkpoints(root / "fsdp_resumed")]
    out["fsdp_killed_final"] = (root / "fsdp_resumed" / "final").exists()
    lap("fsdp, killed")
    fsdp_resumed = launch_fsdp(*fsdp_args, "--resume")
    lap("fsdp, resumed")
    out.update(fsdp=root / "fsdp", fsdp_log=fsdp.stderr, fsdp_killed=fsdp_killed, fsdp_resumed=fsdp_resumed)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The same updates however the global batch is split (gradient accumulation × processes, DDP, FSDP2)
# ---------------------------------------------------------------------------------------------------------------------


def test_two_processes_times_two_micro_batches_equal_one_process_times_four(runs):
    """DDP (two nodes) and FSDP2 (2 processes × 2 micro-batches) end with the weights of 1 process × 4."""
    assert all(node["returncode"] == 0 for node in runs["nodes_resumed"]), runs["nodes_resumed"][0]["output"][-4000:]
    single = weights(runs["one"] / "final")
    for name in ("nodes/out", "fsdp"):
        exported = weights(runs["root"] / name / "final")
        assert exported.keys() == single.keys()
        for key in single:
            torch.testing.assert_close(exported[key], single[key], rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
    # Not trivially equal: the updates moved the weights far more than the tolerance.
    first = weights(runs["one"] / "checkpoint-4")
    assert max_difference(single, first) > 1e-2

    one, ddp, fsdp = (summary(runs["root"] / name / "final") for name in ("one", "nodes/out", "fsdp"))
    assert one["hardware"]["num_processes"] == 1
    assert ddp["hardware"]["num_processes"] == 2 and ddp["hardware"]["distributed_type"] == "DistributedType.MULTI_CPU"
    assert fsdp["hardware"]["num_processes"] == 2 and fsdp["hardware"]["distributed_type"] == "DistributedType.FSDP"
    assert "FSDP2 on 2 CPU processes" in runs["fsdp_log"]
    for other in (ddp, fsdp):  # the same global batches: the same tokens, the same validation losses
        assert other["target_tokens"] == one["target_tokens"] and other["source_tokens"] == one["source_tokens"]
        for a, b in zip(other["evaluations"], one["evaluations"]):
            assert abs(a["validation_loss"] - b["validation_loss"]) < 1e-4


def test_fsdp_checkpoints_are_sharded_by_process(runs):
    checkpoint = runs["fsdp"] / "checkpoint-8"
    for folder in ("pytorch_model_fsdp_0", "optimizer_0"):  # Accelerate's sharded state: one file per process
        assert sorted(p.name for p in (checkpoint / folder).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# FSDP2: exact resume, checkpoints as model folders, averaging, evaluation
# ---------------------------------------------------------------------------------------------------------------------


def test_fsdp_resume_after_sigkill_is_bitwise_exact(runs):
    killed, resumed = runs["fsdp_killed"], runs["fsdp_resumed"]
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert runs["fsdp_killed_checkpoints"] == ["checkpoint-4"] and not runs["fsdp_killed_final"]
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr

    straight, again = weights(runs["fsdp"] / "final"), weights(runs["root"] / "fsdp_resumed" / "final")
    assert straight.keys() == again.keys()
    for key in straight:
        assert torch.equal(straight[key], again[key]), key
    a, b = summary(runs["fsdp"] / "final"), summary(runs["root"] / "fsdp_resumed" / "final")
    for key in ("steps", "target_tokens", "source_tokens", "evaluations"):
        assert a[key] == b[key], key


def test_fsdp_checkpoints_load_with_from_pretrained_and_average(runs, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    fsdp = runs["fsdp"]
    assert [p.name for p in list_checkpoints(fsdp)] == ["checkpoint-4", "checkpoint-8"]
    final = weights(fsdp / "final")
    last = weights(fsdp / "checkpoint-8")  # the gathered copy the trainer adds to each FSDP checkpoint
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in final)

    model = AutoModelForSeq2SeqLM.from_pretrained(fsdp / "final")  # a plain process, no torch.distributed
    assert model.lm_head.weight is model.model.shared.weight
    assert all(torch.equal(model.state_dict()[k], t) for k, t in final.items())
    AutoModelForSeq2SeqLM.from_pretrained(fsdp / "checkpoint-4")

    assert cli.main(["average", "--last", "2", "--run_dir", str(fsdp), "--output", str(tmp_path / "avg")]) == 0
    averaged, first = weights(tmp_path / "avg"), weights(fsdp / "checkpoint-4")
    assert averaged.keys() == final.keys()
    for key in final:
        assert torch.equal(averaged[key], ((first[key].double() + last[key].double()) / 2).float()), key
    assert not torch.equal(averaged["model.shared.weight"], last["model.shared.weight"])
    assert all(torch.equal(average_checkpoints([fsdp / "checkpoint-4", fsdp / "checkpoint-8"])[k], t)
               for k, t in averaged.items())


def test_fsdp_evaluation_equals_one_process_evaluation_of_the_same_weights(runs, tmp_path, capsys):
    """Beam search on the sharded model (each process half of the sentences, `synced_gpus`) gives the translations,
    BLEU and chrF that one plain process gets from the exported weights."""
    best = runs["fsdp"] / "best"
    record = summary(best)["validation"]
    sharded = (best / VALIDATION_HYPOTHESES).read_text().splitlines()
    output = tmp_path / "hypotheses.txt"
    assert cli.main(["evaluate", str(best), "--file", str(runs["corpus"] / "valid.tsv"), "--source_lang", "es",
                     "--target_lang", "en", "--output", str(output), "--batch_size", "16", "--json"]) == 0
    capsys.readouterr()
    plain = output.read_text().splitlines()
    references = [line.split("\t")[1] for line in (runs["corpus"] / "valid.tsv").read_text().splitlines()[1:]]
    assert len(sharded) == len(references) == 16
    assert sharded == plain
    assert record["bleu"] == sacrebleu.corpus_bleu(plain, [references]).score
    assert record["chrf"] == sacrebleu.corpus_chrf(plain, [references]).score > 0


# ---------------------------------------------------------------------------------------------------------------------
# Two nodes sharing --output_dir
# ---------------------------------------------------------------------------------------------------------------------


def test_two_nodes_train_checkpoint_resume_and_export(runs):
    killed, resumed = runs["nodes_killed"], runs["nodes_resumed"]
    assert all(node["returncode"] != 0 for node in killed)
    assert all("killing this process with SIGKILL" in node["output"] for node in killed)
    assert runs["nodes_killed_checkpoints"] == ["checkpoint-4"] and not runs["nodes_killed_final"]
    assert all(node["returncode"] == 0 for node in resumed), resumed[1]["output"][-4000:]
    assert all("resumed from" in node["output"] for node in resumed)

    nodes = runs["nodes"]
    rank0, rank1 = (torch.load(nodes / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    exported = weights(nodes / "out" / "final")
    assert all(torch.equal(rank0[k], t) for k, t in exported.items())
    for step in (4, 8):
        checkpoint = nodes / "out" / f"checkpoint-{step}"
        assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert not [p for p in (nodes / "out").iterdir() if p.name.startswith((".tmp-", ".old-"))]


def written_and_renamed(trace: Path, root: Path) -> tuple[set[str], list[tuple[str, str]]]:
    """Paths under `root` that `trace` shows opened for writing, and the (source, target) renames under it."""
    root = str(root)
    written, renamed = set(), []
    opened = re.compile(r'\b(?:open|openat|creat)\((?:AT_FDCWD, |\d+, )?"([^"]+)", ([A-Z_|]+)')
    moved = re.compile(r'\brename(?:at2?)?\((?:AT_FDCWD, |\d+, )?"([^"]+)", (?:AT_FDCWD, |\d+, )?"([^"]+)"')
    for line in trace.read_text(errors="replace").splitlines():
        match = opened.search(line)
        if match and match.group(1).startswith(root) and re.search(r"O_WRONLY|O_RDWR|O_CREAT", match.group(2)):
            written.add(match.group(1))
        match = moved.search(line)
        if match and match.group(2).startswith(root):
            renamed.append((match.group(1), match.group(2)))
    return written, renamed


def is_temporary(path: str, root: Path) -> bool:
    """Written under a name nobody reads: a `.tmp-*`/`.old-*` folder or file, or a `.name.tmp` file."""
    parts = Path(path).relative_to(root).parts
    return any(p.startswith((".tmp-", ".old-")) for p in parts) or (parts[-1].startswith(".")
                                                                     and parts[-1].endswith(".tmp"))


def test_two_nodes_write_each_file_from_one_process_and_show_no_partial_file(runs):
    if not runs["traced"]:
        pytest.skip("strace is not installed or may not trace here: which process wrote which file cannot be "
                    "observed")
    nodes, out = runs["nodes"], runs["nodes"] / "out"
    writers: dict[str, set[int]] = {}
    for rank in (0, 1):
        for segment in ("killed", "resumed"):
            written, renamed = written_and_renamed(nodes / f"node{rank}-{segment}.strace", out)
            for path in written:
                writers.setdefault(path, set()).add(rank)
                if Path(path).name == LOCK_FILE:  # the output folder's lock: opened to be locked, not read as data
                    continue
                # No file is written under the name a reader uses: a crash leaves no half file there.
                assert is_temporary(path, out), path
            for source, target in renamed:  # a rename writes its target's name (safetensors, for one, writes so)
                writers.setdefault(target, set()).add(rank)
                assert is_temporary(source, out) or is_temporary(target, out), (source, target)
    assert writers, "strace saw no write under the output directory"
    shared = sorted(path for path, ranks in writers.items() if len(ranks) > 1)
    assert not shared, f"written by both ranks: {shared}"
    ranks_by_name = {}
    for path, ranks in writers.items():  # (a temporary `.name.<8 random characters>.tmp` counts as `.name.tmp`)
        ranks_by_name.setdefault(re.sub(r"\.[a-z0-9_]{8}\.tmp$", ".tmp", Path(path).name), set()).update(ranks)
    # The main process writes the model, the optimizer, the exports and takes the folder's lock; each rank only its
    # own RNG state.
    assert ranks_by_name["random_states_1.pkl"] == {1} and ranks_by_name["random_states_0.pkl"] == {0}
    assert ranks_by_name[LOCK_FILE] == {0}
    for name in ("model.safetensors", "optimizer.bin", ".trainer_state.json.tmp", "tokenizer.json"):
        assert ranks_by_name[name] == {0}, name


def test_two_nodes_with_separate_output_dirs_stop_with_a_clear_error(tmp_path):
    """Each node with its own local disk: the run stops at the start on both nodes, naming the problem."""
    corpus = write_corpus(tmp_path / "corpus")
    (tmp_path / "worker.py").write_text(WORKER)
    nodes = launch_two_nodes(tmp_path, lambda rank: tiny_args(corpus, tmp_path / f"local{rank}" / "out",
                                                               "--max_steps", "2"))
    for node in nodes:
        assert node["returncode"] != 0
        assert "is not shared by all processes: rank 1 on" in node["output"], node["output"][-3000:]
        assert "Checkpoints, the tokenizer and --resume need one directory that every node mounts" in node["output"]
    assert not (tmp_path / "local0" / "out" / "tokenizer").exists()
    assert not list(tmp_path.glob("local*/out/checkpoint-*"))
