"""Recipes: staged runs in a folder, stopped and resumed anywhere, bit for bit."""

import json
from pathlib import Path

import pytest
import torch

from lipinverse.training import load_checkpoint, recipes

TINY = {
    "name": "tiny", "seed": 1,
    "model": {"class": "WeakConvexRidge", "channels": [1, 3, 6], "kernel_size": 3,
              "num_knots": 11},
    "data": {"patch_size": 16, "patch_stride": 8, "sigma_max": 30.0},
    "stage": [
        {"objective": "tstep", "t": 3, "batch_size": 8, "epochs": 2, "steps_per_epoch": 3,
         "lr": 1e-2, "val_crop": 32, "lr_factors": {"convex_spline.": 2.0}},
        {"objective": "deq", "batch_size": 8, "epochs": 1, "steps_per_epoch": 3, "lr": 1e-3},
    ],
    "tune": {"sigmas": [15, 25], "grid": [0.5, 1.0], "crop": 32},
}


@pytest.fixture
def images(tmp_path):
    import numpy as np
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        imsave(folder / f"im{i}.png",
               (np.kron(rng.random((6, 6)), np.ones((8, 8))) * 255).astype(np.uint8))
    return folder


def test_shipped_recipes_load_and_name_their_models():
    assert {"crr", "wcrr"} <= set(recipes.available_recipes())
    for name, cls in (("crr", "ConvexRidge"), ("wcrr", "WeakConvexRidge")):
        r = recipes.load_recipe(name)
        assert r["model"]["class"] == cls and [s["objective"] for s in r["stage"]] == [
            "tstep", "deq"]


def test_wcrr_recipe_starts_its_concave_part_at_nu_mu_over_32():
    r = recipes.load_recipe("wcrr")
    m = recipes._stage_model(r, {}, Path("unused"), 1)  # from scratch: no init
    s = torch.tensor([5 / 255, 15 / 255, 25 / 255])
    torch.testing.assert_close(m.nu(s), m.mu(s) / 32)
    assert m.W.linear.out_channels == 60


def _first_stage_model(recipe_name: str):
    """``(recipe, checkpoint at its init, stage-1 model)`` of a shipped recipe with ``init``;
    skips where the checkpoint is not in this checkout."""
    r = recipes.load_recipe(recipe_name)
    init = Path(__file__).resolve().parents[2] / r["init"]
    if not init.with_suffix(".safetensors").is_file():
        pytest.skip(f"recipe {recipe_name}: its init checkpoint is not in this checkout ({init})")
    start = load_checkpoint(init)
    return r, start, recipes._stage_model(dict(r, init=str(init)), {}, Path("unused"), 1)


def test_wcrr_from_crr_recipe_starts_from_the_crr_run():
    r, crr, w = _first_stage_model("wcrr_from_crr")
    assert r["model"]["class"] == "WeakConvexRidge"
    assert [s["objective"] for s in r["stage"]] == ["deq"]
    assert type(w).__name__ == "WeakConvexRidge"
    assert w.W.linear.out_channels == crr.W.linear.out_channels == 60
    for k, v in crr.state_dict().items():  # the convex ridge is copied as it is
        assert torch.equal(w.state_dict()[k], v), k


def test_wcrr_stage2_recipe_continues_the_wcrr3_run_as_it_is():
    r, start, w = _first_stage_model("wcrr_stage2")
    assert r["model"]["class"] == "WeakConvexRidge"
    assert type(w) is type(start)  # loaded, not converted
    for k, v in start.state_dict().items():
        assert torch.equal(w.state_dict()[k], v), k


