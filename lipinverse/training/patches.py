r"""Image loading and patch datasets for training on the user's own images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["PatchDataset", "load_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")


def load_images(folder, *, limit: int | None = None,
                dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    r"""Load every image of ``folder`` (sorted by name) as a ``(1, H, W)`` tensor in [0, 1].

    Read by :func:`lipinverse.io.read_image` (the reader of the CLI): colour images become
    their luminance (``skimage.color.rgb2gray``), integer images are scaled by their
    dtype range, every PIL mode is decoded (CMYK, palettes, 16-bit) or refused with the
    file named.  ``limit`` keeps the first ones;
    ``dtype`` is that of the returned tensors (converted from float64).

    Raises
    ------
    ValueError
        If ``folder`` does not exist or holds no image.
    """
    from ..io import read_image

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"load_images: expected a folder of images, got {str(root)!r}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[: int(limit)]
    if not files:
        raise ValueError(f"load_images: no image ({', '.join(IMAGE_SUFFIXES)}) in {str(root)!r}")
    out = []
    for f in files:
        try:
            arr = read_image(f, gray=True)  # the one reader of the CLI and lipinverse.io
        except (ValueError, OSError) as err:
            raise ValueError(f"load_images: {f}: {err}") from None
        out.append(torch.from_numpy(arr).to(dtype).unsqueeze(0))
    return out


def _as_images(source, name: str) -> list[torch.Tensor]:
    if isinstance(source, (str, Path)):
        return load_images(source)
    if isinstance(source, torch.Tensor):
        if source.is_complex():
            raise TypeError(f"{name}: expected real images, got dtype {source.dtype}")
        t = source.detach()
        if t.dim() == 2:
            t = t[None, None]
        elif t.dim() == 3:
            t = t[:, None]
        if t.dim() != 4:
            raise ValueError(f"{name}: expected a tensor (H, W), (N, H, W) or (N, C, H, W), "
                             f"got shape {tuple(source.shape)}")
        return [img for img in t.float()]
    if isinstance(source, (list, tuple)) and source:
        out = []
        for img in source:
            if isinstance(img, np.ndarray):
                from ..io import as_unit_image

                img = torch.from_numpy(as_unit_image(img, name, gray=True)).float()
            if not isinstance(img, torch.Tensor):
                raise TypeError(f"{name}: expected images as tensors or arrays, got {type(img)}")
            img = img.detach().float()
            out.append(img[None] if img.dim() == 2 else img)
        return out
    raise TypeError(f"{name}: expected a folder path, a tensor or a list of images, "
                    f"got {type(source).__name__}")


class PatchDataset(torch.utils.data.Dataset):
    r"""Square patches cut from images, with optional rescaling and dihedral augmentation.

    Parameters
    ----------
    source : str, Path, tensor or list
        A folder of images (PNG/JPG/BMP/TIFF, read by scikit-image, converted to
        grayscale floats in [0, 1]), a tensor ``(N, C, H, W)`` / ``(N, H, W)`` /
        ``(H, W)``, or a list of ``(C, H, W)`` tensors or arrays.
    patch_size : int, default 40
    stride : int, optional
        Distance between patches (default ``patch_size``: no overlap).
    scales : tuple of float, default (1.0,)
        Each image is also used rescaled by these factors (anti-aliased).
    augment : bool, default True
        :meth:`batch` applies a random element of the dihedral group (8 flips /
        rotations by 90°) to each patch.
    seed : int, default 0
        Seed of the default augmentation generator and of ``max_patches``.
    max_patches : int, optional
        Keep a random subset (seeded) of this many patches.

    Notes
    -----
    All patches are cut once and kept in memory as one ``(N, C, p, p)`` float32 tensor
    (:attr:`patches`); ``dataset[i]`` is patch ``i`` unaugmented.
    """

    def __init__(self, source, patch_size: int = 40, stride: int | None = None,
                 scales=(1.0,), augment: bool = True, seed: int = 0,
                 max_patches: int | None = None) -> None:
        name = "PatchDataset"
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"{name}: expected patch_size a positive int, got {patch_size!r}")
        stride = patch_size if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"{name}: expected stride a positive int, got {stride!r}")
        scales = tuple(float(s) for s in scales)
        if not scales or not all(0 < s < float("inf") for s in scales):
            raise ValueError(f"{name}: expected positive finite scales, got {scales}")
        if max_patches is not None and (isinstance(max_patches, bool) or not isinstance(
                max_patches, int) or max_patches < 1):
            raise ValueError(f"{name}: expected max_patches a positive int or None, "
                             f"got {max_patches!r}")
        images = _as_images(source, name)
        chans = {img.shape[0] for img in images}
        if 0 in chans:
            raise ValueError(f"{name}: expected images with at least one channel, got "
                             f"shapes {sorted({tuple(img.shape) for img in images})[:4]}")
        if len(chans) != 1:
            raise ValueError(f"{name}: expected images with the same number of channels, "
                             f"got {sorted(chans)}")
        self.patch_size, self.stride, self.scales = patch_size, stride, scales
        self.augment, self.seed = bool(augment), int(seed)
        pieces = []
        for img in images:
            for s in scales:
                im = img if s == 1.0 else self._rescale(img, s)
                if im.shape[-1] < patch_size or im.shape[-2] < patch_size:
                    continue
                p = im.unfold(1, patch_size, stride).unfold(2, patch_size, stride)
                pieces.append(p.permute(1, 2, 0, 3, 4).reshape(-1, im.shape[0], patch_size,
                                                                patch_size))
        if not pieces:
            sizes = sorted({tuple(img.shape[-2:]) for img in images})[:4]
            raise ValueError(f"{name}: no image is at least {patch_size}x{patch_size} "
                             f"(at scales {scales}): expected an image at least that large, "
                             f"got sizes {sizes}")
        patches = torch.cat(pieces).contiguous()
        bad = ~torch.isfinite(patches.flatten(1)).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"{name}: expected finite images, got NaN or Inf in "
                             f"{int(bad.sum())} patch(es)")
        if max_patches is not None and max_patches < patches.shape[0]:
            g = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(patches.shape[0], generator=g)[: int(max_patches)]
            patches = patches[keep.sort().values]
        self.patches = patches
        self._generator = torch.Generator().manual_seed(self.seed)

    @staticmethod
    def _rescale(img: torch.Tensor, s: float) -> torch.Tensor:
        from skimage.transform import rescale

        arr = rescale(img.numpy().astype(np.float64), s, anti_aliasing=True, channel_axis=0)
        return torch.from_numpy(np.clip(arr, 0.0, 1.0)).float()

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.patches[i]

    def batch(self, indices, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Patches ``indices`` as a ``(B, C, p, p)`` tensor, randomly flipped / rotated if
        ``augment`` (drawn from ``generator``, default the dataset's own)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = self.patches[idx]
        if not self.augment:
            return out
        g = self._generator if generator is None else generator
        ops = torch.randint(0, 8, (idx.numel(),), generator=g)
        res = out.clone()
        for k in range(8):
            sel = (ops == k).nonzero().flatten()
            if sel.numel() == 0 or k == 0:
                continue
            p = out[sel]
            if k >= 4:
                p = p.flip(-1)
            res[sel] = torch.rot90(p, k % 4, dims=(-2, -1))
        return res

    def extra_repr(self) -> str:  # pragma: no cover - cosmetic
        return f"{len(self)} patches of {self.patch_size}x{self.patch_size}"

    def __repr__(self) -> str:
        return (f"PatchDataset({len(self)} patches {tuple(self.patches.shape[1:])}, "
                f"stride={self.stride}, scales={self.scales}, augment={self.augment})")
