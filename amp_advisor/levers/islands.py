"""fp32 islands as a lever: modules kept in fp32 inside autocast (amp_advisor.islands).

Never searched for speed (explore "repair"): the tuner sets it where a reduced precision failed on
numerics everywhere, from the modules the X-ray advises, and measures that configuration again
like any other. Its value is the modules' qualified names (as in `named_modules()`), joined by
commas; it applies to the dtypes that autocast, and it changes the model first (Stage.ISLANDS):
the other levers, the wrapper and the compiler see the islands in place."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .. import islands
from ..dtypes import Dtype
from . import register
from .base import OFF, Fragment, Lever, Stage

ISLANDS = "islands"
SEPARATOR = ","
FRAMEWORK_NAMES = {"lightning": "Lightning", "accelerate": "Accelerate", "hf-trainer": "The HF Trainer"}


def islands_value(names: Iterable[str]) -> str:
    """The lever's value for these module names (OFF for none)."""
    return SEPARATOR.join(names) or OFF


def island_names(value: str | None) -> tuple[str, ...]:
    """The module names a value holds (none for OFF or no value)."""
    return () if value in (None, OFF) else tuple(str(value).split(SEPARATOR))


def islands_of(levers: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The module names a configuration's levers (a mapping or pairs) keep in fp32."""
    return island_names(dict(levers).get(ISLANDS))


def with_old_islands(levers: Mapping[str, str] | Iterable[tuple[str, str]],
                     fp32_modules: Iterable[str] | None) -> dict[str, str]:
    """The levers, with a `fp32_modules` list from before the islands were a lever moved in."""
    out = dict(levers)
    if names := tuple(fp32_modules or ()):
        out[ISLANDS] = islands_value(names)
    return out


class Fp32Islands(Lever):
    name = ISLANDS
    title = "fp32 islands"
    stage = Stage.ISLANDS
    explore = "repair"

    def values(self, device) -> tuple[str, ...]:
        return (OFF,)  # set by the repair phase, never offered to the search

    def check(self, value: Any, device_type: str) -> str | None:
        if not isinstance(value, str) or not all(islands.MODULE_NAME_PATTERN.fullmatch(n) for n in island_names(value)):
            return (f"{str(value)[:40]!r}: expected module names as in named_modules() (dotted identifiers), "
                    f"joined by {SEPARATOR!r}")
        return None

    def applies(self, dtype: Dtype) -> bool:
        return dtype.autocasts

    def label(self, value: str) -> str:
        return f"+fp32[{value}]"

    def install(self, model: Any, value: str, device_type: str) -> Any:
        """The islands on the user's modules (on what a DDP wrapper holds: names as the user's)."""
        from torch.nn.parallel import DistributedDataParallel

        islands.keep_in_fp32(model.module if isinstance(model, DistributedDataParallel) else model, island_names(value))
        return model

    def fragment(self, framework: str, value: str, device_type: str) -> Fragment:
        """No framework has a setting for keeping single modules in fp32 inside autocast:
        keep_in_fp32 wraps their forward, so it holds whatever then trains the model."""
        if framework == "deepspeed":
            return Fragment()  # a change of the model's code: no config key holds it
        names = ", ".join(json.dumps(name) for name in island_names(value))
        lines = ["# keep these modules in fp32 inside autocast (names as in the tuned model's named_modules())"]
        model = "model"
        if framework == "lightning":
            model = "lightning_module"
            lines.insert(0, "# a LightningModule holding the tuned model as self.model: prefix each name with "
                            "\"model.\"")
        if framework in FRAMEWORK_NAMES:
            lines.append(f"# {FRAMEWORK_NAMES[framework]} has no setting for this: the helper wraps the modules' "
                         "forward, so it holds inside its training loop too")
        return Fragment(lines=[*lines, f"keep_in_fp32({model}, [{names}])"],
                        imports=["from amp_advisor import keep_in_fp32"])


register(Fp32Islands())
