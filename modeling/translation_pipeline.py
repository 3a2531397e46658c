"""`pipeline("translation")` for transformers 5, which removed the task.

transformers 5 dropped the `translation`, `summarization` and `text2text-generation` pipelines (the task name now
raises a `KeyError` pointing at chat models). An encoder–decoder translation model still wants one, so this module
provides `TranslationPipeline` — transformers 4's behaviour: text in, `[{"translation_text": ...}]` out, decoding
with the model's `generation_config` (the §6.1 beam search here) unless the call overrides it — and
`register_translation_pipeline()`, which makes the task name resolve to it again:

    from transformers import pipeline
    import vanilla_transformer.modeling.translation_pipeline  # registers the task
    translator = pipeline("translation", model="path/or/repo")
    translator("El gato duerme.")            # [{"translation_text": "The cat sleeps."}]

Registration is needed only where transformers lacks the task; where it has its own (transformers 4), that one
is left in place. `TranslationPipeline(model=..., tokenizer=...)` works without any registration.
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForSeq2SeqLM, Pipeline

logger = logging.getLogger(__name__)

TASK = "translation"


class TranslationPipeline(Pipeline):
    """Translate strings with any encoder–decoder model that has `generate` (ours, Marian, T5, ...).

    Call with a string or a list of strings; returns `[{"translation_text": str}]` for a string and one dict per
    input for a list (a list of dicts per input with `num_return_sequences` > 1); an empty list gives `[]`.
    Keyword arguments of the call or of the constructor that are generation parameters (`num_beams`,
    `max_new_tokens`, `generation_config`, ...) go to `model.generate`; otherwise the model's `generation_config`
    decides. `truncation=True` cuts inputs to
    the tokenizer's `model_max_length`; `clean_up_tokenization_spaces` is passed to `decode`.
    """

    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def _sanitize_parameters(self, truncation=None, clean_up_tokenization_spaces=None, **generate_kwargs):
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = ({} if clean_up_tokenization_spaces is None
                              else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces})
        return preprocess_params, generate_kwargs, postprocess_params

    def __call__(self, inputs: str | list[str], **kwargs):
        if not isinstance(inputs, str) and not (isinstance(inputs, list) and all(isinstance(x, str) for x in inputs)):
            raise TypeError(f"translation input must be a string or a list of strings, got {type(inputs).__name__}")
        if isinstance(inputs, list) and not inputs:
            return []  # nothing to translate (the base class would index the empty list)
        result = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and all(len(r) == 1 for r in result):
            return [r[0] for r in result]  # one translation per input: flat, as transformers 4 did
        return result

    def preprocess(self, text: str, truncation: bool = False):
        return self.tokenizer(text, return_tensors="pt", truncation=truncation)

    def _forward(self, model_inputs, **generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        batch = model_inputs["input_ids"].shape[0]
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)
        if not isinstance(output_ids, torch.Tensor):  # return_dict_in_generate=True
            output_ids = output_ids.sequences
        return {"output_ids": output_ids.reshape(batch, output_ids.shape[0] // batch, *output_ids.shape[1:])}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces: bool | None = None):
        return [
            {"translation_text": self.tokenizer.decode(ids, skip_special_tokens=True,
                                                       clean_up_tokenization_spaces=clean_up_tokenization_spaces)}
            for ids in model_outputs["output_ids"][0]
        ]


def register_translation_pipeline() -> bool:
    """Make `pipeline("translation", ...)` build a `TranslationPipeline` when transformers has no such task.

    Returns True when it registered the task, False when transformers already provides one (left untouched).
    """
    import transformers.pipelines as pipelines

    registered = pipelines.PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl")
    if registered is TranslationPipeline:
        return True
    if registered is not None:
        return False
    removed = getattr(pipelines, "REMOVED_TASKS", {})
    removed.pop(TASK, None)  # transformers 5 refuses the name before looking at the registry
    pipelines.PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=TranslationPipeline,
                                                  pt_model=AutoModelForSeq2SeqLM, type="text")
    logger.debug("registered the %r pipeline task", TASK)
    return True


register_translation_pipeline()

__all__ = ["TranslationPipeline", "register_translation_pipeline"]
