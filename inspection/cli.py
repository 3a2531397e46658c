"""`vanilla-transformer inspect MODEL_DIR --src "..." [--tgt "..."] --out DIR`: every figure and a text report for one
sentence pair.

Writes into DIR:
  attention_encoder_self_layer{L}.png, attention_decoder_self_layer{L}.png, attention_cross_layer{L}.png
      one grid of heads per layer (§3.2),
  positional_encoding.png   the sinusoidal table in the model's layout (§3.5),
  logit_lens.png            the top token read after the embeddings and each decoder layer,
  logit_attribution.png     how much each decoder sub-layer adds to the predicted token's logit,
  report.txt                source, target, logit-lens top tokens, attribution numbers, embedding neighbours.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..training.errors import CommandParser
from .attention import attention_maps
from .embeddings import nearest_tokens
from .inputs import token_strings
from .lens import logit_attribution, logit_lens, top_tokens
from .plots import (plot_attention_layer, plot_logit_attribution, plot_logit_lens, plot_positional_encoding,
                    readout_labels, save)

logger = logging.getLogger(__name__)

FIGURES = ("positional_encoding.png", "logit_lens.png", "logit_attribution.png")


def figure_names(encoder_layers: int, decoder_layers: int) -> list[str]:
    """The file names `inspect` writes for a model of this depth (layers count from 1)."""
    names = [f"attention_encoder_self_layer{layer}.png" for layer in range(1, encoder_layers + 1)]
    for layer in range(1, decoder_layers + 1):
        names += [f"attention_decoder_self_layer{layer}.png", f"attention_cross_layer{layer}.png"]
    return names + list(FIGURES)


def inspect_pair(model, tokenizer, src: str, tgt: str | None, out_dir: str | Path, neighbour_tokens: Sequence[str] = (),
            k: int = 8, top_k: int = 3, positions: int = 128) -> Path:
    """Write every figure and `report.txt` for one sentence pair into `out_dir`; returns the report's path.

    Without `tgt` the model translates `src` first (`generate`, beam search per its generation config, §6.1).
    `neighbour_tokens` default to the first two distinct word tokens of the source.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config

    maps = attention_maps(model, tokenizer, src, tgt)
    pair = maps.pair
    for layer in range(config.encoder_layers):
        fig = plot_attention_layer(maps.encoder_self[layer], maps.source_tokens, maps.source_tokens,
                                   f"Encoder self-attention, layer {layer + 1} (§3.2)", "query (source)",
                                   "key (source)")
        save(fig, out / f"attention_encoder_self_layer{layer + 1}.png")
    for layer in range(config.decoder_layers):
        fig = plot_attention_layer(maps.decoder_self[layer], maps.target_tokens, maps.target_tokens,
                                   f"Decoder masked self-attention, layer {layer + 1} (§3.2.3)",
                                   "query (decoder input)", "key (decoder input)")
        save(fig, out / f"attention_decoder_self_layer{layer + 1}.png")
        fig = plot_attention_layer(maps.cross[layer], maps.target_tokens, maps.source_tokens,
                                   f"Encoder–decoder attention, layer {layer + 1} (§3.2.3)",
                                   "query (decoder input)", "key (source)")
        save(fig, out / f"attention_cross_layer{layer + 1}.png")

    length = max(positions, pair.input_ids.shape[1], pair.decoder_input_ids.shape[1])
    save(plot_positional_encoding(length, config.d_model, config.positional_encoding), out / "positional_encoding.png")

    lens = logit_lens(model, pair.input_ids, pair.decoder_input_ids, pair.attention_mask)[:, 0].cpu()
    save(plot_logit_lens(lens, pair.target_tokens, tokenizer), out / "logit_lens.png")

    attribution = logit_attribution(model, pair.input_ids, pair.decoder_input_ids, pair.attention_mask)
    predicted = token_strings(tokenizer, attribution.token_ids[0].tolist())
    save(plot_logit_attribution(attribution, pair.target_tokens, predicted), out / "logit_attribution.png")

    if not neighbour_tokens:
        special = set(getattr(tokenizer, "all_special_tokens", []))
        neighbour_tokens = list(dict.fromkeys(t for t in pair.source_tokens if t not in special))[:2]
    report = _report(model, tokenizer, src, pair, lens, attribution, predicted, neighbour_tokens, k, top_k)
    path = out / "report.txt"
    path.write_text(report, encoding="utf-8")
    logger.info("wrote %s", path)
    return path


