"""Paste-ready code and configs for a recommendation: text only, built from its fields.

`amp-advisor show --format F` prints one (FORMATS); the report shows `torch_loop`. Each code
snippet runs as printed once the user's names exist (model, optimizer, loss_fn, loader), and the
test suite builds the framework objects from them where the framework is installed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from . import levers, tf32
from .distributed.policy import Parallel, fsdp2_policy_source
from .dtypes import Dtype, torch_dtype_name
from .errors import BadInputError
from .jsonio import dumps
from .recommendation import Recommendation


def comment(text: object) -> str:
    """Free text (a device name, a note) made safe inside a comment: no line breaks or other
    control characters, so nothing after it can become code."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def literal(value: str) -> str:
    """A string as a double-quoted Python literal: whatever it holds stays data (JSON's escapes,
    ASCII only, are valid Python escapes)."""
    return json.dumps(str(value))


def _header(rec: Recommendation) -> str:
    where = rec.hardware.get("name") or rec.device
    accum = f" x {rec.grad_accumulation_steps} accumulation steps" if rec.grad_accumulation_steps > 1 else ""
    chosen = f", {levers.label(rec.levers)}" if rec.levers else ""
    return f"# amp-advisor: {rec.dtype}{chosen}, batch size {rec.batch_size}{accum}, tuned on {comment(where)}"


def torch_loop(rec: Recommendation) -> str:
    """A plain torch.amp training loop; `model`, `optimizer`, `loss_fn` and `loader` are the user's."""
    device_type = rec.device_type
    lower = torch_dtype_name(rec.dtype) if rec.dtype.autocasts else None
    accum = rec.grad_accumulation_steps
    d = rec.distributed
    frag = levers.fragments(rec.levers, "torch", device_type)
    lines = ["import torch", *frag.imports, "", _header(rec), *_tf32_line(rec)]
    before_wrap = levers.fragments(rec.levers, "torch", device_type, before=levers.Stage.WRAP)
    since_wrap = levers.fragments(rec.levers, "torch", device_type, since=levers.Stage.WRAP)
    lines.append(f"BATCH_SIZE = {int(rec.batch_size)}  # per step of the loader" + (" (per rank)" if d else ""))
    if accum > 1:
        lines.append(f"ACCUM_STEPS = {int(accum)}  # optimizer step every ACCUM_STEPS batches")
    if rec.scaler.enabled:
        lines.append(f"scaler = torch.amp.GradScaler({literal(device_type)}, {_scaler_args(rec)})")
    lines += before_wrap.lines  # the levers in their stage order (the islands first), the wrapper between
    lines += _torch_distributed(rec)
    lines += since_wrap.lines
    lines += ["", "for step, batch in enumerate(loader):"]
    loss = "loss_fn(model, batch)" + (" / ACCUM_STEPS" if accum > 1 else "")
    forward = []
    if lower:
        forward += [f"with torch.autocast({literal(device_type)}, dtype={lower}):", f"    loss = {loss}"]
    else:
        forward.append(f"loss = {loss}")
    forward += (["scaler.scale(loss).backward()"] if rec.scaler.enabled else ["loss.backward()"])
    update = (["scaler.step(optimizer)", "scaler.update()"] if rec.scaler.enabled else ["optimizer.step()"])
    update.append("optimizer.zero_grad(set_to_none=True)")
    if accum > 1:
        lines.append("    sync = (step + 1) % ACCUM_STEPS == 0")
        if d and d.parallel == Parallel.DDP:  # DDP decides in the forward whether the backward all-reduces
            lines.append("    with contextlib.nullcontext() if sync else model.no_sync():  "
                         "# all-reduce on the last micro-batch only")
            lines += ["        " + line for line in forward]
        else:
            if d:
                lines.append("    model.set_requires_gradient_sync(sync)  # reduce-scatter on the last micro-batch")
            lines += ["    " + line for line in forward]
        lines.append("    if sync:")
        lines += ["        " + line for line in update]
    else:
        lines += ["    " + line for line in forward + update]
    if d and d.parallel == Parallel.DDP and accum > 1:
        lines.insert(0, "import contextlib")
    return "\n".join(lines) + "\n"