def test_crr_stage2_recipe_continues_the_crr_run_as_it_is():
    r, start, m = _first_stage_model("crr_stage2")
    assert r["model"]["class"] == "ConvexRidge" and type(m) is type(start)
    assert m.W.linear.out_channels == 60
    for k, v in start.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_bad_recipes_are_refused_with_the_field_named(tmp_path):
    bad = dict(TINY, stage=[dict(TINY["stage"][0], objective="adversarial")])
    with pytest.raises(ValueError, match="objective 'tstep' or 'deq'"):
        recipes.check_recipe(bad)
    with pytest.raises(ValueError, match="unknown keys"):
        recipes.check_recipe(dict(TINY, stage=[dict(TINY["stage"][0], lr_warmup=3)]))
    with pytest.raises(ValueError, match="unknown model class"):
        recipes.check_recipe(dict(TINY, model={"class": "Nope"}))
    with pytest.raises(ValueError, match="shipped recipe"):
        recipes.load_recipe("no-such-recipe")
    (tmp_path / "x.toml").write_text("name = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        recipes.load_recipe(tmp_path / "x.toml")


def test_interrupted_run_ends_bit_for_bit_like_a_straight_one(tmp_path, images, monkeypatch):
    quiet = {"log": lambda *a: None}
    straight = recipes.run_recipe(TINY, images, tmp_path / "a", val=images, **quiet)
    assert straight["done"]
    # a clock that moves 20 s per reading: the 2-minute budget stops each session
    # after a step or two, mid-stage
    from lipinverse.training import trainer as trainer_mod

    clock = iter(range(0, 10_000_000, 20))
    monkeypatch.setattr(trainer_mod.time, "perf_counter", lambda: float(next(clock)))
    run = recipes.run_recipe(TINY, images, tmp_path / "b", val=images, minutes=2, **quiet)
    sessions = 1
    while not run["done"]:
        run = recipes.resume_run(tmp_path / "b", minutes=2, **quiet)
        sessions += 1
        assert sessions < 50
    assert sessions > 3
    a = load_checkpoint(tmp_path / "a" / "final")
    b = load_checkpoint(tmp_path / "b" / "final")
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    rec = json.loads((tmp_path / "b" / "run.json").read_text())
    assert sum(s["steps"] for s in rec["sessions"]) == 9 and rec["core_seconds"] > 0
    meta = json.loads((tmp_path / "a" / "final.json").read_text())["metadata"]
    assert set(meta["tuning"]["psnr_after"]) == {"15", "25"}
    assert "certificates" in meta


def test_a_run_folder_is_not_overwritten(tmp_path, images):
    recipes.run_recipe(TINY, images, tmp_path / "a", log=lambda *a: None)
    with pytest.raises(ValueError, match="already holds a run"):
        recipes.run_recipe(TINY, images, tmp_path / "a", log=lambda *a: None)
    with pytest.raises(FileNotFoundError, match="no run.json"):
        recipes.resume_run(tmp_path / "nothing")


def test_init_starts_from_a_checkpoint_and_converts_convex_to_weakly_convex(tmp_path):
    from lipinverse.regularizers import ConvexRidge, WeakConvexRidge
    from lipinverse.training import save_checkpoint

    torch.manual_seed(0)
    crr = ConvexRidge(channels=(1, 3, 6), kernel_size=3, num_knots=11)
    save_checkpoint(crr, tmp_path / "c", metadata={})
    recipe = dict(TINY, init=str(tmp_path / "c"))
    got = recipes._stage_model(recipe, {}, tmp_path, 1)
    assert type(got) is WeakConvexRidge
    assert torch.equal(got.convex_spline.coefficients, crr.convex_spline.coefficients)
    same = recipes._stage_model(dict(recipe, model=dict(TINY["model"], **{
        "class": "ConvexRidge"})), {}, tmp_path, 1)
    for a, b in zip(same.parameters(), crr.parameters(), strict=True):
        assert torch.equal(a, b)
    save_checkpoint(WeakConvexRidge(channels=(1, 3), kernel_size=3), tmp_path / "w",
                    metadata={})
    bad = dict(TINY, model=dict(TINY["model"], **{"class": "ConvexRidge"}),
               init=str(tmp_path / "w"))
    with pytest.raises(ValueError, match="holds a WeakConvexRidge, expected a ConvexRidge"):
        recipes._stage_model(bad, {}, tmp_path, 1)


def test_a_folder_loads_as_its_final_best_or_last_checkpoint(tmp_path, images):
    from lipinverse.training import save_checkpoint
    from lipinverse.training.checkpoint import checkpoint_in_folder

    recipes.run_recipe(TINY, images, tmp_path / "a", val=images, log=lambda *a: None)
    assert checkpoint_in_folder(tmp_path / "a") == tmp_path / "a" / "final"
    m = load_checkpoint(tmp_path / "a")
    f = load_checkpoint(tmp_path / "a" / "final")
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), f.parameters(), strict=True))
    (tmp_path / "a" / "final.json").unlink()
    assert checkpoint_in_folder(tmp_path / "a") == tmp_path / "a" / "stage2-deq" / "final"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(images)
    with pytest.raises(ValueError, match="got the folder"):
        save_checkpoint(m, tmp_path / "a")


def test_recipe_errors_surface_before_training():
    bad_solver = dict(TINY, stage=[TINY["stage"][0], dict(TINY["stage"][1], solver="fist")])
    with pytest.raises(ValueError, match="stage 2: .*solver"):
        recipes.check_recipe(bad_solver)
    bad_factors = dict(TINY, stage=[dict(TINY["stage"][0], lr_factors=[["W.", 2.0]])])
    with pytest.raises(ValueError, match="stage 1: expected lr_factors a table"):
        recipes.check_recipe(bad_factors)
    with pytest.raises(ValueError, match="stage 1: .*batch_size"):
        recipes.check_recipe(dict(TINY, stage=[dict(TINY["stage"][0], batch_size=0)]))


def test_cli_resume_of_a_folder_without_run_json_is_one_clear_line(tmp_path, capsys):
    from lipinverse.cli import main

    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a recipe run folder (no run.json)" in err[0]
    assert main(["train", "--resume", str(tmp_path), "--images", str(tmp_path)]) == 2
    assert "drop --recipe, --images" in capsys.readouterr().err
