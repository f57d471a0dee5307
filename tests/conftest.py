import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a real CUDA GPU; skip them, saying why, everywhere else."""
    import torch

    if torch.cuda.is_available():
        return
    why = f"needs a CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False)"
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def fresh_accelerate_state():
    accelerate = pytest.importorskip("accelerate")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per process otherwise
    yield accelerate
    AcceleratorState._reset_state(reset_partial_state=True)
