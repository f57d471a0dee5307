"""The workload contract: a plain model.py loaded by path (or a built-in example), a module or
object named by a `module:attr` import string, or a Hugging Face architecture (hf.py); how each is
given is workload_source.py.

| name                               | required | default                                      |
|------------------------------------|----------|----------------------------------------------|
| build_model() -> nn.Module         | yes      |                                              |
| make_batch(batch_size, device)     | yes      |                                              |
| loss_fn(model, batch) -> scalar    | no       | call the model; use output.loss or a scalar  |
| build_optimizer(params) -> Optim   | no       | torch.optim.AdamW(params, lr=1e-3)           |

`load` imports the file (or module, or builds the model) and belongs in the worker process, where
a crash or a hang is contained; the parent process only checks a source (workload_source.py:
`check_source` parses, it never runs user code).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workload_source import Kind, WorkloadError, WorkloadSource, check_source

REQUIRED = ("build_model", "make_batch")


@dataclass(frozen=True)
class Workload:
    label: str  # names the workload in messages: the file, the import string, the architecture
    build_model: Callable[[], Any]
    make_batch: Callable[[int, Any], Any]
    loss_fn: Callable[[Any, Any], Any]
    build_optimizer: Callable[[Any], Any]
    custom_loss: bool
    path: Path | None = None  # the source file, when there is one: a traceback's line in it is shown
    architecture: str | None = None  # a description of the model, when the workload knows one (hf)
    # the bytes training needs before any activation (weights, gradients, optimizer state), when
    # it can be known without building the model (hf: from its config, on the meta device)
    training_bytes: Callable[[], int] | None = None

    @classmethod
    def providing(cls, provider: Any, label: str, path: Path | None = None,
                  architecture: str | None = None) -> Workload:
        """The contract's names, read off a module or any object that has them."""
        missing = [name for name in REQUIRED if not callable(getattr(provider, name, None))]
        if missing:
            raise WorkloadError(
                f"{label}: missing {' and '.join(missing)}; a workload defines build_model() -> nn.Module "
                "and make_batch(batch_size, device)"
            )
        custom_loss = callable(getattr(provider, "loss_fn", None))
        return cls(
            label=label,
            build_model=provider.build_model,
            make_batch=provider.make_batch,
            loss_fn=provider.loss_fn if custom_loss else default_loss_fn,
            build_optimizer=getattr(provider, "build_optimizer", None) or default_optimizer,
            custom_loss=custom_loss,
            path=path,
            architecture=architecture,
        )


def load(ref: str | os.PathLike) -> Workload:
    """The workload a ref names (workload_source.py), imported or built here: in the worker."""
    ref = os.fspath(ref)
    source = WorkloadSource.from_ref(ref)
    if source.kind is Kind.MODULE:
        return load_import_string(source.target, source.search_path)
    if source.kind is Kind.HF:
        assert source.hf is not None
        built = source.hf.build()
        workload = Workload.providing(built, source.shown(), architecture=built.describe())
        return dataclasses.replace(workload, training_bytes=built.training_bytes)
    return load_file(ref)


def load_file(path: str | Path) -> Workload:
    """Import the workload file (runs its top-level code) and check the contract's names."""
    path = check_source(path)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as `python model.py` would: sibling modules import
    module_name = f"amp_advisor_workload_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkloadError(f"{path}: Python cannot import this file as a module; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise WorkloadError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    return Workload.providing(module, str(path), path)


def load_import_string(target: str, search_path: str = "") -> Workload:
    """`pkg.mod:attr` (uvicorn's convention): import the module (from `search_path` first, the
    directory the command ran in), follow the dotted attribute, check it provides the contract."""
    module_name, _, attr = target.partition(":")
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = f" (searched {search_path} and the installed packages)" if search_path else ""
        if exc.name and module_name.startswith(exc.name):
            raise WorkloadError(f"{target}: no module named {exc.name!r}{where}; expected an importable "
                                "module, as in mypkg.workloads:gpt") from None
        raise WorkloadError(f"{target}: importing {module_name} raised ModuleNotFoundError: {exc}") from exc
    except Exception as exc:
        raise WorkloadError(f"{target}: importing {module_name} raised {type(exc).__name__}: {exc}") from exc
    provider: Any = module
    for part in attr.split("."):
        if not hasattr(provider, part):
            raise WorkloadError(f"{target}: {module_name} has no attribute {attr!r}; expected a module or object "
                                "providing build_model and make_batch")
        provider = getattr(provider, part)
    file = getattr(provider, "__file__", None) or getattr(module, "__file__", None)
    return Workload.providing(provider, target, Path(file).resolve() if file else None)


def default_optimizer(params):
    import torch

    return torch.optim.AdamW(params, lr=1e-3)


def default_loss_fn(model, batch):
    """Call the model with the batch; take `.loss` if the output has one, else a scalar output."""
    import torch

    if isinstance(batch, dict):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    if getattr(out, "loss", None) is not None:
        return out.loss
    if isinstance(out, dict) and out.get("loss") is not None:
        return out["loss"]
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        return out
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise WorkloadError(
        f"the model's output is {shape}, not a loss: define loss_fn(model, batch) returning a scalar tensor"
    )


def check_batch(label: str, batch: Any, device: Any) -> None:
    """make_batch must return a tensor, a tuple/list of them, or a dict, on the requested device."""
    import torch

    if isinstance(batch, torch.Tensor):
        tensors = [batch]
    elif isinstance(batch, (tuple, list)) and batch:
        tensors = [t for t in batch if isinstance(t, torch.Tensor)]
    elif isinstance(batch, dict) and batch:
        tensors = [t for t in batch.values() if isinstance(t, torch.Tensor)]
    else:
        raise WorkloadError(
            f"{label}: make_batch returned {type(batch).__name__}; expected a Tensor, a tuple/list of "
            "tensors, or a dict of tensors"
        )
    if not tensors:
        raise WorkloadError(f"{label}: make_batch returned a {type(batch).__name__} with no tensors in it")
    wrong = {str(t.device) for t in tensors if t.device.type != torch.device(device).type}
    if wrong:
        raise WorkloadError(
            f"{label}: make_batch returned tensors on {', '.join(sorted(wrong))}, expected {device}: "
            "create them on the `device` argument"
        )


def check_loss(label: str, loss: Any) -> None:
    import torch

    if not isinstance(loss, torch.Tensor):
        raise WorkloadError(f"{label}: loss_fn returned {type(loss).__name__}; expected a scalar tensor")
    if loss.numel() != 1:
        raise WorkloadError(
            f"{label}: loss_fn returned a tensor of shape {tuple(loss.shape)}; expected a scalar "
            "(reduce it, e.g. with .mean())"
        )
    if not loss.requires_grad:
        raise WorkloadError(f"{label}: the loss does not require grad: is the model's output detached?")
