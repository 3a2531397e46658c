"""Every figure and a text report for one sentence pair: what `vanilla-transformer inspect` (`cli/inspect.py`)
writes; `figure_names` lists the files."""

import logging
from collections.abc import Sequence
from pathlib import Path


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
