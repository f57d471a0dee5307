"""The oracle's side of `amp-advisor tune --hf gpt2` (bench_tune.py): the same GPT-2 shape written
here with transformers directly, not with amp_advisor/hf.py, so the oracle shares no code with the
tuner. The shape is --hf's default small size (2 layers, hidden 256, 4 heads, vocabulary 4096,
sequence 64); bench_tune.py checks the parameter count against what the tuner's trials recorded."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SEQ_LEN = 64
VOCAB = 4096


def build_model():
    config = GPT2Config(n_layer=2, n_embd=256, n_head=4, vocab_size=VOCAB, bos_token_id=VOCAB - 1,
                        eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1)
    return GPT2LMHeadModel(config)


def make_batch(batch_size, device):
    ids = torch.randint(0, VOCAB - 1, (batch_size, SEQ_LEN), device=device)
    return {"input_ids": ids, "labels": ids}
