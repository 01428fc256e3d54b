"""Checkpoints: bit-for-bit round trips, atomic writes, clear errors on bad files."""

import json

import pytest
import torch

from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
from lipinverse.training import (
    load_checkpoint,
    load_optimizer_state,
    read_checkpoint_metadata,
    registered_models,
    save_checkpoint,
)
from lipinverse.training.checkpoint import checkpoint_paths


def model(cls=WeakConvexRidge, **kw):
    torch.manual_seed(0)
    m = cls(channels=(1, 3, 6), kernel_size=3, num_knots=11, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("cls", [ConvexRidge, WeakConvexRidge])
def test_round_trip_is_bit_for_bit(tmp_path, cls):
    m = model(cls, sigma=9 / 255)
    path = save_checkpoint(m, tmp_path / "ckpt", metadata={"note": "x", "t": torch.tensor(2.0)})
    assert path.name == "ckpt.json"
    loaded = load_checkpoint(tmp_path / "ckpt.safetensors")
    assert type(loaded) is cls and loaded.sigma == m.sigma and not loaded.training
    x = torch.rand(2, 1, 12, 12)
    assert torch.equal(loaded.grad(x), m.grad(x))
    assert torch.equal(loaded.value(x), m.value(x))
    assert torch.equal(loaded.denoise(x, 0.1), m.denoise(x, 0.1))
    assert loaded.grad_lipschitz == m.grad_lipschitz
    meta = read_checkpoint_metadata(tmp_path / "ckpt")["metadata"]
    assert meta == {"note": "x", "t": 2.0}
    # nothing but the two files (atomic writes leave no temporaries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]


def test_float64_model_round_trip(tmp_path):
    m = model().double()
    save_checkpoint(m, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    assert torch.equal(loaded.grad(x), m.grad(x))


def test_optimizer_state_round_trip(tmp_path):
    m = model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        m.value(torch.rand(2, 1, 8, 8)).sum().backward()
        opt.step()
    save_checkpoint(m, tmp_path / "c", optimizer=opt)
    m2 = load_checkpoint(tmp_path / "c")
    m2.train()
    opt2 = torch.optim.Adam(m2.parameters(), lr=1.0)
    load_optimizer_state(opt2, tmp_path / "c")
    assert opt2.param_groups[0]["lr"] == 1e-2
    x = torch.rand(2, 1, 8, 8)
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.zero_grad()
        mm.value(x).sum().backward()
        oo.step()
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_tampered_weights_raise(tmp_path):
    save_checkpoint(model(), tmp_path / "c")
    w, _, _ = checkpoint_paths(tmp_path / "c")
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_checkpoint(tmp_path / "c")


def test_truncated_weights_raise(tmp_path):
    save_checkpoint(model(), tmp_path / "c")
    w, _, _ = checkpoint_paths(tmp_path / "c")
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="load_checkpoint"):
        load_checkpoint(tmp_path / "c")


def test_truncated_json_and_missing_files_raise(tmp_path):
    save_checkpoint(model(), tmp_path / "c")
    _, j, _ = checkpoint_paths(tmp_path / "c")
    j.write_text(j.read_text()[:40])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(ValueError, match="no checkpoint description"):
        load_checkpoint(tmp_path / "absent")
    save_checkpoint(model(), tmp_path / "d")
    checkpoint_paths(tmp_path / "d")[0].unlink()
    with pytest.raises(ValueError, match="missing weights file"):
        load_checkpoint(tmp_path / "d")


def _edit_json(path, fn):
    _, j, _ = checkpoint_paths(path)
    info = json.loads(j.read_text())
    fn(info)
    j.write_text(json.dumps(info))


def test_wrong_shape_or_keys_raise(tmp_path):
    save_checkpoint(model(), tmp_path / "c")
    _edit_json(tmp_path / "c", lambda i: i["model_config"].update(channels=[1, 3, 7]))
    with pytest.raises(ValueError, match=r"has shape .* expects"):
        load_checkpoint(tmp_path / "c")
    save_checkpoint(model(), tmp_path / "d")

    def to_convex(info):
        info["model_class"] = "ConvexRidge"
        del info["model_config"]["nonconvex_channels"], info["model_config"]["rho_max"]

    _edit_json(tmp_path / "d", to_convex)
    with pytest.raises(ValueError, match="unexpected keys"):
        load_checkpoint(tmp_path / "d")


def test_unknown_class_and_bad_config_raise(tmp_path):
    save_checkpoint(model(), tmp_path / "c")
    _edit_json(tmp_path / "c", lambda i: i.update(model_class="Pickle"))
    with pytest.raises(ValueError, match="unknown model class 'Pickle'"):
        load_checkpoint(tmp_path / "c")
    save_checkpoint(model(), tmp_path / "d")
    _edit_json(tmp_path / "d", lambda i: i["model_config"].update(bogus=1))
    with pytest.raises(ValueError, match="cannot build"):
        load_checkpoint(tmp_path / "d")
    assert {"ConvexRidge", "WeakConvexRidge"} <= set(registered_models())


def test_save_rejects_models_without_config(tmp_path):
    with pytest.raises(TypeError, match="config"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x")
