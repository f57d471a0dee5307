from pathlib import Path

import pytest
import torch

from amp_advisor.errors import BadInputError
from amp_advisor.workload import check_batch, check_loss, default_loss_fn, load
from amp_advisor.workload_source import WorkloadError, check_source, example_names, example_path

WORKLOADS = Path(__file__).parent / "workloads"


def test_examples_ship_with_the_package_and_follow_the_contract():
    assert example_names() == ["convnet", "mlp", "transformer"]
    for name in example_names():
        workload = load(example_path(name))
        model = workload.build_model()
        batch = workload.make_batch(2, "cpu")
        check_batch(workload.label, batch, "cpu")
        check_loss(workload.label, workload.loss_fn(model, batch))


def test_unknown_example_lists_the_known_ones():
    with pytest.raises(BadInputError, match="unknown example 'resnet': expected one of convnet, mlp, transformer"):
        example_path("resnet")


def test_missing_file_and_directory_and_syntax_error_name_the_file(tmp_path):
    with pytest.raises(WorkloadError, match="nope.py: no such file"):
        check_source(tmp_path / "nope.py")
    with pytest.raises(WorkloadError, match="a directory, expected a model.py"):
        check_source(tmp_path)
    with pytest.raises(WorkloadError, match=r"syntax_error.py:1: syntax error"):
        check_source(WORKLOADS / "syntax_error.py")


def test_missing_contract_function_is_named():
    with pytest.raises(WorkloadError, match="missing_make_batch.py: missing make_batch"):
        load(WORKLOADS / "missing_make_batch.py")


def test_an_import_error_in_the_workload_is_reported_with_the_file(tmp_path):
    bad = tmp_path / "model.py"
    bad.write_text("import not_a_module_anywhere\n")
    with pytest.raises(WorkloadError, match="model.py: importing it raised ModuleNotFoundError"):
        load(bad)


def test_sibling_modules_import_like_a_script():
    workload = load(WORKLOADS / "oom_above_8.py")
    assert workload.custom_loss


def test_defaults_for_loss_and_optimizer():
    workload = load(WORKLOADS / "default_loss.py")
    assert not workload.custom_loss
    model = workload.build_model()
    loss = workload.loss_fn(model, workload.make_batch(4, "cpu"))
    assert loss.ndim == 0 and loss.requires_grad
    assert isinstance(workload.build_optimizer(model.parameters()), torch.optim.AdamW)


def test_default_loss_uses_output_loss_attribute_and_refuses_tensors():
    class WithLoss(torch.nn.Module):
        def forward(self, x):
            return type("Out", (), {"loss": x.sum()})()

    assert default_loss_fn(WithLoss(), torch.ones(2)).item() == 2.0
    with pytest.raises(WorkloadError, match=r"output is \(3, 4\), not a loss: define loss_fn"):
        default_loss_fn(torch.nn.Linear(4, 4), torch.ones(3, 4))


@pytest.mark.parametrize(
    "batch, message",
    [("text", "returned str; expected a Tensor"), ((), "returned tuple; expected"), ([1, 2], "no tensors in it")],
)
def test_bad_batches(batch, message):
    with pytest.raises(WorkloadError, match=message):
        check_batch("m.py", batch, "cpu")


def test_batch_on_the_wrong_device_is_explained():
    with pytest.raises(WorkloadError, match="tensors on cpu, expected cuda:0: create them on the `device`"):
        check_batch("m.py", torch.ones(2), "cuda:0")


def test_bad_losses():
    with pytest.raises(WorkloadError, match=r"shape \(2, 4\); expected a scalar"):
        check_loss("m.py", torch.ones(2, 4, requires_grad=True))
    with pytest.raises(WorkloadError, match="returned float"):
        check_loss("m.py", 1.0)
    with pytest.raises(WorkloadError, match="does not require grad"):
        check_loss("m.py", torch.tensor(1.0))
