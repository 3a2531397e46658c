"""Domain adaptation, measured (issue #29): the `make demo` Bible model adapted to software messages (the gettext
corpus, `vanilla-transformer gettext`), against a model trained from scratch on the messages for the same total
time, against the Bible model untouched.

    python benchmarks/domain_adaptation.py --bible_model demo_output/final --minutes 5 --root /tmp/vt-adapt \
        --output benchmarks/domain_adaptation.json

Systems (trained one after the other, on all the CPUs the process may use):

* **Bible model**: the starting model as it is.
* **fine-tuned**: `train --init_from BIBLE_MODEL --dataset gettext` for `--minutes` of training, once with the
  fine-tuning defaults (`inverse_sqrt`, 5e-5, 500 warmup updates) and once for each `--learning_rate` given.
* **from scratch**: `train --dataset gettext` with the demo's model and recipe (its own BPE, trained on the messages)
  for the Bible model's training time (`--bible_minutes`) plus `--minutes`: the same total budget.

Each is scored on the held-out catalogs (`evaluate --dataset gettext` of its fp32 CTranslate2 export, beam 4, α 0.6
as in §6.1): sacreBLEU, chrF, and the
**placeholder rate**: of the held-out messages with a placeholder (`%s`, `%1$s`, `{name}`, `${var}`, a line
break ...; `gettext_corpus.placeholders`), the share whose translation holds exactly the same ones. The human
references' own rate is printed as the ceiling of what the metric can give (translators rewrap help texts). The
fine-tuned models are also scored on the Bible test split: what fine-tuning forgot.

Timings are wall-clock: run on an idle machine. The CPU is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vanilla_transformer.cli.demo import DEMO_MODEL, DEMO_RECIPE
from vanilla_transformer.training.gettext_corpus import load_gettext, placeholder_rate
from machine import cpu_isa, cpu_name

COMMAND = [sys.executable, "-m", "vanilla_transformer.cli.main"]
# Few evaluations during training: the budget goes to updates; the models are scored afterwards.
QUIET = ["--eval_steps", "100000", "--save_steps", "100000", "--logging_steps", "200", "--max_steps", "1000000",
         "--report_to", "none", "--overwrite_output_dir"]


def run(argv: list[str], log: Path) -> float:
    """Run one command of the CLI, its output in `log`; the seconds it took."""
    start = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(COMMAND + argv, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"{' '.join(argv[:2])} failed (exit {result.returncode}): see {log}")
    return time.perf_counter() - start


def train(name: str, argv: list[str], minutes: float, root: Path) -> Path:
    output = root / name
    run(["train", *argv, "--max_time", f"{minutes}m", "--output_dir", str(output), *QUIET], root / f"{name}.train.log")
    return output / "final"


def evaluate(model: Path, dataset: str, root: Path, name: str) -> dict:
    """Scores on `dataset`'s test split, translated by the model's fp32 CTranslate2 export: 2-3x faster on a CPU,
    which keeps the benchmark short. Its beam search ends once `num_beams` hypotheses have ended, so a few sentences
    in a hundred may differ from `generate`'s (docs/deployment.md); the demo model's Bible test BLEU was 17.81 this
    way and 17.89 through `generate`."""
    exported = root / f"{name}.ct2"
    if not exported.is_dir():
        run(["export", str(model), str(exported), "--format", "ctranslate2"], root / f"{name}.export.log")
    hypotheses = root / f"{name}.{dataset}.jsonl"
    run(["evaluate", str(exported), "--engine", "ctranslate2", "--dataset", dataset, "--json", "--output",
         str(hypotheses)], root / f"{name}.{dataset}.evaluate.log")
    rows = [json.loads(line) for line in hypotheses.read_text(encoding="utf-8").splitlines()]
    log = (root / f"{name}.{dataset}.evaluate.log").read_text()
    scores = json.loads(log[log.index("{"):log.rindex("}") + 1])
    result = {"bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2), "sentences": len(rows)}
    if dataset == "gettext":
        kept, judged = placeholder_rate([row["source"] for row in rows], [row["hypothesis"] for row in rows])
        result.update(placeholders_kept=kept, placeholder_messages=judged, placeholder_rate=round(kept / judged, 4))
    return result


def summary_of(model: Path) -> dict:
    return json.loads((model / "run_summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bible_model", default="demo_output/final", help="the `make demo` model folder")
    parser.add_argument("--minutes", type=float, default=5.0, help="fine-tuning budget (training minutes)")
    parser.add_argument("--bible_minutes", type=float, default=None,
                        help="the Bible model's training time, for the from-scratch budget (default: its "
                             "run_summary.json's; give the idle-machine time when it was trained on a busy one)")
    parser.add_argument("--learning_rate", type=float, nargs="*", default=[5e-4],
                        help="fine-tuning runs beyond the default one, at these learning rates")
    parser.add_argument("--root", default="/tmp/vt-adapt", help="where the runs go (replaced)")
    parser.add_argument("--output", default="benchmarks/domain_adaptation.json")
    args = parser.parse_args()
    bible = Path(args.bible_model)
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    corpus = load_gettext()
    references = [row["en"] for row in corpus["test"]["translation"]]
    sources = [row["es"] for row in corpus["test"]["translation"]]
    kept, judged = placeholder_rate(sources, references)
    bible_minutes = args.bible_minutes or summary_of(bible)["train_seconds"] / 60
    results = {"cpu": cpu_name(), "isa": cpu_isa(), "cpus": len(os.sched_getaffinity(0)),
               "load_average_start": os.getloadavg(),
               "bible_model": str(bible), "bible_train_minutes": round(bible_minutes, 2),
               "fine_tune_minutes": args.minutes, "test_messages": len(sources),
               "reference_placeholder_rate": round(kept / judged, 4), "placeholder_messages": judged, "systems": {}}
    systems = results["systems"]
    systems["bible model"] = {"gettext": evaluate(bible, "gettext", root, "bible"),
                              "bible": evaluate(bible, "bible", root, "bible")}
    runs = [("fine-tuned (defaults)", [])] + [(f"fine-tuned (lr {rate:g})", ["--learning_rate", str(rate)])
                                              for rate in args.learning_rate]
    for name, extra in runs:
        slug = name.replace(" ", "_").replace("(", "").replace(")", "")
        model = train(slug, ["--init_from", str(bible), "--dataset", "gettext", *extra], args.minutes, root)
        summary = summary_of(model)
        systems[name] = {"updates": summary["steps"], "train_minutes": round(summary["train_seconds"] / 60, 2),
                         "gettext": evaluate(model, "gettext", root, slug), "bible": evaluate(model, "bible", root, slug)}
    total = bible_minutes + args.minutes
    model = train("scratch", ["--dataset", "gettext", *DEMO_MODEL, *DEMO_RECIPE], total, root)
    summary = summary_of(model)
    systems["from scratch"] = {"updates": summary["steps"], "train_minutes": round(summary["train_seconds"] / 60, 2),
                               "gettext": evaluate(model, "gettext", root, "scratch")}
    results["load_average_end"] = os.getloadavg()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict) -> str:
    lines = [f"{results['cpu']} ({results['isa']}), {results['cpus']} CPUs; held-out catalogs: "
             f"{results['test_messages']} messages, {results['placeholder_messages']} with placeholders "
             f"(references keep {results['reference_placeholder_rate']:.1%})", "",
             "| system | training | gettext BLEU | chrF | placeholders kept | Bible test BLEU |",
             "|---|---|---:|---:|---:|---:|"]
    for name, system in results["systems"].items():
        if name == "bible model":
            training = f"{results['bible_train_minutes']:.1f} min on the Bible"
        elif name == "from scratch":
            training = f"{system['train_minutes']:.1f} min on the messages ({system['updates']:,} updates)"
        else:
            training = f"+ {system['train_minutes']:.1f} min on the messages ({system['updates']:,} updates)"
        gettext, bible = system["gettext"], system.get("bible")
        lines.append(f"| {name} | {training} | {gettext['bleu']:.2f} | {gettext['chrf']:.2f} | "
                     f"{gettext['placeholder_rate']:.1%} | {bible['bleu']:.2f} |" if bible else
                     f"| {name} | {training} | {gettext['bleu']:.2f} | {gettext['chrf']:.2f} | "
                     f"{gettext['placeholder_rate']:.1%} | — |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
