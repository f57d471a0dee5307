"""A small decoder-only transformer language model (GPT-style, pre-norm, causal attention) on
random token ids: attention, layer norm and a vocabulary projection."""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, SEQ_LEN, D_MODEL, HEADS, LAYERS = 2048, 128, 256, 4, 2


class TinyLM(nn.Module):
    causal: torch.Tensor  # a buffer: the attention mask, built once

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, D_MODEL)
        self.positions = nn.Embedding(SEQ_LEN, D_MODEL)
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, dim_feedforward=4 * D_MODEL, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(SEQ_LEN), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(positions)
        x = self.blocks(x, mask=self.causal[: ids.shape[1], : ids.shape[1]], is_causal=True)
        return self.head(self.norm(x))


def build_model() -> nn.Module:
    return TinyLM()


def make_batch(batch_size: int, device):
    return torch.randint(0, VOCAB, (batch_size, SEQ_LEN + 1), device=device)


def loss_fn(model, batch):
    inputs, targets = batch[:, :-1], batch[:, 1:]
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
