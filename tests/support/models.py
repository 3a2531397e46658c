"""Tiny random models and batches for the model-level tests (test_model.py and the files that test the model's
contract with transformers)."""

import torch

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

VOCAB = 40


def tiny_config(**overrides):
    sizes = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=48, dropout=0.0,
                 max_position_embeddings=64)
    return VanillaTransformerConfig.tiny(**{**sizes, **overrides})


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return VanillaTransformerForConditionalGeneration(tiny_config(**overrides)).eval()


def batch(seed=0, batch_size=3, src_len=7, tgt_len=5):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (batch_size, src_len), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, src_len - 3:] = 0
    input_ids[attention_mask == 0] = 0
    labels = torch.randint(4, VOCAB, (batch_size, tgt_len), generator=g)
    return input_ids, attention_mask, labels