def _torch_distributed(rec: Recommendation) -> list[str]:
    """The process group and the wrapper as tuned (DDP + its comm hook, or FSDP2 + its policy),
    after the islands (they name the user's own modules)."""
    d = rec.distributed
    if d is None:
        return []
    lines = ["", f"# tuned on {int(d.world_size)} ranks ({comment(d.backend)}): start with torchrun; global batch "
                 f"{int(d.global_batch)} = ranks x BATCH_SIZE x accumulation",
             "import torch.distributed as dist", "if not dist.is_initialized():",
             f"    dist.init_process_group({literal(d.backend)})"]
    if d.parallel == Parallel.DDP:
        lines += ["from torch.nn.parallel import DistributedDataParallel",
                  "model = DistributedDataParallel(model)  # on GPUs: device_ids=[local_rank]"]
        if d.comm_hook:
            lines += ["from torch.distributed.algorithms.ddp_comm_hooks import default_hooks",
                      f"model.register_comm_hook(None, default_hooks.{_identifier(d.comm_hook)})  "
                      f"# gradients all-reduced in {comment(d.comm)}"]
        return lines
    return lines + ["from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard",
                    f"policy = {fsdp2_policy_source(rec.dtype, d.comm)}",
                    "# shard each repeated block first, e.g.: for layer in model.layers: fully_shard(layer, "
                    "mp_policy=policy)",
                    "fully_shard(model, mp_policy=policy)",
                    "# build the optimizer after this: FSDP2 replaces the parameters with sharded ones"]


def _identifier(name: str) -> str:
    """A name from a loaded recommendation written as code: only a plain identifier (the loader
    already checked it is one of the hooks in distributed/policy.py)."""
    if not name.isidentifier():
        raise BadInputError(f"{name[:40]!r} cannot be written into code: expected a Python identifier")
    return name


def _tf32_line(rec: Recommendation) -> list[str]:
    return list(tf32.SOURCE_LINES) if rec.tf32 else []


def _scaler_args(rec: Recommendation) -> str:
    s = rec.scaler
    return (f"init_scale={_number(s.init_scale)}, growth_factor={_number(s.growth_factor)}, "
            f"backoff_factor={_number(s.backoff_factor)}, growth_interval={int(s.growth_interval)}")


def _number(value: float) -> str:
    """A finite float as a Python literal (a loaded recommendation is checked finite; one built
    by hand with inf or nan is refused here rather than printed as a name)."""
    value = float(value)
    if not math.isfinite(value):
        raise BadInputError(f"{value!r} cannot be written into code: expected a finite number")
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def lightning(rec: Recommendation) -> str:
    """Lightning's Trainer: precision as recommended; fp16 through the MixedPrecision plugin so the
    GradScaler gets the tuned settings (Trainer(precision="16-mixed") would use torch's defaults)."""
    device_type = rec.device_type
    frag = levers.fragments(rec.levers, "lightning", device_type)
    lines = ["import torch", "from lightning.pytorch import Trainer", *frag.imports]
    if rec.scaler.enabled:
        lines.append("from lightning.pytorch.plugins.precision import MixedPrecision")
    lines += ["", _header(rec), *_tf32_line(rec),
              f"# DataLoader(..., batch_size={int(rec.batch_size)})"]
    lines += frag.lines
    accum = ", ".join([f"accumulate_grad_batches={int(rec.grad_accumulation_steps)}", *frag.args])
    strategy, trainer_comment = _lightning_strategy(rec, lines)
    if rec.scaler.enabled:
        lines += [f"scaler = torch.amp.GradScaler({literal(device_type)}, {_scaler_args(rec)})",
                  f'{trainer_comment}trainer = Trainer(plugins=[MixedPrecision("16-mixed", {literal(device_type)}, '
                  f'scaler=scaler)], {accum}{strategy})']
    else:
        precision = {Dtype.BF16: "bf16-mixed", Dtype.FP16: "16-mixed"}.get(rec.dtype, "32-true")
        lines.append(f'{trainer_comment}trainer = Trainer(precision="{precision}", {accum}{strategy})')
    return "\n".join(lines) + "\n"


