"""Figures for the inspection tools, drawn with matplotlib's object API (`matplotlib.figure.Figure`).

No pyplot: nothing here touches the global backend or figure registry, so it works headless (PNGs are rendered by
the Agg canvas) and in notebooks alike. Every function returns a `Figure`; save it with `fig.savefig(path)`.
"""

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from ..modeling.modeling_vanilla_transformer import sinusoidal_table
from .inputs import token_strings
from .lens import LogitAttribution

logger = logging.getLogger(__name__)

LABEL_CHARS = 12  # token labels longer than this are cut, so one odd token cannot squash a whole axis


def _short(token: str, limit: int = LABEL_CHARS) -> str:
    return token if len(token) <= limit else token[: limit - 1] + "…"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # an explicit Agg canvas: savefig to PNG needs no backend selection
    return fig


def _cell_size(rows: int, cols: int) -> tuple[float, float]:
    """Inches per heatmap cell and the tick font size: roomy for short sentences, shrinking for long ones."""
    longest = max(rows, cols)
    cell = 0.3 if longest <= 20 else max(0.12, 6.0 / longest)
    return cell, (8 if cell >= 0.25 else 6)


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=110)
    logger.info("wrote %s", path)


# ---------------------------------------------------------------------------------------------------------------------
# Attention (§3.2)
# ---------------------------------------------------------------------------------------------------------------------


