"""`serve`'s defaults (#28): `--engine auto` takes CTranslate2 when it can, converting a model folder once into a
cache keyed by what the conversion reads, and keeps transformers saying why when it cannot; `--workers auto` follows
the CPU budget and the model's size; both choices are printed. And the in-process engine's thread (#31): loading and
every `generate` in one thread, never the main thread.

Models: the random tiny post-norm model of support/serving.py (its answers do not matter here, only which engine
gives them) in folders of their own; the cache is a temporary folder, never the user's.
"""

import json
import os
import sys
import threading

import pytest
from support.serving import Server, endless_model, sentences

from vanilla_transformer.cli.serve import parser as serve_parser
from vanilla_transformer.deployment.ctranslate2_cache import cache_key
from vanilla_transformer.deployment.ctranslate2_convert import export_ctranslate2
from vanilla_transformer.deployment.engines import load_engine
from vanilla_transformer.deployment.server.defaults import (MAX_AUTO_WORKERS, WEIGHT_BYTES_PER_THREAD,
                                                            choose_engine, choose_workers, cpu_budget)
from vanilla_transformer.deployment.server.engine_thread import EngineThread
from vanilla_transformer.translation import DecodingOptions, translate

MiB = 2**20


def model_folder(folder, **config):
    """A saved model folder of the random tiny model (config fields overridden by `config`)."""
    model, tokenizer = endless_model()
    for name, value in config.items():
        setattr(model.config, name, value)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return model_folder(tmp_path_factory.mktemp("defaults") / "model")


