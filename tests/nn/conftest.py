import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_seeded_single_thread():
    """All nn tests run in float64, seeded, on one thread (tiny tensors; avoids
    oversubscription when several test processes share the cores)."""
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old_dtype)
    torch.set_num_threads(old_threads)
