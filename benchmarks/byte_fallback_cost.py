"""What byte fallback costs (issue #29): the demo's shared BPE (8,000 tokens, trained on the Bible's training pairs as
`train` trains it) with and without byte fallback, compared on the Bible and on the software messages (gettext):

* the vocabulary: merges learned (the 256 byte tokens take the place of 256 merges);
* sequence length: tokens per sentence (both sides, `</s>` included), which sets the cost of every step;
* what is lost: sentences whose `decode(encode(x))` differs from `x` after normalisation, and the `<unk>` tokens.

    python benchmarks/byte_fallback_cost.py --output benchmarks/byte_fallback_cost.json

(BLEU: the demo trained with it is the `make demo` figure in BENCHMARKS.md.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vanilla_transformer.training.bible import load_bible
from vanilla_transformer.training.gettext_corpus import load_gettext
from vanilla_transformer.training.tokenizer import BYTE_TOKENS, MIN_VOCAB_SIZE, train_shared_bpe


# What the issue found lost, as a social-media post would hold it.
POSTS = ["¡Buenos días! 🙂👍", "Привет, как дела?", "Ελληνικά και ισπανικά", "日本語のテキスト", "→ ∑ ≤ ∞ ≠ ±",
         "Me encanta 😍🎉 #fediverso", "Precio: 5 € / ¥500 / ₹20", "Señal ✓ recibida ✗ error"]


def texts_of(split) -> list[str]:
    return [text for row in split["translation"] for text in (row["es"], row["en"])]


def measure(tokenizer, texts: list[str]) -> dict:
    encoded = tokenizer(texts)["input_ids"]
    normalizer = tokenizer.backend_tokenizer.normalizer
    lost = sum(tokenizer.decode(ids, skip_special_tokens=True) != normalizer.normalize_str(text)
               for ids, text in zip(encoded, texts))
    byte_ids = {tokenizer.convert_tokens_to_ids(token) for token in BYTE_TOKENS} - {tokenizer.unk_token_id}
    return {"texts": len(texts), "tokens_per_text": round(sum(map(len, encoded)) / len(texts), 3),
            "texts_changed_by_a_round_trip": lost,
            "unk_tokens": sum(ids.count(tokenizer.unk_token_id) for ids in encoded),
            "byte_tokens": sum(token in byte_ids for ids in encoded for token in ids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--output", default="benchmarks/byte_fallback_cost.json")
    args = parser.parse_args()
    bible, gettext = load_bible(), load_gettext()
    corpora = {"Bible test": texts_of(bible["test"]), "gettext test": texts_of(gettext["test"]),
               "gettext train": texts_of(gettext["train"]), "posts": POSTS}
    results = {"vocab_size": args.vocab_size, "tokenizers": {}}
    for byte_fallback in (False, True):
        start = time.perf_counter()
        tokenizer = train_shared_bpe(texts_of(bible["train"]), args.vocab_size, byte_fallback=byte_fallback)
        seconds = time.perf_counter() - start
        base = MIN_VOCAB_SIZE - (0 if byte_fallback else len(BYTE_TOKENS))
        results["tokenizers"]["byte fallback" if byte_fallback else "no byte fallback"] = {
            "size": len(tokenizer), "merges": len(tokenizer) - base, "train_seconds": round(seconds, 1),
            **{name: measure(tokenizer, texts) for name, texts in corpora.items()}}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
