"""One BPE vocabulary shared by source and target, as in the paper (§5.1), built with `tokenizers`.

Special tokens, in this order: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3 (the model config's
pad/bos/eos ids; ``<s>`` is the decoder start token). Every encoded sequence ends with ``</s>`` and has no ``<s>``
in front, so ``tok(src, text_target=tgt)`` gives ``input_ids`` and ``labels`` that both end in 2.

Normalization — the only ways ``decode(encode(x))`` can differ from ``x``:

* Unicode NFKC: composed and decomposed accents become the same character (``a`` + U+0301 -> ``á``) and
  compatibility characters fold to their plain form (ligature ``ﬁ`` -> ``fi``, full-width ``Ａ`` -> ``A``,
  ``…`` -> ``...``, ``½`` -> ``1⁄2``, no-break space -> space). Accented letters, ``¿ ¡``, curly quotes
  ``“ ” ‘ ’``, dashes and digits are left as they are.
* Whitespace: every run of whitespace (spaces, tabs, newlines) becomes one space; leading and trailing
  whitespace is removed. So ``"a  b\\n"`` comes back as ``"a b"``.

Nothing else is lost: a character the BPE never saw in training (an emoji, another script, a rare symbol) is spelled
as the bytes of its UTF-8 encoding, one token each (``<0x00>`` ... ``<0xFF>``, SentencePiece's byte fallback, which
the `tokenizers` BPE model and its ``ByteFallback`` decoder implement), so ``decode(encode(x))`` is ``x`` after the
normalization above, for every string. The 256 byte tokens count in the vocabulary size (they take the place of 256
merges) and follow the merges, so a tokenizer's ids up to its merges are the ones it had without them.

Tokenizers trained before byte fallback existed (``byte_fallback=False``, and every folder saved before it) still load
and train: there a character never seen in training becomes ``<unk>`` (id 3) and is lost in decoding. Digits, ASCII and
the Latin-1 letters and punctuation are always in the alphabet, with or without byte fallback.

Pre-tokenization is SentencePiece's: a space is the ``▁`` prefix of the following piece (Metaspace), so spaces
come back exactly and no byte-level alphabet is needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
METASPACE = "▁"

# Always in the vocabulary, whatever the training text: printable ASCII (digits included), the Latin-1 letters
# and signs (accents, ñ, ü, ¿, ¡, «, »), curly quotes and dashes.
BASE_ALPHABET = sorted(
    {chr(c) for c in range(0x21, 0x7F)}
    | {chr(c) for c in range(0xA1, 0x100) if chr(c).isprintable() and c != 0xAD}
    | set("“”‘’–—…€")
)


# A character outside the vocabulary is spelled with these, one token per byte of its UTF-8 encoding.
BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]

# The smallest vocabulary: the special tokens, the base alphabet, the word-start marker and the byte tokens, before
# any merge (without byte fallback: `MIN_VOCAB_SIZE - len(BYTE_TOKENS)`).
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + len(BASE_ALPHABET) + 1 + len(BYTE_TOKENS)


def min_vocab_size(byte_fallback: bool = True) -> int:
    return MIN_VOCAB_SIZE if byte_fallback else MIN_VOCAB_SIZE - len(BYTE_TOKENS)


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])


def train_shared_bpe(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    *,
    model_max_length: int = 1024,
    limit_alphabet: int | None = None,
    show_progress: bool = False,
    byte_fallback: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a BPE tokenizer on ``texts`` (source and target sentences together) and wrap it for transformers.

    vocab_size: total size including the 4 special tokens, the base alphabet and the 256 byte tokens (at least
        `min_vocab_size(byte_fallback)`).
    min_frequency: a pair must occur this often to be merged.
    model_max_length: what the wrapped tokenizer reports (and truncates to when asked).
    limit_alphabet: keep only the most frequent characters beyond `BASE_ALPHABET` (None keeps all seen).
    byte_fallback: spell unseen characters as bytes (True) or as `<unk>` (False, the tokenizers of old folders).

    ValueError when `vocab_size` is below `min_vocab_size(byte_fallback)` or `texts` hold no text at all.
    """
    smallest = min_vocab_size(byte_fallback)
    if vocab_size < smallest:
        raise ValueError(f"vocab_size {vocab_size} is below the {smallest} tokens every vocabulary holds "
                         f"({len(SPECIAL_TOKENS)} special tokens, {len(BASE_ALPHABET)} base characters, the word "
                         f"start {METASPACE!r}" + (f" and {len(BYTE_TOKENS)} byte tokens" if byte_fallback else "")
                         + f"): use at least {smallest}")
    texts = CountedTexts(texts)
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    options = {}
    if limit_alphabet is not None:  # the limit counts the base alphabet, which is always kept
        options["limit_alphabet"] = limit_alphabet + len(BASE_ALPHABET) + 1
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS) if byte_fallback else vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        # The word-start marker too: "▁" + an unseen character must still give "▁" + <unk>.
        initial_alphabet=BASE_ALPHABET + [METASPACE],
        show_progress=show_progress,
        **options,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if not texts.non_blank:
        raise ValueError("no text to train the tokenizer on: every sentence given was empty")
    for token_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != token_id:  # trainers put special tokens first; make sure of it
            raise RuntimeError(f"special token {token} got id {tokenizer.token_to_id(token)}, expected {token_id}")
    if byte_fallback:
        tokenizer = with_byte_fallback(tokenizer)
    eos_id = tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    logger.info("trained a shared BPE vocabulary of %d tokens", tokenizer.get_vocab_size())
    return wrap_tokenizer(tokenizer, model_max_length=model_max_length)


def with_byte_fallback(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` (a trained BPE) with the 256 byte tokens after its vocabulary, the BPE model told to spell unknown
    characters with them and the decoder told to turn runs of them back into characters."""
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    learned = [token for token in BYTE_TOKENS if token in vocab]
    if learned:  # only a corpus full of the literal text "<0x41>" could teach the BPE such a token
        raise ValueError(f"the training text made byte-token spellings into tokens ({', '.join(learned[:3])}): "
                         "train with byte_fallback=False")
    vocab.update({token: len(vocab) + index for index, token in enumerate(BYTE_TOKENS)})
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, spec["decoder"]]}
    return Tokenizer.from_str(json.dumps(spec))


class CountedTexts:
    """The texts, counting on the way those that are not blank (a tokenizer trained on nothing would be only its
    alphabet)."""

    def __init__(self, texts: Iterable[str]):
        self.texts, self.non_blank = texts, 0

    def __iter__(self):
        for text in self.texts:
            if text and not text.isspace():
                self.non_blank += 1
            yield text


def wrap_tokenizer(tokenizer: Tokenizer, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer around a trained `tokenizers.Tokenizer` with this module's special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
        # Decoding must give back the text as normalized, not "English-cleaned" (" ," -> ",", " n't" ...).
        clean_up_tokenization_spaces=False,
    )
