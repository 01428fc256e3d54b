"""A shipped prior warns when asked for a noise level outside its training range."""

import warnings

import pytest

from lipinverse import pretrained
from lipinverse.regularizers import ConvexRidge


def test_shipped_priors_warn_beyond_the_trained_sigma():
    for name in ("crr", "wcrr"):
        model = pretrained.load(name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.at_sigma(25 / 255)
            model.at_sigma(pretrained.TRAINED_SIGMA_MAX)
        with pytest.warns(UserWarning, match=r"above the trained range \[0, 0.1176\]"):
            model.at_sigma(0.66)  # the level of a raw Radon transform in the old CLI
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ConvexRidge(channels=[1, 4], kernel_size=3, num_knots=11).at_sigma(0.66)  # unknown
