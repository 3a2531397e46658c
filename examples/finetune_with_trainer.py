"""Fine-tune a vanilla-transformer translation model on new sentence pairs with transformers' `Seq2SeqTrainer`.

The model may be a local folder (an export such as `<output_dir>/final`, or a checkpoint) or a Hub repo id; with a
local folder nothing touches the network. Pairs come from a TSV file (source<TAB>target, one pair per line) or, by
default, a few inline Spanish→English pairs. The fine-tuned model is saved to `--output_dir` as a complete model
folder (model.safetensors, config, generation config, tokenizer, and the code files for `trust_remote_code`).
`--output_dir` must be new, empty or a model folder written by vanilla-transformer (then it is replaced); it is never
the `--model` folder or a file, and a folder holding other files needs `--overwrite` (which keeps those files).

    python examples/finetune_with_trainer.py --model demo_output/final --train_file my_pairs.tsv \\
        --output_dir finetuned --max_steps 500

Before and after training, the pairs are translated with the model's own decoding settings
(`generation_config.json`: the paper's beam search) and scored with sacrebleu, so the effect is visible at once.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys

import sacrebleu
import torch
from datasets import Dataset
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

INLINE_PAIRS = [
    ("Bienaventurados los pacificadores.", "Blessed are the peacemakers."),
    ("El amor es sufrido, es benigno.", "Love is patient and is kind."),
    ("En el principio era el Verbo.", "In the beginning was the Word."),
    ("Buscad, y hallaréis.", "Seek, and you will find."),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from vanilla_transformer.cli.parsing import CommandParser

    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder or a Hub repo id")
    parser.add_argument("--train_file", default=None, help="TSV of source<TAB>target pairs (default: a few inline "
                                                           "pairs)")
    parser.add_argument("--output_dir", required=True, help="where the fine-tuned model is saved")
    parser.add_argument("--overwrite", action="store_true",
                        help="save into an existing folder holding other files (they are kept)")
    parser.add_argument("--max_steps", type=int, default=200, help="optimizer updates")
    parser.add_argument("--learning_rate", type=float, default=1e-4, help="AdamW learning rate (linear decay)")
    parser.add_argument("--batch_size", type=int, default=16, help="pairs per batch")
    parser.add_argument("--max_length", type=int, default=256, help="tokens kept per side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="load the model with the code in its folder (where vanilla_transformer is not installed)")
    return parser.parse_args(argv)


def read_pairs(path: str | None) -> list[tuple[str, str]]:
    if path is None:
        return INLINE_PAIRS
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    bad = [number for number, row in enumerate(rows, 1) if len(row) != 2]
    if bad:
        raise SystemExit(f"{path}: line {bad[0]} is not source<TAB>target")
    return [(source, target) for source, target in rows]


def translate_and_score(model, tokenizer, pairs, batch_size: int) -> tuple[list[str], float]:
    """Translations of the sources with the model's generation config, and their corpus BLEU."""
    model.eval()
    hypotheses = []
    for start in range(0, len(pairs), batch_size):
        sources = [source for source, _ in pairs[start:start + batch_size]]
        inputs = tokenizer(sources, return_tensors="pt", padding=True).to(model.device)
        hypotheses += tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True)
    return hypotheses, sacrebleu.corpus_bleu(hypotheses, [[target for _, target in pairs]]).score


def main(argv: list[str] | None = None) -> int:
    from vanilla_transformer.base.outputs import check_output_folder, install_folder, temporary_folder

    args = parse_args(argv)
    # Refused before any work: a file, the input model, a checkpoint, or a folder of other files without --overwrite.
    output_dir = check_output_folder(args.output_dir, flag="--output_dir", inputs=[args.model, args.train_file],
                                     overwrite=args.overwrite)
    if not args.trust_remote_code:
        import vanilla_transformer.modeling  # noqa: F401  (registers the model with the Auto classes)
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    pairs = read_pairs(args.train_file)
    sources, targets = [list(side) for side in zip(*pairs)]
    dataset = Dataset.from_dict(dict(tokenizer(sources, text_target=targets, truncation=True,
                                               max_length=args.max_length)))

    _, bleu_before = translate_and_score(model, tokenizer, pairs, args.batch_size)
    staging = temporary_folder(output_dir)  # the Trainer writes here; the finished folder is then put in place
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(staging),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",  # one save at the end (trainer.save_model); use "steps" for checkpoints
        predict_with_generate=True,  # evaluation decodes with the model's generation_config (beam search)
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),  # pads; labels shifted right by the model
        processing_class=tokenizer,
    )
    try:
        result = trainer.train()
        trainer.save_model(str(staging))  # model.safetensors + config + tokenizer + code files for remote code
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    install_folder(staging, output_dir)

    hypotheses, bleu_after = translate_and_score(model, tokenizer, pairs, args.batch_size)
    print(f"trained {result.global_step} steps, mean training loss {result.training_loss:.4f}")
    print(f"BLEU on the training pairs: {bleu_before:.2f} before, {bleu_after:.2f} after")
    for (source, target), hypothesis in list(zip(pairs, hypotheses))[:3]:
        print(f"  {source}\n    → {hypothesis}\n    (reference: {target})")
    print(f"saved to {output_dir}")
    return 0


if __name__ == "__main__":
    from vanilla_transformer.cli.main import run_command

    sys.exit(run_command("finetune_with_trainer", main))