def _report(model, tokenizer, src, pair, lens, attribution, predicted, neighbour_tokens, k, top_k) -> str:
    target_ids = pair.decoder_input_ids[0, 1:].tolist()
    lines = [
        f"source: {src}",
        f"source tokens: {' '.join(pair.source_tokens)}",
        f"target: {tokenizer.decode(target_ids, skip_special_tokens=True)}",
        f"target tokens (decoder input): {' '.join(pair.target_tokens)}",
        f"model's predictions: {' '.join(predicted)}",
        "",
        f"== Logit lens: top {top_k} next tokens (probability) after the embeddings and each decoder layer ==",
    ]
    probs, ids = top_tokens(lens, top_k)
    names = readout_labels(lens.shape[0] - 1)
    for position, token in enumerate(pair.target_tokens):
        lines.append(f"position {position}: reads {token!r}, should predict {pair.label_tokens[position]!r}")
        for point, name in enumerate(names):
            tokens = token_strings(tokenizer, ids[point, position].tolist())
            shown = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(tokens, probs[point, position].tolist()))
            lines.append(f"  {name:>10}: {shown}")

    lines += ["", "== Direct logit attribution: Δ logit of the predicted token across each sub-layer ==",
              "(columns: the logit read from the embeddings, each sub-layer's change of it, the model's final logit;",
              " emb + Σ changes = final exactly; post-norm changes include each LayerNorm's rescaling)"]
    layers = len(attribution.names) // 3
    headers = ["emb", *(f"L{layer}.{part}" for layer in range(1, layers + 1) for part in ("self", "cross", "ffn")),
               "final"]
    lines.append(f"{'position':<26}" + "".join(f"{h:>9}" for h in headers))
    contributions = attribution.contributions[:, 0].cpu()
    for position, token in enumerate(pair.target_tokens):
        row = [attribution.embedding[0, position].item(), *contributions[:, position].tolist(),
               attribution.final[0, position].item()]
        label = f"{position} {token[:8]}→{predicted[position][:8]}"
        lines.append(f"{label:<26}" + "".join(f"{value:>9.2f}" for value in row))
    mean = contributions.mean(dim=1).tolist()
    lines.append(f"{'mean':<26}{'':>9}" + "".join(f"{value:>9.2f}" for value in mean))

    lines += ["", f"== Nearest tokens in the shared embedding space (cosine similarity, top {k}) =="]
    for token in neighbour_tokens:
        try:
            neighbours = nearest_tokens(model, tokenizer, token, k)
        except ValueError as error:
            lines.append(f"{token!r}: {error}")
            continue
        lines.append(f"{token!r}: " + ", ".join(f"{n.token!r} {n.similarity:.3f}" for n in neighbours))
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="vanilla-transformer inspect",
        description="Attention maps, positional encodings, logit lens, logit attribution and embedding neighbours "
                    "of a trained model for one sentence pair. The files are written into --out (created if "
                    "missing); other files there stay. --out may not be a file or the model/tokenizer folder.",
    )
    parser.add_argument("model_dir", help="a directory written by save_pretrained (model + tokenizer)")
    parser.add_argument("--src", required=True, help="the source sentence")
    parser.add_argument("--tgt", help="the target sentence (default: the model's own translation)")
    parser.add_argument("--out", required=True, help="directory for the figures and report.txt")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: MODEL_DIR)")
    parser.add_argument("--neighbours", nargs="+", default=(), metavar="TOKEN",
                        help="tokens whose embedding neighbours the report lists (default: two source tokens)")
    parser.add_argument("-k", type=int, default=8, help="neighbours per token (default 8)")
    parser.add_argument("--top-k", type=int, default=3, help="logit-lens tokens per layer in the report (default 3)")
    parser.add_argument("--positions", type=int, default=128, help="positions in the positional-encoding figure")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return parser


def cli(argv: list[str]) -> int:
    """Entry point of `vanilla-transformer inspect` (argv without the sub-command); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .. import modeling  # noqa: F401 -- registers the model with the Auto classes
    from ..training.evaluate import device_problem, model_folder_problem
    from ..training.outputs import same_or_nested

    for name in ("k", "top_k", "positions"):
        if getattr(args, name) <= 0:
            parser.error(f"-{'k' if name == 'k' else '-' + name.replace('_', '-')} must be positive, "
                         f"got {getattr(args, name)}")
    problems = [model_folder_problem(args.model_dir), device_problem(args.device)]
    if args.tokenizer and not Path(args.tokenizer).is_dir():
        problems.append(f"--tokenizer {args.tokenizer} is not a directory")
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        problems.append(f"--out {out} is an existing file, not a folder: choose another --out")
    for source in (args.model_dir, args.tokenizer):
        if source and Path(source).exists() and same_or_nested(out, Path(source)):
            problems.append(f"--out {out} is (or is inside) the input {source}: write the figures somewhere else")
    for problem in filter(None, problems):
        parser.error(problem)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = Path(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    report = inspect_pair(model, tokenizer, args.src, args.tgt, args.out, args.neighbours, args.k, args.top_k,
                     args.positions)
    print(report.read_text(encoding="utf-8").split("\n\n")[0])
    print(f"wrote figures and {report.name} to {Path(args.out)}")
    return 0


if __name__ == "__main__":
    from ..training.cli import run_command

    sys.exit(run_command("inspect", cli))
