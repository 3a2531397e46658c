"""Look inside a trained model: attention maps (§3.2), positional encodings (§3.5), the logit lens, direct logit
attribution and neighbours in the shared embedding space (§3.4).

`vanilla-transformer inspect MODEL_DIR --src "..." --out DIR` (`report.py`; the command is `vanilla_transformer.cli.inspect`) writes them all as figures and a report.
"""

from .attention import AttentionMaps, attention_maps
from .embeddings import Neighbour, nearest_tokens
from .inputs import EncodedPair, encode_pair, translate
from .lens import LogitAttribution, logit_attribution, logit_lens, readout, top_tokens
from .plots import plot_attention_layer, plot_logit_attribution, plot_logit_lens, plot_positional_encoding

__all__ = [
    "AttentionMaps",
    "EncodedPair",
    "LogitAttribution",
    "Neighbour",
    "attention_maps",
    "encode_pair",
    "logit_attribution",
    "logit_lens",
    "nearest_tokens",
    "plot_attention_layer",
    "plot_logit_attribution",
    "plot_logit_lens",
    "plot_positional_encoding",
    "readout",
    "top_tokens",
    "translate",
]
