"""Translate with a CTranslate2 export exactly as with `generate` (the export itself: `ctranslate2_convert`).

`CTranslate2Translator` decodes as our model's engine does (the §6.1 defaults of `translation.DecodingOptions`,
every row its own limit of source length + 50 tokens), with one difference inherent to CTranslate2: its beam search
stops once `num_beams` hypotheses have ended, which is transformers' `early_stopping=True`; transformers' default
(False) keeps searching while a running beam could still win, so a few sentences in a hundred may differ. With
`early_stopping=True` the fp32 export gives our `generate`'s tokens exactly, greedy and beam
(tests/test_ctranslate2.py). int8 weights change the numbers, so int8 is judged by BLEU and log-probabilities on a
model that has learned its task.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

try:
    import ctranslate2
except ImportError as error:  # an optional extra: say how to get it
    raise ImportError(f'CTranslate2 is not installed ({error}): pip install "vanilla-transformer[ctranslate2]"',
                      name="ctranslate2") from error

from ..modeling.modeling_vanilla_transformer import BEAM_SIZE, EXTRA_OUTPUT_TOKENS, LENGTH_PENALTY, new_token_limit
from ..translation import DecodingOptions

logger = logging.getLogger(__name__)

DECODING_FILE = "decoding.json"  # the runner's settings, next to CTranslate2's own files
TOKENIZER_DIR = "tokenizer"  # our tokenizer's files, in a folder of their own (CTranslate2 writes config.json)

# int8 weights within ±63 (7 bits) for the CPU int8 types. x86 CPUs without VNNI (AVX2-only ones, AVX-512 before
# Cascade Lake / Zen 4) multiply int8 matrices with `vpmaddubsw`, which adds two u8·s8 products in 16 bits with
# saturation; CTranslate2 shifts the activations to u8 (0..255), so with full-range weights (±127) a pair reaches
# 64 770 > 32 767 and saturates (oneDNN's "Nuances of int8 computations"). With ±63 a pair stays ≤ 32 130: no
# saturation on any CPU, VNNI or not, for one bit of weight precision (BENCHMARKS.md, "int8 by CPU"). The GPU types
# (int8_float16, int8_bfloat16; CPUs with AVX512_BF16 all have VNNI) keep CTranslate2's own ±127 weights.
INT8_WEIGHT_LIMIT = 63


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has VNNI (AVX-512 VNNI or AVX-VNNI); None where that cannot be told (not x86 Linux)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split(":", 1)[1].split()))


def warn_about_int8_saturation(decoding: dict, compute_type: str) -> None:
    """Warn when int8 weights of CTranslate2's full range (±127: an export from before INT8_WEIGHT_LIMIT, or a
    float export quantized on load with compute_type int8*) run on an x86 CPU without VNNI, where they saturate."""
    stored_int8 = decoding.get("quantization", "float32").startswith("int8")
    runs_int8 = compute_type.startswith("int8") or compute_type == "auto" or (compute_type == "default" and stored_int8)
    if runs_int8 and not (stored_int8 and decoding.get("int8_weight_limit")) and cpu_has_vnni() is False:
        logger.warning("int8 weights of CTranslate2's full range on a CPU without VNNI (AVX2-only, or AVX-512 "
                       "without VNNI): its int8 matrix products saturate (a toy model's BLEU fell from 84 to 48, the "
                       "demo model's from 17.40 to 17.21 on AVX2; BENCHMARKS.md 'int8 by "
                       "CPU'). Export again with `vanilla-transformer export --quantization "
                       "int8` (±%d weights, which saturate on no CPU), or use the float32 export", INT8_WEIGHT_LIMIT)


def check_export(model_dir: Path) -> None:
    """A folder written by `vanilla-transformer export --format ctranslate2`, with every file the runner reads: a
    `ValueError` naming the first that is missing or unreadable."""
    from ..base.outputs import TOKENIZER_FILES

    if not model_dir.is_dir():
        raise ValueError(f"{model_dir} is not a directory")
    if not (model_dir / "model.bin").is_file() or not (model_dir / DECODING_FILE).is_file():
        hint = " (it is a model folder: leave --engine ctranslate2 out, or export it first)" \
            if (model_dir / "model.safetensors").is_file() else ""
        raise ValueError(f"{model_dir} is not a folder written by `vanilla-transformer export --format "
                         f"ctranslate2` (model.bin and {DECODING_FILE} missing){hint}")
    for name in ("config.json", "shared_vocabulary.json"):
        read_json(model_dir / name)
    tokenizer = model_dir / TOKENIZER_DIR
    if not any((tokenizer / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{tokenizer} is missing or holds no tokenizer ({' or '.join(TOKENIZER_FILES)}): the export "
                         "is incomplete; export again")


def read_json(path: Path):
    """A JSON file of the export, or a `ValueError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: the export is incomplete; export again") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} cannot be read as JSON ({' '.join(str(error).split())}): the export is damaged; "
                         "export again") from None


def read_json_object(path: Path, keys: tuple[str, ...]) -> dict:
    value = read_json(path)
    missing = [key for key in keys if key not in value] if isinstance(value, dict) else list(keys)
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: the export is damaged; export again")
    return value


class CTranslate2Translator:
    """An exported folder, run by `ctranslate2.Translator` with our decoding settings.

    `generate_ids` decodes one batch of token ids, as `generate` does for the padded batch; `generate_alternatives`
    gives `deployment.engines.CTranslate2Engine` each row's hypotheses as if decoded alone.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", compute_type: str = "default", threads: int = 0):
        model_dir = Path(model_dir)
        check_export(model_dir)
        self.decoding = read_json_object(model_dir / DECODING_FILE, ("max_positions", "end_tokens",
                                                                      "suppress_sequences"))
        device, _, index = device.partition(":")
        try:
            self.translator = ctranslate2.Translator(str(model_dir), device=device, device_index=int(index or 0),
                                                     compute_type=compute_type, intra_threads=threads)
        except (RuntimeError, ValueError) as error:
            if device != "cpu" and "device" in str(error).lower():
                raise
            raise ValueError(f"CTranslate2 cannot load the export {model_dir} ({' '.join(str(error).split())}): "
                             "model.bin or config.json is damaged or incomplete; export again") from None
        self.tokens = read_json(model_dir / "shared_vocabulary.json")
        if not isinstance(self.tokens, list):
            raise ValueError(f"{model_dir / 'shared_vocabulary.json'} is not a list of tokens: the export is damaged; "
                             "export again")
        self.ids = {token: token_id for token_id, token in enumerate(self.tokens)}
        if self.decoding.get("not_carried"):
            logger.warning("the model's generation_config sets %s, which this runner does not apply",
                           ", ".join(self.decoding["not_carried"]))
        self.model_dir = model_dir
        self._tokenizer = None
        if device == "cpu" or (device == "auto" and ctranslate2.get_cuda_device_count() == 0):
            warn_about_int8_saturation(self.decoding, compute_type)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir / TOKENIZER_DIR)
        return self._tokenizer

    def generate_ids(self, sources: list[list[int]], num_beams: int = BEAM_SIZE,
                     length_penalty: float = LENGTH_PENALTY, max_new_tokens: int | None = None) -> list[list[int]]:
        """The generated ids of each source (without the decoder start token; with the end token when one was
        generated), as `generate(num_beams, length_penalty, max_new_tokens, early_stopping=True)` gives them for
        the padded batch. `max_new_tokens` defaults to the longest source + 50."""
        if not sources:
            return []
        longest = max(len(source) for source in sources)
        max_new_tokens = max_new_tokens if max_new_tokens is not None else longest + EXTRA_OUTPUT_TOKENS
        self._check_positions(longest, max_new_tokens)
        batch = [[self.tokens[i] for i in source] for source in sources]
        forced = self.decoding.get("forced_eos_token")
        if forced is None:
            best = [result.hypotheses[0] for result in self.search(batch, num_beams, length_penalty, max_new_tokens)]
        else:
            best = self._with_forced_end(batch, num_beams, length_penalty, max_new_tokens, forced)
        return [[self.ids[token] for token in tokens] for tokens in best]

    def _check_positions(self, longest: int, max_new_tokens: int) -> None:
        """A ValueError naming --max_positions when the export's position table cannot hold a source of `longest`
        tokens or `max_new_tokens` output tokens (CTranslate2 itself would fail with a RuntimeError)."""
        limit = self.decoding["max_positions"]
        if longest > limit or max_new_tokens > limit:
            raise ValueError(f"a source of {longest} tokens with up to {max_new_tokens} output tokens needs "
                             f"{max(longest, max_new_tokens)} positions, but the export holds {limit}; export "
                             f"again with --max_positions {max(longest, max_new_tokens)} (or more)")

    def search(self, batch: list[list[str]], num_beams: int, length_penalty: float, max_new_tokens: int,
                hypotheses: int = 1):
        end_tokens = self.decoding["end_tokens"]
        return self.translator.translate_batch(
            batch, beam_size=num_beams, length_penalty=length_penalty if num_beams > 1 else 0.0,
            max_decoding_length=max_new_tokens, min_decoding_length=0, max_input_length=0,
            # With the end token in the hypothesis, CTranslate2 divides a score by the same length as transformers.
            return_end_token=True, end_token=end_tokens if len(end_tokens) > 1 else None,
            suppress_sequences=self.decoding["suppress_sequences"] or None,
            num_hypotheses=hypotheses, return_scores=hypotheses > 1)

    def _with_forced_end(self, batch, num_beams: int, length_penalty: float, limit: int, forced: str):
        """The best hypotheses when `generate` forces `forced` as the token at the length limit
        (`forced_eos_token_id`; OPUS-MT generation configs set it). CTranslate2 has no such option, so:

        * A search that stopped before the limit never reached the forced step: its result stands. Beam search
          stops once `num_beams` hypotheses have ended (early_stopping=True); if any of the `num_beams` returned
          hypotheses has `limit` tokens, fewer had ended one step before the limit.
        * Greedy: the first `limit` − 1 tokens, then the forced token.
        * Beam search: decode `limit` − 1 tokens instead. The forced step appends the forced token (log-probability
          0 once forced) to every running beam, so a hypothesis cut there scores its sum divided by limit^α instead
          of (limit − 1)^α; the best of the ended and the rescored cut hypotheses wins. (A running beam that
          CTranslate2 does not return ranks below a returned cut one, so it cannot win.)
        """
        if limit == 1:
            return [[forced] for _ in batch]
        results = self.search(batch, num_beams, length_penalty, limit, hypotheses=num_beams)
        best, again = [], []
        for row, result in enumerate(results):
            if all(len(tokens) < limit for tokens in result.hypotheses):
                best.append(result.hypotheses[0])
            elif num_beams == 1:
                best.append(result.hypotheses[0][:limit - 1] + [forced])
            else:
                best.append(None)
                again.append(row)
        if again:
            ends = set(self.decoding["end_tokens"])
            rescale = ((limit - 1) / limit) ** length_penalty
            shorter = self.search([batch[row] for row in again], num_beams, length_penalty, limit - 1,
                                   hypotheses=num_beams)
            for row, result in zip(again, shorter):
                candidates = [(score, tokens) if tokens and tokens[-1] in ends else (score * rescale, tokens + [forced])
                              for score, tokens in zip(result.scores, result.hypotheses)]
                best[row] = max(candidates, key=lambda candidate: candidate[0])[1]
        return best

    # -- the engine interface's needs (deployment.engines.CTranslate2Engine) ------------------------------------------

    @property
    def source_limit(self) -> int:
        """The longest source piece: the position table must hold it and its source length + 50 output tokens."""
        return max(1, self.decoding["max_positions"] - EXTRA_OUTPUT_TOKENS)

    def new_token_limit(self, source_length: int) -> int:
        return new_token_limit(source_length)

    def tokenizer_problem(self) -> str | None:
        """How the export's tokenizer disagrees with its vocabulary (size, or any token at another id), or None."""
        tokenizer = self.tokenizer
        # A model's vocabulary may be larger than its tokenizer: the export fills the unused ids with placeholders.
        unused = self.tokens[len(tokenizer):]
        if len(tokenizer) > len(self.tokens) or not all(token.lstrip("<").startswith("unused_") for token in unused):
            return f"it has {len(tokenizer)} tokens, the export's vocabulary {len(self.tokens)}"
        for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if token != self.tokens[token_id]:
                return f"its token {token_id} is {token!r}, the export's {self.tokens[token_id]!r}"
        return None

    def generate_alternatives(self, rows: list[list[int]], limits: list[int],
                              options: DecodingOptions) -> list[list[list[int]]]:
        """The `options.n_best` hypotheses (token ids, best first) of each row, row i at most `limits[i]` new tokens,
        each as it would be decoded alone (see `CTranslate2Engine`)."""
        n_best, beams, penalty = options.n_best, options.num_beams, options.length_penalty
        if rows:
            self._check_positions(max(len(row) for row in rows), max(limits))
        if options.do_sample:
            return [self._sample(row, limit, options) for row, limit in zip(rows, limits)]
        if self.decoding.get("forced_eos_token") is not None:  # its own exact path, best hypothesis only
            return [self.generate_ids([row], beams, penalty, limit) * n_best for row, limit in zip(rows, limits)]
        hypotheses = max(n_best, beams)  # all the beams: to see whether any reached the row's own limit
        tokens = [[self.tokens[i] for i in row] for row in rows]
        results = list(self.search(tokens, beams, penalty, max(limits), hypotheses=hypotheses))
        for row, limit in enumerate(limits):
            if limit < max(limits) and any(len(h) >= limit for h in results[row].hypotheses):
                results[row] = self.search([tokens[row]], beams, penalty, limit, hypotheses=hypotheses)[0]
        return [[[self.ids[token] for token in h] for h in result.hypotheses[:n_best]] for result in results]

    def _sample(self, row: list[int], limit: int, options: DecodingOptions) -> list[list[int]]:
        """`options.n_best` samples of one row (decoded alone: its batch mates cannot change its distribution)."""
        results = self.translator.translate_batch(
            [[self.tokens[i] for i in row]] * options.n_best, beam_size=1, max_decoding_length=limit,
            min_decoding_length=0, max_input_length=0, return_end_token=True, sampling_topk=options.top_k or 0,
            sampling_topp=options.top_p if options.top_p is not None else 1.0,
            sampling_temperature=options.temperature if options.temperature is not None else 1.0,
            end_token=self.decoding["end_tokens"] if len(self.decoding["end_tokens"]) > 1 else None,
            suppress_sequences=self.decoding["suppress_sequences"] or None)
        return [[self.ids[token] for token in result.hypotheses[0]] for result in results]
