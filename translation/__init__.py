"""Translation: decoding options, the engine interface, and `translate()` (every command, training-time evaluation and
the server decode through this layer).

    from vanilla_transformer.translation import DecodingOptions, load_engine, translate
    engine = load_engine("runs/bible/final")
    translate(engine, ["Dios es amor."])                                        # beam 4, α 0.6 (§6.1)
    translate(engine, ["Dios es amor."], DecodingOptions(do_sample=True, top_p=0.9, seed=1))
    translate_html(engine, ["<p>Dios es <em>amor</em>.</p>"])                  # markup kept (markup.py)
"""

from .engine import RowLimits, TranslationEngine, TransformersEngine, pad_batch
from .folders import load_engine, load_model_and_tokenizer
from .markup import HtmlBatch, HtmlDocument, translate_html
from .options import DecodingOptions, DecodingOptionsError
from .translate import Plan, assemble, plan, split_to_fit, translate, translate_alternatives

__all__ = ["DecodingOptions", "DecodingOptionsError", "HtmlBatch", "HtmlDocument", "Plan", "RowLimits",
           "TranslationEngine", "TransformersEngine", "assemble", "load_engine", "load_model_and_tokenizer",
           "pad_batch", "plan", "split_to_fit", "translate", "translate_alternatives", "translate_html"]
