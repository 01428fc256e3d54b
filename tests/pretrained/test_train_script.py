"""The training script's options: fine-tuning from a checkpoint and the exact (DEQ) loss."""

import pytest
import torch

from lipinverse.pretrained import train
from lipinverse.regularizers import ConvexRidge
from lipinverse.training import DEQDenoisingLoss, TStepDenoisingLoss, save_checkpoint


def _args(*extra):
    return train.parse(["--model", "crr", *extra])


def test_default_objective_is_tstep_and_deq_uses_the_tolerance():
    obj = train.ridge_objective(_args())
    assert isinstance(obj, TStepDenoisingLoss) and obj.t == 10
    obj = train.ridge_objective(_args("--objective", "deq", "--deq-tol", "3e-4"))
    assert isinstance(obj, DEQDenoisingLoss) and obj.backward == "implicit"
    assert obj.tol == obj.cg_tol == pytest.approx(3e-4)


def test_init_restarts_from_the_checkpoint_and_records_it(tmp_path):
    torch.manual_seed(0)
    reg = ConvexRidge(channels=(1, 4, 8), kernel_size=3, num_knots=11)
    save_checkpoint(reg, tmp_path / "start", metadata={"training": {"steps": 7}})
    fresh, none = train.initial_ridge(_args())
    assert none is None and type(fresh) is ConvexRidge
    got, init = train.initial_ridge(_args("--init", str(tmp_path / "start")))
    assert init == {"checkpoint": "start", "training": {"steps": 7}}
    want, have = reg.state_dict(), got.state_dict()
    assert want.keys() == have.keys()
    for n in want:
        assert torch.equal(want[n], have[n]), n


def test_init_of_the_wrong_class_is_refused(tmp_path):
    from lipinverse.regularizers import WeakConvexRidge

    save_checkpoint(WeakConvexRidge(channels=(1, 4), kernel_size=3), tmp_path / "w", metadata={})
    args = train.parse(["--model", "crr", "--init", str(tmp_path / "w")])
    with pytest.raises(ValueError, match="holds a WeakConvexRidge, expected a ConvexRidge"):
        train.initial_ridge(args)


def test_wcrr_may_start_from_a_convex_checkpoint(tmp_path):
    from lipinverse.regularizers import WeakConvexRidge

    crr = ConvexRidge(channels=(1, 4), kernel_size=3, num_knots=11)
    save_checkpoint(crr, tmp_path / "c", metadata={"training": {"steps": 3}})
    got, init = train.initial_ridge(train.parse(["--model", "wcrr", "--init",
                                                 str(tmp_path / "c")]))
    assert type(got) is WeakConvexRidge and "from_convex" in init
    assert torch.equal(got.convex_spline.coefficients, crr.convex_spline.coefficients)
