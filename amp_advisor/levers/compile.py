"""torch.compile as a lever: the mode, or eager ("off").

Measured apart from the step time (base.Lever.one_time_cost): the trial's first step holds the
compile, cold, because the scope gives each trial a fresh inductor cache, on disk and in memory
(torch's own fresh_cache); the warm-cache figure is taken after resetting dynamo, from the cache
the cold compile filled. Each trial compiles one batch size with static shapes (`dynamic=False`):
a second batch size compiled in the same process without it gets a dynamic-shape graph, and that
is not what a training run with a fixed batch gets.

Pitfalls handled here, once, for the trials, `MixedPrecision` and the snippets alike:
- autocast around a compiled region also runs the compiled backward under autocast, where fp16
  gradients overflow that eager's do not (pytorch #153044): `backward_pass_autocast = "off"`
  where the installed torch has that setting;
- a guard that keeps failing falls back to eager silently after `recompile_limit` recompiles:
  in a trial that is an error (`fail_on_recompile_limit_hit`), so what is measured was compiled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import register
from .base import OFF, Fragment, Lever, Stage

CPU_MODES = ("default", "max-autotune-no-cudagraphs")
# reduce-overhead and max-autotune capture CUDA graphs: a GPU's modes alone
CUDA_MODES = ("default", "reduce-overhead", "max-autotune")
CUDA_VALID = (*CUDA_MODES, "max-autotune-no-cudagraphs")
COLD_COMPILE_ALLOWANCE_S = 600.0  # a first step may take this much longer (max-autotune on a CPU: minutes)
BACKWARD_AUTOCAST_OFF = "off"


def _functorch_config():
    import torch._functorch.config as functorch_config

    return functorch_config if hasattr(functorch_config, "backward_pass_autocast") else None


class Compile(Lever):
    name = "compile"
    title = "torch.compile"
    stage = Stage.COMPILE
    explore = "leaders"  # 5-25 s a configuration on a CPU: tried on the leaders, not everywhere
    one_time_cost = True
    first_step_allowance_s = COLD_COMPILE_ALLOWANCE_S

    def values(self, device) -> tuple[str, ...]:
        kind = device.torch_device.split(":")[0]
        if kind == "cuda":
            return (OFF, *CUDA_MODES)
        if kind == "cpu":
            return (OFF, *CPU_MODES)
        return (OFF,)  # inductor has no training backend for MPS worth tuning

    def valid(self, device_type: str) -> tuple[str, ...]:
        return (OFF, *(CUDA_VALID if device_type == "cuda" else CPU_MODES if device_type == "cpu" else ()))

    def label(self, value: str) -> str:
        return f"compiled ({value})"

    def install(self, model: Any, value: str, device_type: str) -> Any:
        import torch

        return torch.compile(model, mode=value, dynamic=False)

    @contextlib.contextmanager
    def scope(self, value: str) -> Iterator[None]:
        """A fresh inductor cache and fresh dynamo state for the trial, restored afterwards. The
        cache is torch's own fresh_cache: a new on-disk directory (inductor's and triton's) and
        inductor's in-process caches cleared before and after, so that a second trial in the same
        worker compiles cold too (a module loaded by an earlier compile is not reused)."""
        import torch._dynamo
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
        functorch_config = _functorch_config()
        with contextlib.ExitStack() as stack:
            stack.enter_context(_fresh_inductor_cache())
            stack.enter_context(torch._dynamo.config.patch(fail_on_recompile_limit_hit=True))
            if functorch_config is not None:
                stack.enter_context(functorch_config.patch(backward_pass_autocast=BACKWARD_AUTOCAST_OFF))
            try:
                yield
            finally:
                torch._dynamo.reset()

    def enable(self, value: str) -> None:
        functorch_config = _functorch_config()
        if functorch_config is not None:
            functorch_config.backward_pass_autocast = BACKWARD_AUTOCAST_OFF

    def observe(self) -> dict[str, float]:
        from torch._dynamo.utils import counters

        return {"graph_breaks": float(sum(counters["graph_break"].values())),
                "graphs": float(counters["stats"]["unique_graphs"])}

    def reset(self) -> None:
        import torch._dynamo

        torch._dynamo.reset()

    def fragment(self, framework: str, value: str, device_type: str) -> Fragment:
        mode = f'mode="{value}"'
        off = ("torch._functorch.config.backward_pass_autocast = \"off\"  # the compiled backward "
               "outside autocast, as eager's (pytorch #153044)")
        if framework == "torch":
            return Fragment(lines=[off, f"model = torch.compile(model, {mode}, dynamic=False)  # static shapes, "
                                        "as measured"], imports=["import torch._functorch.config"])
        if framework == "lightning":
            return Fragment(lines=[off, f"lightning_module = torch.compile(lightning_module, {mode}, dynamic=False)"],
                            imports=["import torch._functorch.config"])
        if framework == "accelerate":
            return Fragment(lines=[off], imports=["import torch._functorch.config",
                                                  "from accelerate.utils import TorchDynamoPlugin"],
                            args=[f'dynamo_plugin=TorchDynamoPlugin(backend="inductor", {mode}, dynamic=False)'])
        if framework == "hf-trainer":
            return Fragment(lines=[off], imports=["import torch._functorch.config"],
                            args=["torch_compile=True", f'torch_compile_mode="{value}"'])
        if framework == "deepspeed":  # DeepSpeed's CompileConfig (runtime/compiler.py); engine.compile() reads it
            return Fragment(config={"compile": {"enabled": True, "backend": "inductor",
                                                "kwargs": {"mode": value, "dynamic": False}}})
        return Fragment()


def _fresh_inductor_cache() -> contextlib.AbstractContextManager:
    """torch's context for a clean inductor cache (fresh_cache; fresh_inductor_cache before 2.7)."""
    from torch._inductor import utils

    fresh = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache
    return fresh()


register(Compile())
