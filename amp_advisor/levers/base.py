"""What a tuning lever is: one dimension of the configuration, behind one interface.

A lever is a module of this package holding one `Lever` subclass, registered on import
(`levers.register`). Everything else reaches it through the registry (`levers/__init__.py`):
- the space offers its `values` for the device (`values(device)`; the first is the default, "off");
- a configuration carries `{lever name: value}` beside its dtype and batch size (Candidate,
  TrialSpec, Recommendation, MixedPrecision all hold the same mapping, without the defaults);
- `applies(dtype)` says where it means anything (a value where it does not is dropped);
- in the worker and in `MixedPrecision.prepare` it changes the model at its `stage`, in one
  declared order (Stage), and its `scope` wraps the training where it sets process state;
- `one_time_cost`: its first step holds a cost paid once per run (a compile), which the trial
  measures apart from the step time and the decision weighs against the planned run length;
- `explore`: "grid", a dimension of the search (the strategy builds its dimensions from the
  space); "leaders", tried on the leading configurations once the search has found them
  (what is too costly to try everywhere); or "repair", never searched for speed: set where a
  configuration failed on numerics, from what the X-ray advises (fp32 islands), and kept by a
  configuration's `plain` form (the speed levers are what `plain` drops);
- `check(value, device_type)`: what is wrong with a value from a spec or a loaded
  recommendation (by default: it is not one of `valid`);
- `fragment(framework, value)`: its part of each paste-ready snippet;
- `label(value)` and `title`: how the trial log and the report name it.

The model for this is torchtitan's model-converter protocol (one object per model change, applied
in a declared order) with the search's dimensions declared by the levers themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from ..dtypes import Dtype

OFF = "off"


class Stage(IntEnum):
    """Where a lever changes the model, in this order (lowest first)."""

    ISLANDS = 10  # modules kept in fp32 inside autocast
    FORMAT = 20  # numeric-format conversion of modules (fp8 Linears)
    WRAP = 30  # DDP / FSDP2
    CHECKPOINT = 40  # activation checkpointing
    COMPILE = 50  # torch.compile: last, it compiles what the others built


@dataclass
class Fragment:
    """A lever's part of one framework's snippet: lines before the framework object is built
    (after the user's model exists), keyword arguments of that object (Trainer, Accelerator,
    TrainingArguments), and keys of a JSON config (DeepSpeed)."""

    lines: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


class Lever:
    """The interface; each lever module subclasses it once. Values are short strings (JSON both ways)."""

    name: ClassVar[str]  # the key of every levers mapping: "compile"
    title: ClassVar[str]  # the report's column: "torch.compile"
    stage: ClassVar[Stage]
    default: ClassVar[str] = OFF
    explore: ClassVar[str] = "leaders"  # or "grid"
    one_time_cost: ClassVar[bool] = False
    first_step_allowance_s: ClassVar[float] = 0.0  # added to a trial's first-step limit when it is on

    def values(self, device) -> tuple[str, ...]:
        """The values worth trying on `device` (a hardware DeviceProfile), the default first;
        (default,) alone: nothing to try here."""
        raise NotImplementedError

    def valid(self, device_type: str) -> tuple[str, ...]:
        """Every value a spec or a recommendation may hold on a device type ("cpu", "cuda")."""
        raise NotImplementedError

    def check(self, value: Any, device_type: str) -> str | None:
        """Why `value` may not be used on `device_type`; None when it may."""
        if not isinstance(value, str) or value not in self.valid(device_type):
            return f"{str(value)[:40]!r} is not one of {', '.join(self.valid(device_type))} on {device_type}"
        return None

    def applies(self, dtype: Dtype) -> bool:
        return True

    def label(self, value: str) -> str:
        return f"{self.name}={value}"

    def install(self, model: Any, value: str, device_type: str) -> Any:
        """The model to train with this lever at `value` (a new object or the same, changed)."""
        return model

    @contextlib.contextmanager
    def scope(self, value: str) -> Iterator[None]:
        """Around a trial's training: process state the lever sets, restored afterwards."""
        yield

    def enable(self, value: str) -> None:
        """Process-wide, as a recommendation is used in training (MixedPrecision)."""

    def fragment(self, framework: str, value: str, device_type: str) -> Fragment:
        """Its part of a snippet: framework is one of "torch", "lightning", "accelerate",
        "hf-trainer", "deepspeed"."""
        return Fragment()

    def observe(self) -> dict[str, float]:
        """What a trial records after its steps (graph breaks...): name -> number."""
        return {}

    def reset(self) -> None:
        """Forget what the last trial left in this process (compiled graphs)."""
