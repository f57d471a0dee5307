"""A 2-layer BERT for sequence classification, built from a config (no download): a Hugging Face
model as users bring them, with its own loss in `output.loss` (the default loss_fn uses it)."""

import torch
from transformers import BertConfig, BertForSequenceClassification

SEQ_LEN = 128
VOCAB = 8192


def build_model():
    config = BertConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=SEQ_LEN, num_labels=2)
    return BertForSequenceClassification(config)


def make_batch(batch_size, device):
    return {
        "input_ids": torch.randint(0, VOCAB, (batch_size, SEQ_LEN), device=device),
        "attention_mask": torch.ones(batch_size, SEQ_LEN, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (batch_size,), device=device),
    }
