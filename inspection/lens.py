"""Reading the decoder's residual stream through the output layer: the logit lens and direct logit attribution.

The model predicts the next token as softmax(FinalNorm(h) Eᵀ + b), with E the embedding matrix shared by both
embeddings and the output projection (§3.4), FinalNorm the decoder's final LayerNorm (pre-norm models only) and b the
optional `final_logits_bias` (Marian). The logit lens applies that same read-out to the hidden state after the
embeddings and after every decoder layer, to see how the prediction forms through the stack.
"""

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .inputs import eval_mode

logger = logging.getLogger(__name__)

SUBLAYERS = ("self_attn_block", "cross_attn_block", "ffn_block")
SUBLAYER_NAMES = {"self_attn_block": "self-attention", "cross_attn_block": "cross-attention", "ffn_block": "FFN"}


def readout(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's own output layer applied to any decoder hidden state: logits = FinalNorm(h) Eᵀ (+ bias).

    `model.model.decoder.final_norm` exists only for pre-norm models (`config.normalize_before`); in the paper's
    post-norm model every layer already ends in a LayerNorm, so the hidden state is read as it is.
    """
    final_norm = getattr(model.model.decoder, "final_norm", None)
    if final_norm is not None:
        hidden = final_norm(hidden)
    logits = model.lm_head(hidden)
    if getattr(model, "final_logits_bias", None) is not None:
        logits = logits + model.final_logits_bias
    return logits


def _forward(model, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None, **flags):
    return model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                 decoder_attention_mask=decoder_attention_mask, use_cache=False, return_dict=True, **flags)


def logit_lens(model, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None,
               decoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token log-probabilities read from the decoder embeddings and from every decoder layer's output.

    Returns a float tensor of shape (decoder_layers + 1, batch, target_length, vocab_size): entry 0 reads the
    embedding output (token embedding × √d_model + positional encoding, §3.4–3.5), entry l the output of decoder
    layer l. Each is read through the final norm (if any) and the tied unembedding, so the last entry equals
    `log_softmax` of the model's logits.
    """
    with eval_mode(model):
        outputs = _forward(model, input_ids, decoder_input_ids, attention_mask, decoder_attention_mask,
                           output_hidden_states=True)
        hidden_states = outputs.decoder_hidden_states
        return torch.stack([F.log_softmax(readout(model, h).float(), dim=-1) for h in hidden_states])


def top_tokens(log_probs: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable tokens of a (…, vocab) log-probability tensor: (probabilities, ids), each (…, k)."""
    values, ids = log_probs.topk(k, dim=-1)
    return values.exp(), ids


@dataclass
class LogitAttribution:
    """How much each decoder sub-layer changes the logit of one token per position (see `logit_attribution`).

    `contributions[i, b, t]` belongs to sub-layer `names[i]`; exactly (up to float rounding)
    `embedding + contributions.sum(0) == final`, the model's own logit of `token_ids`.
    """

    names: list[str]  # "layer 1 self-attention", "layer 1 cross-attention", "layer 1 FFN", "layer 2 …"
    contributions: torch.Tensor  # (3 · decoder_layers, batch, target_length)
    embedding: torch.Tensor  # (batch, target_length): the logit read from the embedding output
    final: torch.Tensor  # (batch, target_length): the model's logit
    token_ids: torch.Tensor  # (batch, target_length): the token whose logit is followed


def logit_attribution(model, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None, token_ids: torch.Tensor | None = None,
                      decoder_attention_mask: torch.Tensor | None = None) -> LogitAttribution:
    """Direct logit attribution: how much each attention and FFN sub-layer adds to the logit of the predicted token.

    How it is computed. Let h_0 be the decoder embedding output and h_1, h_2, … the residual stream after each
    sub-layer connection (§3.1) in order — layer 1 self-attention, layer 1 encoder–decoder attention, layer 1 FFN,
    layer 2 self-attention, … — captured with forward hooks on `self_attn_block`, `cross_attn_block` and `ffn_block`
    (each `SublayerConnection` returns its updated stream). Let r(h) = readout(h)[token] be the logit of the followed
    token read through the final norm and the tied unembedding, exactly as `logit_lens` reads it. The contribution of
    sub-layer i is

        r(h_i) − r(h_{i−1}),

    the change of the logit-lens logit across that sub-layer. The contributions therefore telescope:
    r(h_0) + Σ_i contribution_i = r(h_last), the model's own logit.

    Why "approximate". In the post-norm paper model a sub-layer connection computes LayerNorm(x + Sublayer(x)): the
    difference includes the LayerNorm's re-centering and re-scaling of the whole stream, not only what the sub-layer
    wrote. In a pre-norm model the update x + Sublayer(LayerNorm(x)) is additive, but the final LayerNorm is applied
    to each partial stream with its own statistics, so this is not the linearised attribution through a frozen final
    norm either. r(h_0) of a post-norm model reads the un-normalised embedding output. Logits are shift-invariant
    under softmax, so compare contributions with one another rather than as probabilities.

    `token_ids` (batch, target_length) chooses the followed token at each position; by default the model's own
    prediction (argmax of its logits).
    """
    decoder = model.model.decoder
    captured: list[tuple[int, int, torch.Tensor]] = []
    handles = []
    for layer_index, layer in enumerate(decoder.layers):
        for order, block_name in enumerate(SUBLAYERS):
            def hook(module, args, output, key=(layer_index, order)):
                captured.append((*key, output[0]))  # SublayerConnection.forward returns (hidden, extra)

            handles.append(getattr(layer, block_name).register_forward_hook(hook))
    try:
        with eval_mode(model):
            outputs = _forward(model, input_ids, decoder_input_ids, attention_mask, decoder_attention_mask,
                               output_hidden_states=True)
            if token_ids is None:
                token_ids = outputs.logits.argmax(dim=-1)
            token_ids = token_ids.to(outputs.logits.device)
            captured.sort(key=lambda item: item[:2])
            stream = [outputs.decoder_hidden_states[0]] + [hidden for _, _, hidden in captured]
            readouts = torch.stack([
                readout(model, hidden).float().gather(-1, token_ids[..., None])[..., 0] for hidden in stream
            ])
    finally:
        for handle in handles:
            handle.remove()

    expected = 1 + len(SUBLAYERS) * len(decoder.layers)
    if len(stream) != expected:
        raise RuntimeError(f"captured {len(stream)} residual-stream points, expected {expected}: did a hook not fire?")
    names = [f"layer {i + 1} {SUBLAYER_NAMES[block]}" for i in range(len(decoder.layers)) for block in SUBLAYERS]
    return LogitAttribution(names=names, contributions=readouts[1:] - readouts[:-1], embedding=readouts[0],
                            final=readouts[-1], token_ids=token_ids)
