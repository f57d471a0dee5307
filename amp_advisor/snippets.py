"""Paste-ready code for a recommendation: text only, built from the recommendation's fields.

The report shows `torch_loop`; `amp-advisor show --format ...` prints these too.
"""

from __future__ import annotations

from .dtypes import Dtype
from .recommendation import Recommendation

_TORCH_DTYPE = {Dtype.FP16: "torch.float16", Dtype.BF16: "torch.bfloat16"}


def _header(rec: Recommendation) -> str:
    where = rec.hardware.get("name") or rec.device
    accum = f" x {rec.grad_accumulation_steps} accumulation steps" if rec.grad_accumulation_steps > 1 else ""
    return f"# amp-advisor: {rec.dtype}, batch size {rec.batch_size}{accum}, tuned on {where}"


def torch_loop(rec: Recommendation) -> str:
    """A plain torch.amp training loop; `model`, `optimizer`, `loss_fn` and `loader` are the user's."""
    device_type = rec.device.split(":")[0]
    lower = _TORCH_DTYPE.get(rec.dtype)
    accum = rec.grad_accumulation_steps
    lines = ["import torch", "", _header(rec)]
    if rec.tf32:
        lines.append('torch.set_float32_matmul_precision("high")  # TF32 for the matmuls left in fp32')
    lines.append(f"BATCH_SIZE = {rec.batch_size}  # per step of the loader")
    if accum > 1:
        lines.append(f"ACCUM_STEPS = {accum}  # optimizer step every ACCUM_STEPS batches")
    if rec.scaler.enabled:
        s = rec.scaler
        lines.append(f'scaler = torch.amp.GradScaler("{device_type}", init_scale={s.init_scale:g}, '
                     f"growth_factor={s.growth_factor:g}, backoff_factor={s.backoff_factor:g}, "
                     f"growth_interval={s.growth_interval})")
    lines += ["", "for step, batch in enumerate(loader):"]
    loss = "loss_fn(model, batch)" + (" / ACCUM_STEPS" if accum > 1 else "")
    if lower:
        lines += [f'    with torch.autocast("{device_type}", dtype={lower}):', f"        loss = {loss}"]
    else:
        lines.append(f"    loss = {loss}")
    body = (["scaler.scale(loss).backward()"] if rec.scaler.enabled else ["loss.backward()"])
    update = (["scaler.step(optimizer)", "scaler.update()"] if rec.scaler.enabled else ["optimizer.step()"])
    update.append("optimizer.zero_grad(set_to_none=True)")
    lines += ["    " + line for line in body]
    if accum > 1:
        lines.append("    if (step + 1) % ACCUM_STEPS == 0:")
        lines += ["        " + line for line in update]
    else:
        lines += ["    " + line for line in update]
    return "\n".join(lines) + "\n"
