"""PatchDataset and image loading."""

import numpy as np
import pytest
import torch

from lipinverse.training import PatchDataset, load_images


def dihedral(p):
    out = []
    for flip in (False, True):
        q = p.flip(-1) if flip else p
        out += [torch.rot90(q, k, dims=(-2, -1)) for k in range(4)]
    return out


def test_patches_cover_the_grid_and_match_the_image():
    img = torch.arange(20 * 12, dtype=torch.float32).reshape(1, 20, 12) / 240
    ds = PatchDataset(img[None], patch_size=4, stride=4, augment=False)
    assert len(ds) == 5 * 3
    torch.testing.assert_close(ds[0], img[:, :4, :4])
    torch.testing.assert_close(ds[4], img[:, 4:8, 4:8])  # row-major over the patch grid
    ds2 = PatchDataset(img, patch_size=4, stride=2)
    assert len(ds2) == 9 * 5


def test_augmentation_is_a_seeded_dihedral_transform():
    torch.manual_seed(0)
    img = torch.rand(2, 1, 16, 16)
    ds = PatchDataset(img, patch_size=8, stride=8, augment=True)
    idx = torch.arange(len(ds))
    a = ds.batch(idx, torch.Generator().manual_seed(3))
    b = ds.batch(idx, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    kinds = set()
    for i in range(len(ds)):
        matches = [k for k, q in enumerate(dihedral(ds[i])) if torch.equal(q, a[i])]
        assert matches
        kinds.add(matches[0])
    assert len(kinds) > 1


def test_scales_and_max_patches():
    img = torch.rand(1, 1, 32, 32)
    ds = PatchDataset(img, patch_size=8, scales=(1.0, 0.5))
    assert len(ds) == 16 + 4
    assert 0 <= float(ds.patches.min()) and float(ds.patches.max()) <= 1
    sub = PatchDataset(img, patch_size=8, scales=(1.0, 0.5), max_patches=5, seed=1)
    assert len(sub) == 5


def test_folder_loading_converts_to_gray_floats(tmp_path):
    from skimage.io import imsave

    rng = np.random.default_rng(0)
    gray = (rng.random((20, 24)) * 255).astype(np.uint8)
    rgb = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    imsave(tmp_path / "a.png", gray, check_contrast=False)
    imsave(tmp_path / "b.png", rgb, check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    imgs = load_images(tmp_path)
    assert [tuple(i.shape) for i in imgs] == [(1, 20, 24), (1, 20, 24)]
    torch.testing.assert_close(imgs[0][0], torch.from_numpy(gray / 255.0).float())
    ds = PatchDataset(str(tmp_path), patch_size=10)
    assert len(ds) == 2 * 2 * 2


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="load_images: expected a folder"):
        load_images(tmp_path / "nope")
    with pytest.raises(ValueError, match="load_images: no image"):
        load_images(tmp_path)
    with pytest.raises(ValueError, match="PatchDataset: no image is at least 64x64"):
        PatchDataset(torch.rand(1, 1, 16, 16), patch_size=64)
    with pytest.raises(ValueError, match="PatchDataset: expected patch_size"):
        PatchDataset(torch.rand(1, 1, 16, 16), patch_size=0)
    with pytest.raises(TypeError, match="PatchDataset: expected a folder path"):
        PatchDataset(42)
