"""A tiny MLP on a machine whose C++ compiler is missing: inductor cannot build its kernels, so
torch.compile raises in the first step (eager runs)."""
import torch._inductor.config as inductor_config
from tiny_base import loss_fn, make_batch  # noqa: F401
from tiny_base import build_model as build_tiny


def build_model():
    inductor_config.cpp.cxx = ("/nonexistent/amp-advisor-test-c++",)
    return build_tiny()