def plot_attention_layer(weights: torch.Tensor, query_tokens: Sequence[str], key_tokens: Sequence[str], title: str,
                         query_label: str = "query", key_label: str = "key") -> Figure:
    """One layer's attention, a grid of heads: row = query token, column = key token, colour = attention weight.

    `weights` has shape (heads, queries, keys). All heads share one colour scale, from 0 to the layer's largest
    weight, so heads can be compared with one another; the scale is a square root, so that the small weights of a
    head spreading its attention over a long sentence stay visible next to a sharp head's near-1 weights.
    """
    weights = weights.detach().float().cpu().numpy()
    heads, queries, keys = weights.shape
    cols = min(heads, 4)
    rows = math.ceil(heads / cols)
    cell, font = _cell_size(queries, keys)
    panel_w, panel_h = max(2.6, keys * cell + 1.2), max(2.4, queries * cell + 1.2)
    fig = _new_figure(cols * panel_w + 1.2, rows * panel_h + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    vmax = float(weights.max()) if weights.size else 1.0
    image = None
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.set_visible(False)
            continue
        image = ax.imshow(weights[h], cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax), aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"head {h + 1}", fontsize=font + 2)
        ax.set_xticks(range(keys), [_short(t) for t in key_tokens], rotation=90, fontsize=font)
        ax.set_yticks(range(queries), [_short(t) for t in query_tokens], fontsize=font)
        ax.tick_params(labelbottom=True, labelleft=True)  # sharex/sharey would hide the inner tick labels
        if h % cols == 0:
            ax.set_ylabel(query_label, fontsize=font + 1)
        if h // cols == rows - 1 or h + cols >= heads:
            ax.set_xlabel(key_label, fontsize=font + 1)
    fig.colorbar(image, ax=axes, label="attention weight (square-root scale)", shrink=0.8)
    fig.suptitle(title, fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Positional encoding (§3.5)
# ---------------------------------------------------------------------------------------------------------------------


def plot_positional_encoding(length: int, d_model: int, layout: str = "interleaved") -> Figure:
    """The sinusoidal table of §3.5 as the model adds it: a heatmap (position × dimension) and a few of its waves.

    `layout` is the model's `config.positional_encoding`: "interleaved" (sin at even, cos at odd dimensions, the
    paper's formula) or "concatenated" ([sin | cos] halves).
    """
    table = sinusoidal_table(length, d_model, layout).numpy()
    fig = _new_figure(11, 9)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    image = top.imshow(table, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    where = ("sin at even dimensions, cos at odd" if layout == "interleaved"
             else f"sin in dimensions 0–{d_model // 2 - 1}, cos in {d_model // 2}–{d_model - 1}")
    top.set_xlabel(f"dimension ({where})")
    top.set_ylabel("position")
    top.set_title(f"Sinusoidal positional encoding (§3.5), {layout} layout: d_model={d_model}, {length} positions")
    fig.colorbar(image, ax=top, label="PE(pos, dim)")

    # The sine of a few frequencies i: wavelength 2π·10000^(2i/d_model) grows geometrically with i.
    half = d_model // 2
    positions = np.arange(length)
    for i in sorted({0, half // 8, half // 4, half // 2, 3 * half // 4}):
        dim = 2 * i if layout == "interleaved" else i
        wavelength = 2 * math.pi * 10000 ** (2 * i / d_model)
        bottom.plot(positions, table[:, dim], label=f"dim {dim} (sin, i={i}, wavelength {wavelength:.0f})")
    bottom.set_xlim(0, length - 1)
    bottom.set_xlabel("position")
    bottom.set_ylabel("PE(pos, dim)")
    sine_dim = "2i" if layout == "interleaved" else "i"
    bottom.set_title(f"A few of its waves: sin(pos / 10000^(2i/d_model)) at dimension {sine_dim}")
    bottom.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Logit lens and direct logit attribution (§3.4 read-out)
# ---------------------------------------------------------------------------------------------------------------------


def readout_labels(num_layers: int) -> list[str]:
    return ["embeddings"] + [f"layer {layer}" for layer in range(1, num_layers + 1)]


def plot_logit_lens(log_probs: torch.Tensor, input_tokens: Sequence[str], tokenizer=None) -> Figure:
    """Logit lens of one sentence: what the decoder would predict if it stopped after the embeddings or layer l.

    `log_probs` has shape (decoder_layers + 1, target_length, vocab) (one batch item of `logit_lens`). Each cell shows
    the top token at that read-out point and is coloured by the probability it gives the model's final prediction;
    columns are decoder positions (bottom: the token read there, top: the model's final prediction).
    """
    log_probs = log_probs.detach().float().cpu()
    points, length, _ = log_probs.shape
    final_ids = log_probs[-1].argmax(-1)
    p_final = log_probs.gather(-1, final_ids.expand(points, length)[..., None])[..., 0].exp().numpy()
    top_ids = log_probs.argmax(-1)
    fig = _new_figure(max(6.0, 0.8 * length + 2.5), max(3.5, 0.5 * points + 2.2))
    ax = fig.subplots()
    image = ax.imshow(p_final, cmap="magma", vmin=0, vmax=1, origin="lower", aspect="auto", interpolation="nearest")
    for layer in range(points):
        tokens = token_strings(tokenizer, top_ids[layer].tolist())
        for position, token in enumerate(tokens):
            colour = "black" if p_final[layer, position] > 0.6 else "white"
            ax.text(position, layer, _short(token, 9), ha="center", va="center", fontsize=7, color=colour)
    ax.set_yticks(range(points), readout_labels(points - 1))
    ax.set_xticks(range(length), [_short(t) for t in input_tokens], rotation=90, fontsize=8)
    ax.set_xlabel("decoder input token (position)")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(length), [_short(t) for t in token_strings(tokenizer, final_ids.tolist())], rotation=90,
                   fontsize=8)
    top.set_xlabel("model's final prediction")
    fig.colorbar(image, ax=ax, label="probability of the final prediction")
    ax.set_title("Logit lens: top token read through the final norm and tied unembedding at each depth")
    return fig


def plot_logit_attribution(attribution: LogitAttribution, input_tokens: Sequence[str],
                           predicted_tokens: Sequence[str], batch_index: int = 0) -> Figure:
    """Direct logit attribution of one sentence: Δ logit of the followed token across each decoder sub-layer.

    Left: a heatmap (sub-layer × position; red adds to the logit, blue takes away). Right: the mean over positions.
    The embedding read-out plus every row of a column adds up to the model's logit (see `logit_attribution`).
    """
    values = attribution.contributions[:, batch_index].detach().float().cpu().numpy()
    rows, length = values.shape
    fig = _new_figure(max(7.0, 0.6 * length + 5.0), max(3.5, 0.35 * rows + 2.4))
    heat, bars = fig.subplots(1, 2, width_ratios=[max(length, 4), 3], sharey=True)
    limit = float(np.abs(values).max()) or 1.0
    image = heat.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -limit, limit), origin="lower", aspect="auto",
                        interpolation="nearest")
    if length <= 30:
        for row in range(rows):
            for position in range(length):
                value = values[row, position]
                heat.text(position, row, f"{value:.1f}", ha="center", va="center", fontsize=6,
                          color="white" if abs(value) > 0.6 * limit else "black")
    labels = [f"{_short(a, 8)} → {_short(b, 8)}" for a, b in zip(input_tokens, predicted_tokens)]
    heat.set_xticks(range(length), labels, rotation=90, fontsize=8)
    heat.set_yticks(range(rows), attribution.names, fontsize=8)
    heat.set_xlabel("decoder input → followed (predicted) token")
    fig.colorbar(image, ax=heat, label="Δ logit", location="left", shrink=0.8)
    means = values.mean(axis=1)
    bars.barh(range(rows), means, color=["tab:red" if m > 0 else "tab:blue" for m in means])
    bars.axvline(0, color="black", linewidth=0.8)
    bars.set_xlabel("mean Δ logit")
    bars.tick_params(labelleft=False)
    fig.suptitle("Direct logit attribution: change of the predicted token's logit-lens logit across each sub-layer\n"
                 "(embedding read-out + column sum = final logit; post-norm includes each LayerNorm's rescaling)",
                 fontsize=10)
    return fig
