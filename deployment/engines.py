"""The two translation engines, by name: a model folder run by transformers' `generate` (the translation layer's
`TransformersEngine`), or a folder written by `vanilla-transformer export --format ctranslate2` run by CTranslate2
(`CTranslate2Engine`). Both implement `translation.TranslationEngine`, so `translation.translate` and the server
treat them alike.

    engine = load_engine("runs/bible/final")                     # or engine="ctranslate2" on an export
    translate(engine, ["Dios es amor."])                         # -> ["God is love."]
"""

from __future__ import annotations

import threading

from ..translation import DecodingOptions, TranslationEngine
from ..translation import load_engine as load_model_folder

ENGINES = ("transformers", "ctranslate2")


class CTranslate2Engine:
    """A CTranslate2 export (`ctranslate2_runtime.CTranslate2Translator`), each row with its own length limit.

    CTranslate2 takes one `max_decoding_length` per call, so a batch runs to its longest row's limit; a row whose
    returned hypotheses all ended before the row's own limit was searched exactly as alone (the search is the same up
    to there), any other row is decoded again on its own with its own limit. Sampling decodes each row alone; it
    cannot be seeded: CTranslate2's `set_random_seed` does not make its sampling reproducible (it seeds the calling
    thread, not the translator's workers; OpenNMT/CTranslate2#1757), so `seed` is refused here."""

    name = "ctranslate2"

    def __init__(self, translator):
        self.translator = translator
        self.tokenizer = translator.tokenizer
        self.tokenizer_lock = threading.Lock()
        # The export's position table must hold the source and its output tokens.
        self.max_positions = translator.decoding["max_positions"]
        self.source_limit = translator.source_limit

    def new_token_limit(self, source_length: int) -> int:
        return self.translator.new_token_limit(source_length)

    def unsupported(self, options: DecodingOptions) -> str | None:
        if options.seed is not None:
            return "seed: CTranslate2's sampling cannot be seeded (its workers' random generators are out of reach); " \
                   "leave seed out, or sample reproducibly with the transformers engine"
        return None

    def generate(self, rows: list[list[int]], limits: list[int], options: DecodingOptions) -> list[list[str]]:
        ids = self.translator.generate_alternatives(rows, limits, options)
        with self.tokenizer_lock:
            return [[text.strip() for text in self.tokenizer.batch_decode(row, skip_special_tokens=True)]
                    for row in ids]


def load_engine(model_dir: str, engine: str = "transformers", device: str | None = None,
                threads: int = 0) -> TranslationEngine:
    """The engine `engine` ("transformers" or "ctranslate2") for `model_dir` (`threads`: CTranslate2's CPU threads,
    0 = its default). ValueError names what is wrong: not that kind of folder, a tokenizer of another model."""
    if engine == "transformers":
        return load_model_folder(model_dir, device)
    if engine != "ctranslate2":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    from .ctranslate2_runtime import CTranslate2Translator

    translator = CTranslate2Translator(model_dir, device=device or "auto", threads=threads)  # auto: a GPU if any
    mismatch = translator.tokenizer_problem()
    if mismatch:
        raise ValueError(f"{model_dir}: the tokenizer does not belong to the export ({mismatch}): the folder mixes "
                         "files of different models; export again")
    return CTranslate2Engine(translator)