def _lightning_strategy(rec: Recommendation, lines: list[str]) -> tuple[str, str]:
    """Lightning's DDPStrategy (with the comm hook) or FSDPStrategy (with the tuned param/reduce
    dtypes): the lines that build `strategy`, and the Trainer's extra arguments. Lightning's FSDP
    needs GPUs: on a CPU recommendation the Trainer line is left as a comment."""
    d = rec.distributed
    if d is None:
        return "", ""
    lines.append(f"# tuned on {int(d.world_size)} ranks: devices per node x num_nodes = {int(d.world_size)}")
    args = f", strategy=strategy, devices={int(d.world_size)}"
    if d.parallel == Parallel.DDP:
        lines.append("from lightning.pytorch.strategies import DDPStrategy")
        if d.comm_hook:
            lines += ["from torch.distributed.algorithms.ddp_comm_hooks import default_hooks",
                      f"strategy = DDPStrategy(ddp_comm_hook=default_hooks.{_identifier(d.comm_hook)})  "
                      f"# gradients all-reduced in {comment(d.comm)}"]
        else:
            lines.append("strategy = DDPStrategy()")
        return args, ""
    lines += ["from lightning.pytorch.strategies import FSDPStrategy",
              "from torch.distributed.fsdp import MixedPrecision as FSDPMixedPrecision",
              "# FSDPStrategy shards with FSDP (version 1) under the same param/reduce dtypes as the tuned FSDP2 "
              "policy; ModelParallelStrategy takes fully_shard(..., mp_policy=MixedPrecisionPolicy(...)) in "
              "configure_model",
              "strategy = FSDPStrategy(mixed_precision="
              f"{fsdp2_policy_source(rec.dtype, d.comm, 'FSDPMixedPrecision')})"]
    if rec.device_type == "cpu":
        lines.append("# Lightning's FSDPStrategy runs on GPUs only: on this CPU train with --format torch (fully_shard "
                     "runs on gloo)")
        return args, "# "
    return args, ""


def accelerate(rec: Recommendation) -> str:
    """Accelerate's Accelerator, with GradScalerKwargs carrying the tuned scaler for fp16."""
    mixed = {Dtype.BF16: "bf16", Dtype.FP16: "fp16"}.get(rec.dtype, "no")
    frag = levers.fragments(rec.levers, "accelerate", rec.device_type)
    lines = ["import torch", "from accelerate import Accelerator", *frag.imports]
    if rec.scaler.enabled:
        lines.append("from accelerate.utils import GradScalerKwargs")
    lines += ["", _header(rec), *_tf32_line(rec), f"# DataLoader(..., batch_size={int(rec.batch_size)})"]
    args = [f'mixed_precision="{mixed}"', f"gradient_accumulation_steps={int(rec.grad_accumulation_steps)}"]
    if rec.device_type == "cpu":
        args.append("cpu=True")
        if rec.dtype is Dtype.FP16:
            # read in accelerate 1.15's Accelerator.__init__: fp16 is only enabled off the CPU
            lines.append("# Accelerate turns fp16 off on a CPU (no autocast, no GradScaler): this trains in fp32. "
                         "Use amp_advisor's MixedPrecision or the torch loop (`--format torch`) for fp16 here.")
    handlers = [f"GradScalerKwargs({_scaler_args(rec)})"] if rec.scaler.enabled else []
    d = rec.distributed
    if d is not None:
        lines.append(f"# tuned on {int(d.world_size)} ranks: accelerate launch --num_processes {int(d.world_size)} "
                     "(or torchrun)")
        if d.parallel == Parallel.DDP and d.comm_hook:
            lines.append("from accelerate.utils import DDPCommunicationHookType, DistributedDataParallelKwargs")
            hook = {"fp16": "FP16", "bf16": "BF16"}[d.comm]
            handlers.append(f"DistributedDataParallelKwargs(comm_hook=DDPCommunicationHookType.{hook})")
        elif d.parallel == Parallel.FSDP2:
            lines += ["from accelerate.utils import FullyShardedDataParallelPlugin",
                      "from torch.distributed.fsdp import MixedPrecisionPolicy",
                      f"fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, "
                      f"mixed_precision_policy={fsdp2_policy_source(rec.dtype, d.comm)})"]
            args.append("fsdp_plugin=fsdp_plugin")
    if handlers:
        args.append(f"kwargs_handlers=[{', '.join(handlers)}]")
    lines += frag.lines
    lines.append(f"accelerator = Accelerator({', '.join(args + frag.args)})")
    return "\n".join(lines) + "\n"