def snapshot(export):
    """What a rewrite of the cached export would change: each file's inode and modification time."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in export.rglob("*")}


# ---------------------------------------------------------------------------------------------------------------------
# --engine auto
# ---------------------------------------------------------------------------------------------------------------------


def test_auto_converts_a_model_folder_once_and_a_restart_loads_the_cached_export(folder, tmp_path):
    first = choose_engine(str(folder), "auto", "cpu", cache_dir=str(tmp_path))
    assert first.engine == "ctranslate2" and "converted" in first.reason
    assert [entry.name for entry in tmp_path.iterdir()] == [cache_key(folder)]  # no temporary folder left
    before = snapshot(tmp_path / cache_key(folder))
    again = choose_engine(str(folder), "auto", "cpu", cache_dir=str(tmp_path))
    assert again.engine == "ctranslate2" and again.folder == first.folder and "found" in again.reason
    assert snapshot(tmp_path / cache_key(folder)) == before  # not converted again
    # the cached export is the model's own export: the same translations
    texts = sentences(6, seed=4)
    exported = export_ctranslate2(str(folder), tmp_path / "exported")
    assert translate(load_engine(again.folder, "ctranslate2", "cpu"), texts) == \
        translate(load_engine(str(exported), "ctranslate2", "cpu"), texts)


def test_the_key_follows_what_the_conversion_reads(folder, tmp_path):
    copy = model_folder(tmp_path / "copy")
    assert cache_key(copy) == cache_key(folder)  # the same files elsewhere: the same export
    (copy / "README.md").write_text("a model card of my own\n")
    assert cache_key(copy) == cache_key(folder)  # not read by the conversion
    model, _ = endless_model()
    model.final_logits_bias[0, 5] += 1.0
    model.save_pretrained(copy)  # one weight changed
    assert cache_key(copy) != cache_key(folder)
    retokenized = model_folder(tmp_path / "retokenized")
    settings = json.loads((retokenized / "tokenizer_config.json").read_text())
    (retokenized / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 77}))
    assert cache_key(retokenized) != cache_key(folder)


def test_a_model_ctranslate2_cannot_convert_is_served_by_transformers_saying_why(tmp_path):
    unconvertible = model_folder(tmp_path / "mish", activation_function="mish")
    choice = choose_engine(str(unconvertible), "auto", "cpu", cache_dir=str(tmp_path / "cache"))
    assert (choice.engine, choice.folder) == ("transformers", str(unconvertible))
    assert "could not convert" in choice.reason and "activation_function 'mish'" in choice.reason
    assert not (tmp_path / "cache").exists()  # nothing written


def test_auto_keeps_transformers_without_ctranslate2_or_with_a_default_seed(folder, tmp_path, monkeypatch):
    seeded = choose_engine(str(folder), "auto", "cpu", DecodingOptions(do_sample=True, seed=3), str(tmp_path))
    assert seeded.engine == "transformers" and "seed" in seeded.reason
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # `import ctranslate2` raises ImportError
    missing = choose_engine(str(folder), "auto", "cpu", cache_dir=str(tmp_path))
    assert missing.engine == "transformers" and "not installed" in missing.reason
    assert list(tmp_path.iterdir()) == []


def test_an_export_is_served_as_it_is_and_explicit_engines_are_kept(folder, tmp_path):
    exported = export_ctranslate2(str(folder), tmp_path / "exported")
    choice = choose_engine(str(exported), "auto", "cpu", cache_dir=str(tmp_path / "cache"))
    assert (choice.engine, choice.folder) == ("ctranslate2", str(exported)) and not (tmp_path / "cache").exists()
    assert choose_engine(str(folder), "transformers", cache_dir=str(tmp_path / "cache")).engine == "transformers"
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------------------------------
# --workers auto
# ---------------------------------------------------------------------------------------------------------------------

DEMO = 24 * 10**6  # bytes of the make-demo model's float32 weights, about (6 M parameters)


@pytest.mark.parametrize("cpus, weights, workers, threads", [
    (1, DEMO, 1, 1),  # the engine in the server process
    (2, DEMO, 2, 1),  # the measured case: two one-thread workers (BENCHMARKS.md)
    (16, DEMO, MAX_AUTO_WORKERS, 2),
    (64, DEMO, MAX_AUTO_WORKERS, 8),
    (16, 4 * WEIGHT_BYTES_PER_THREAD, 4, 4),  # a bigger model: more threads a worker
    (2, 4 * WEIGHT_BYTES_PER_THREAD, 1, 2),
    (3, WEIGHT_BYTES_PER_THREAD + 1, 1, 3),
])
def test_workers_auto_from_the_cpus_and_the_model_size(cpus, weights, workers, threads):
    choice = choose_workers(cpus, weights)
    assert (choice.workers, choice.threads) == (workers, threads)
    assert f"{cpus} CPUs" in choice.reason and f"{weights / MiB:,.1f} MiB" in choice.reason


def test_workers_auto_within_memory_and_one_on_a_gpu():
    assert choose_workers(16, DEMO, memory=64 * 2**30).workers == MAX_AUTO_WORKERS
    tight = choose_workers(16, DEMO, memory=3 * 2**30)  # 1.5 GiB for copies of ~0.5 GiB each
    assert (tight.workers, tight.threads) == (2, 8) and "memory" in tight.reason
    assert choose_workers(16, DEMO, memory=0).workers == 1
    assert (choose_workers(16, DEMO, gpu=True).workers, choose_workers(16, DEMO, gpu=True).threads) == (1, 0)


def test_the_cpu_budget_is_omp_num_threads_else_this_process_s_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_budget() == (3, "OMP_NUM_THREADS=3")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_budget()[0] == len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------------------------------------------------
# The command: the defaults, printed
# ---------------------------------------------------------------------------------------------------------------------


def test_serve_defaults_to_auto_prints_its_choices_and_a_restart_uses_the_cache(folder, tmp_path):
    defaults = serve_parser().parse_args([str(folder)])
    assert (defaults.engine, defaults.workers) == ("auto", "auto")
    cache = tmp_path / "cache"
    texts = sentences(4, seed=5)
    outputs, logs, exports = [], [], []
    for _ in range(2):  # OMP_NUM_THREADS=1 (Server's): one worker, whatever the machine
        server = Server(folder, "--engine", "auto", "--workers", "auto", "--cache_dir", cache,
                        "--source_lang", "es", "--target_lang", "en")
        try:
            outputs.append([server.call("/translate", {"q": t, "source": "es", "target": "en"})[1]["translatedText"]
                            for t in texts])
            assert server.call("/health")[1]["engine"] == "ctranslate2"
        finally:
            assert server.stop() == 0
        logs.append(server.log())
        exports.append(snapshot(cache / cache_key(folder)))
    assert "engine: ctranslate2 (CTranslate2 is installed; the model was converted in" in logs[0]
    assert f"engine: ctranslate2 (CTranslate2 is installed; the model's conversion was found in {cache}" in logs[1]
    assert all("workers: 1, 1 CPU thread each (OMP_NUM_THREADS=1, " in log for log in logs)
    assert exports[0] == exports[1]  # the restart converted nothing
    offline = load_engine(str(cache / cache_key(folder)), "ctranslate2", "cpu")
    assert outputs[0] == outputs[1] == [translate(offline, [t])[0] for t in texts]


def test_explicit_values_are_kept_and_a_bad_one_is_a_usage_error(capsys):
    explicit = serve_parser().parse_args(["model", "--workers", "3", "--engine", "transformers"])
    assert (explicit.workers, explicit.engine) == (3, "transformers")
    with pytest.raises(SystemExit) as exit_info:
        serve_parser().parse_args(["model", "--workers", "two"])
    assert exit_info.value.code == 2 and "--workers: must be auto or an integer, got 'two'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# The engine's own thread (#31)
# ---------------------------------------------------------------------------------------------------------------------


class RecordingEngine:
    """A stand-in engine that records the thread of its loading and of each `generate` call."""

    name = "recording"

    def __init__(self):
        self.threads = [threading.get_ident()]
        self.tokenizer, self.tokenizer_lock, self.source_limit = self, threading.Lock(), None

    def __call__(self, texts, **kwargs):  # the tokenizer
        return {"input_ids": [[5, 2] for _ in texts]}

    def new_token_limit(self, source_length):
        return source_length + 50

    def unsupported(self, options):
        return None

    def generate(self, rows, limits, options):
        self.threads.append(threading.get_ident())
        if rows == [[9]]:
            raise ValueError("row 9 fails")
        return [[f"row of {len(row)}"] for row in rows]


def test_the_engine_loads_warms_up_and_decodes_in_one_thread_that_is_not_the_callers():
    engine = EngineThread(RecordingEngine)
    loaded = engine.engine
    assert len(loaded.threads) == 2  # loaded and warmed up before the constructor returned
    assert engine.generate([[4, 5, 2]], [9], DecodingOptions()) == [["row of 3"]]
    answers = []
    callers = [threading.Thread(target=lambda: answers.append(engine.generate([[4]], [5], DecodingOptions())))
               for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert answers == [[["row of 1"]]] * 3
    with pytest.raises(ValueError, match="row 9 fails"):  # the engine's error, raised to the caller
        engine.generate([[9]], [5], DecodingOptions())
    assert len(set(loaded.threads)) == 1 and loaded.threads[0] != threading.get_ident()
    assert engine.new_token_limit(3) == 53 and engine.name == "recording"  # the rest is the engine's own
    engine.close()
    assert not engine.thread.is_alive()


def test_an_engine_that_cannot_load_raises_in_the_constructor():
    def broken():
        raise ValueError("model.safetensors is damaged")

    with pytest.raises(ValueError, match="damaged"):
        EngineThread(broken)


def test_accepted_connections_send_at_once_without_nagle():
    """serve's listening socket gives asyncio's accepted connections TCP_NODELAY: an answer's headers and body, two
    writes, leave at once instead of the body waiting for the client's (delayed, 40 ms) acknowledgement on a
    kept-alive connection."""
    import asyncio
    import socket

    from vanilla_transformer.cli.serve import listen

    sock = listen("127.0.0.1", 0)
    nodelay = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport):
            nodelay.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def connect_once():
        server = await asyncio.get_running_loop().create_server(Record, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(connect_once())
    assert nodelay == [1]
