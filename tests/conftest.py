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