def hf_trainer(rec: Recommendation) -> str:
    """Hugging Face TrainingArguments. It has no GradScaler settings: for fp16 it uses torch's
    defaults, which the comment says, with the tuned values to set through Accelerate instead."""
    args = ['output_dir="out"', f"per_device_train_batch_size={int(rec.batch_size)}",
            f"gradient_accumulation_steps={int(rec.grad_accumulation_steps)}"]
    if rec.dtype is Dtype.BF16:
        args.append("bf16=True")
    elif rec.dtype is Dtype.FP16:
        args.append("fp16=True")
    if rec.tf32:
        args.append("tf32=True")
    if rec.device_type == "cpu":
        args.append("use_cpu=True")
    lines = ["from transformers import TrainingArguments", "", _header(rec)]
    d = rec.distributed
    if d is not None:
        lines.append(f"# tuned on {int(d.world_size)} ranks: start the script with torchrun --nproc_per_node ... "
                     f"(global batch {int(d.global_batch)})")
        if d.parallel == Parallel.DDP:
            args.append(f"ddp_backend={literal(d.backend)}")
            if d.comm_hook:
                lines.append(f"# TrainingArguments has no comm-hook setting: the tuned {comment(d.comm)} gradient "
                             "all-reduce needs Accelerate's DistributedDataParallelKwargs (--format accelerate)")
        else:
            args += ["fsdp=True", 'fsdp_config={"version": 2}']
            if d.reduce_dtype != d.param_dtype:
                # read in accelerate 1.15 (FullyShardedDataParallelPlugin.set_mixed_precision)
                lines.append(f"# the Trainer's FSDP reduces gradients in its mixed precision "
                             f"({comment(d.param_dtype)}); the tuned reduce_dtype {comment(d.reduce_dtype)} needs "
                             "Accelerate's FullyShardedDataParallelPlugin (--format accelerate)")
    if rec.dtype is Dtype.FP16 and rec.device_type == "cpu":
        lines.append("# The Trainer runs through Accelerate, which turns fp16 off on a CPU: this trains in fp32.")
    if rec.scaler.enabled:
        lines.append(f"# TrainingArguments cannot set GradScaler; the tuned values were {_scaler_args(rec)}")
    frag = levers.fragments(rec.levers, "hf-trainer", rec.device_type)
    lines[1:1] = frag.imports
    lines += frag.lines
    lines.append("args = TrainingArguments(" + ", ".join(args + frag.args) + ")")
    return "\n".join(lines) + "\n"


def deepspeed_config(rec: Recommendation) -> dict[str, Any]:
    """DeepSpeed's fp16/bf16 block. GradScaler -> DeepSpeed's dynamic loss scaler:
    init_scale 2^k -> initial_scale_power k; growth_interval -> loss_scale_window (clean steps
    before the scale grows); hysteresis 1 (torch backs off at the first overflow); min_loss_scale 1."""
    config: dict[str, Any] = {"train_micro_batch_size_per_gpu": rec.batch_size,
                              "gradient_accumulation_steps": rec.grad_accumulation_steps}
    if rec.dtype is Dtype.FP16:
        s = rec.scaler
        config["fp16"] = {"enabled": True, "loss_scale": 0,  # 0 = dynamic
                          "initial_scale_power": int(round(math.log2(s.init_scale))),
                          "loss_scale_window": s.growth_interval, "hysteresis": 1, "min_loss_scale": 1}
    else:
        config["bf16"] = {"enabled": rec.dtype is Dtype.BF16}
    d = rec.distributed
    if d is not None:
        config["train_batch_size"] = d.global_batch
        config["communication_data_type"] = d.comm  # what DeepSpeed all-reduces gradients in
    config.update(levers.fragments(rec.levers, "deepspeed", rec.device_type).config)
    return config


def deepspeed(rec: Recommendation) -> str:
    return dumps(deepspeed_config(rec)) + "\n"


def to_toml(rec: Recommendation) -> str:
    """The recommendation as TOML (tables for the nested parts; TOML has no null, so None is left out)."""
    return "\n".join(_toml_table(rec.to_dict(), ())).lstrip("\n") + "\n"


def _toml_key(key: Any) -> str:
    """A bare key where TOML allows one, else a quoted one: a key cannot end the line."""
    key = str(key)
    return key if key and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in key) else _toml_string(key)


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # escapes quotes and control characters as TOML does


def _toml_table(data: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    lines = ["", f"[{'.'.join(map(_toml_key, path))}]"] if path else []
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items()
              if v is not None and not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += _toml_table(table, path + (name,))
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # Python spells inf, -inf and nan as TOML does
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return _toml_string(str(value))


def to_json(rec: Recommendation) -> str:
    return dumps(rec.to_dict()) + "\n"


FORMATS: dict[str, Callable[[Recommendation], str]] = {
    "json": to_json, "toml": to_toml, "torch": torch_loop, "lightning": lightning, "accelerate": accelerate,
    "hf-trainer": hf_trainer, "deepspeed": deepspeed,
}


def render(rec: Recommendation, fmt: str) -> str:
    if fmt not in FORMATS:
        raise BadInputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return FORMATS[fmt](rec)
