"""The toy task of the CTranslate2 and serving tests: reverse a sentence of words w0..w15. A word-level tokenizer,
random pairs, a few dozen Adam steps, and the two small model shapes trained on it (`ours`)."""

import math
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from vanilla_transformer.configuration.configuration_vanilla_transformer import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

WORDS = [f"w{i}" for i in range(16)]
SHAPE = dict(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=2,
             encoder_ffn_dim=64, decoder_ffn_dim=48, dropout=0.0, max_position_embeddings=64)
# vocab_size 24 > the 20 tokens of the tokenizer: the unused ids are exported as placeholders.
MODELS = {
    "post_interleaved": dict(vocab_size=24, normalize_before=False, positional_encoding="interleaved",
                             activation_function="relu"),
    "pre_concatenated": dict(vocab_size=24, normalize_before=True, positional_encoding="concatenated",
                             activation_function="gelu", add_final_logits_bias=True, scale_embedding=False),
}
TRAIN_STEPS = 80


def word_tokenizer(special_first: bool = True, names: list[str] | None = None):
    """A word-level tokenizer over WORDS that appends </s>. Our layout (pad 0, <s> 1, </s> 2, <unk> 3, words), or
    with `special_first=False` Marian's (</s> 0, <unk> 1, words, <pad> last), or the tokens `names` in their order."""
    from vanilla_transformer.training.tokenizer import wrap_tokenizer

    if names is None:
        names = ["<pad>", "<s>", "</s>", "<unk>", *WORDS] if special_first else ["</s>", "<unk>", *WORDS, "<pad>"]
    vocab = {name: i for i, name in enumerate(names)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    tokenizer.decoder = decoders.WordPiece()  # joins the words with spaces
    return wrap_tokenizer(tokenizer)


def toy_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """(source, target) = (2 to 9 random words, the same words reversed)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 9))]
        pairs.append((" ".join(words), " ".join(reversed(words))))
    return pairs


def train_toy(model, tokenizer, steps: int = TRAIN_STEPS, seed: int = 0, schedule=None):
    """A few dozen Adam steps on the reversal task: non-degenerate weights, imperfect translations. `schedule`:
    the learning rate's factor at each step (default: a constant 3e-3)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) if schedule else None
    model.train()
    for step in range(steps):
        batch = toy_pairs(32, seed * 1000 + step)
        inputs = tokenizer([s for s, _ in batch], padding=True, return_tensors="pt")
        labels = tokenizer([t for _, t in batch], padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler:
            scheduler.step()
    return model.eval()


def ours(name: str):
    torch.manual_seed(0)
    config = VanillaTransformerConfig(**SHAPE, **MODELS[name], label_smoothing=0.0)
    model = VanillaTransformerForConditionalGeneration(config)
    if model.final_logits_bias is not None:
        model.final_logits_bias.normal_(0.0, 0.5)  # a fixed (untrained) bias that matters
    tokenizer = word_tokenizer()
    return train_toy(model, tokenizer), tokenizer


TEST_PAIRS = toy_pairs(48, seed=999)


LEARNED_STEPS = 400


def learned_model():
    """The toy model trained until it translates its task well: Adam with a short warmup and a cosine decay to 0, so
    that it ends in a minimum rather than wherever the last steps at a constant rate left it (trained with constant
    rate 3e-3 its fp32 BLEU on TEST_PAIRS ranged from 62 to 91 with torch's kernels of the CPU and threads)."""
    torch.manual_seed(0)
    config = VanillaTransformerConfig(**SHAPE, **MODELS["post_interleaved"], label_smoothing=0.0)
    model, tokenizer = VanillaTransformerForConditionalGeneration(config), word_tokenizer()
    schedule = lambda step: min(1.0, (step + 1) / 40) * 0.5 * (1 + math.cos(math.pi * step / LEARNED_STEPS))
    return train_toy(model, tokenizer, steps=LEARNED_STEPS, schedule=schedule), tokenizer
