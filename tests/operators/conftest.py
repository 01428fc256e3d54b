"""The registry of operator factories that drives every operator contract test.

Each factory returns a fresh operator with a fixed per-sample ``in_shape`` (small, so that
dense matrices fit in memory). Add every new operator here.
"""

import pytest
import torch

import operators as O
from operators import kernels


def _signed_kernel(shape=(5, 4), seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


OPERATOR_FACTORIES = {
    "identity": lambda: O.Identity((1, 6, 5)),
    "blur_circular_gauss": lambda: O.Blur(kernels.gaussian(1.0), "circular", (1, 12, 10)),
    "blur_circular_signed": lambda: O.Blur(_signed_kernel(), "circular", (2, 9, 8)),
    "blur_zero_gauss": lambda: O.Blur(kernels.gaussian(1.2), "zero", (1, 11, 10)),
    "blur_zero_signed": lambda: O.Blur(_signed_kernel(), "zero", (1, 9, 8)),
    "blur_reflect_motion": lambda: O.Blur(kernels.motion(7, seed=3), "reflect", (1, 10, 12)),
    "blur_reflect_signed": lambda: O.Blur(_signed_kernel((3, 6)), "reflect", (1, 8, 9)),
    "blur_replicate_uniform": lambda: O.Blur(kernels.uniform(4), "replicate", (1, 9, 10)),
    "blur_replicate_signed": lambda: O.Blur(_signed_kernel(), "replicate", (2, 8, 8)),
    "mask": lambda: O.Mask((torch.rand(2, 7, 6, generator=torch.Generator().manual_seed(0))
                            > 0.4).double()),
    "mask_signed": lambda: O.Mask(torch.randn(1, 6, 7,
                                              generator=torch.Generator().manual_seed(2))),
    "subsample": lambda: O.Subsample(2, (1, 8, 10)),
    "downsample": lambda: O.Downsample(2, kernels.gaussian(0.8), "circular", (1, 8, 8)),
    "downsample_zero": lambda: O.Downsample(3, kernels.gaussian(1.0), "zero", (1, 9, 9)),
    "grad_neumann": lambda: O.FiniteDifference("neumann", (1, 7, 6)),
    "grad_circular": lambda: O.FiniteDifference("circular", (2, 6, 5)),
    "compose_blur_mask": lambda: O.Mask(torch.rand(1, 8, 8, generator=torch.Generator()
                                                   .manual_seed(4)))
    @ O.Blur(kernels.gaussian(1.0), "zero", (1, 8, 8)),
    "sum_scaled": lambda: 2.0 * O.Blur(kernels.gaussian(1.0), "circular", (1, 8, 8))
    - O.Identity((1, 8, 8)),
    "adjoint_of_grad": lambda: O.FiniteDifference("neumann", (1, 6, 6)).T,
    "radon_parallel": lambda: O.Radon(8, 5),
    "radon_parallel_circle_matrix_free": lambda: O.Radon(9, 4, circle=True,
                                                         backend="matrix_free", channels=2),
    "radon_fan": lambda: O.Radon(8, 6, geometry="fan"),
    "radon_fan_circle_matrix_free": lambda: O.Radon(8, 5, geometry="fan", circle=True,
                                                    backend="matrix_free"),
}


@pytest.fixture(params=sorted(OPERATOR_FACTORIES))
def op_name(request):
    """Name of a registered operator factory."""
    return request.param


@pytest.fixture
def op(op_name):
    """A fresh operator from the registry."""
    return OPERATOR_FACTORIES[op_name]()


@pytest.fixture
def make_op(op_name):
    """The factory of the current registry entry (builds fresh copies)."""
    return OPERATOR_FACTORIES[op_name]
