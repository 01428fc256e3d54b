import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_seeded():
    """All nn tests run in float64 with a fixed seed."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)
