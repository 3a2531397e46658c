"""`make demo` says when its time cap stopped training early (issue #27: a busy machine stopped it after 1,312 of its
2,200 updates and the demo reported test BLEU 9.38 without a word about it): the demo's output and
`final/run_summary.json` say how far training got and that the scores are those of an undertrained model."""

import json

from vanilla_transformer.cli import demo
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.trainer import train


def test_a_run_cut_short_by_the_time_cap_says_so(tmp_path, monkeypatch, capsys):
    from test_training import tiny_args, write_corpus  # the tiny model and corpus of the training tests

    corpus = write_corpus(tmp_path / "corpus")
    summary = train(*parse_args(tiny_args(corpus, tmp_path / "run", "--max_steps", "100000", "--max_time", "2s",
                                          "--eval_steps", "100000", "--save_steps", "100000")))
    assert 0 < summary["steps"] < 100_000  # a tiny cap: far fewer updates than planned

    final = tmp_path / "run" / "final"
    cap = demo.record_time_cap(summary, final)
    assert cap["updates_done"] == summary["steps"] and cap["updates_planned"] == 100_000
    assert cap["stopped_by"] == "max_time" and cap["max_time"] == "2s" and cap["epochs"] == summary["epochs"]
    assert json.loads((final / "run_summary.json").read_text())["stopped_early"] == cap
    message = demo.time_cap_message(cap)
    assert f"after {summary['steps']:,} of the 100,000 planned updates ({summary['epochs']:.2f} epochs" in message
    assert "undertrained model" in message and f"about {demo.IDLE_MACHINE_TEST_BLEU}" in message
    assert "idle machine" not in demo.time_cap_message(cap, idle_bleu=None)  # another recipe: no comparison

    # A run that did all its planned updates: nothing to say, nothing added.
    complete = {**summary, "hyperparameters": {**summary["hyperparameters"], "max_steps": summary["steps"]}}
    (final / "run_summary.json").write_text(json.dumps({"steps": summary["steps"]}))
    assert demo.record_time_cap(complete, final) is None
    assert "stopped_early" not in json.loads((final / "run_summary.json").read_text())

    # The demo's own output and demo_result.json (its corpus, training and translation stood in for by the run above).
    summary["test"] = {"bleu": 9.38, "chrf": 30.0, "length_ratio": 1.0, "sentences": 952}
    monkeypatch.setattr(demo, "load_bible", lambda: {"train": [0] * 3, "validation": [0] * 2, "test": [0]})
    monkeypatch.setattr(demo, "train", lambda *arguments: {**summary, "hyperparameters": {
        **summary["hyperparameters"], "max_steps": demo.DEMO_STEPS, "max_time": "20.0m"}})
    monkeypatch.setattr(demo, "load_engine", lambda *arguments, **options: None)
    monkeypatch.setattr(demo, "translate", lambda engine, sentences: ["..."] * len(sentences))
    (final / "run_summary.json").write_text(json.dumps({"steps": summary["steps"]}))
    assert demo.main(["--output_dir", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert f"after {summary['steps']:,} of the 2,200 planned updates" in printed
    assert f"lower than the test BLEU of about {demo.IDLE_MACHINE_TEST_BLEU}" in printed
    assert printed.index("WARNING: the time cap") < printed.index("test BLEU 9.38")
    assert "stopped by the time cap (20 min) before the planned 2,200" in printed
    result = json.loads((tmp_path / "run" / "demo_result.json").read_text())
    assert result["stopped_early"]["updates_done"] == summary["steps"]
    assert result["stopped_early"]["updates_planned"] == 2200
    assert json.loads((final / "run_summary.json").read_text())["stopped_early"]["updates_planned"] == 2200
