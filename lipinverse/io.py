r"""Reading and writing images, and parsing blur-kernel specifications.

Used by the ``lipinverse`` command and the demos; plain functions that users may call too.

Conventions
-----------
* Images are read as **float64 arrays with values in [0, 1]**: ``(H, W)`` grey or, with
  ``gray=False``, ``(H, W, 3)`` RGB for a colour file. Every PIL mode is decoded (CMYK,
  YCbCr, palettes, 1-bit, 16-bit; multi-frame files, FIFOs and devices are refused).
  Integer images are divided by the largest value of their dtype (255 for ``uint8``, 65535
  for ``uint16`` and for 32-bit images whose values fit in 16 bits); an alpha
  channel is dropped; with ``gray=True`` colour is converted to luminance with
  :func:`skimage.color.rgb2gray` (:math:`0.2125 R + 0.7154 G + 0.0721 B`); floating
  images must already lie in [0, 1] (they are never rescaled or clipped silently).
* Tensors are ``(1, C, H, W)`` (:func:`to_tensor`), arrays channel-last.
* Images are written as 8-bit PNG (or any format scikit-image infers from the suffix),
  grey or RGB. The
  values are clipped to [0, 1] *for display only* (a reconstruction may overshoot slightly)
  and rounded to ``uint8``; PSNR / SSIM are always computed on the unclipped floats.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["channels_last", "as_unit_image", "read_image", "write_image", "parse_kernel",
           "builtin_image", "to_tensor",
           "to_numpy", "center_crop", "save_figure", "history_series", "KERNEL_SPECS"]

#: The kernel specifications :func:`parse_kernel` accepts (for help texts).
KERNEL_SPECS = ("gaussian:SIGMA", "uniform:SIZE", "motion:SEED[:SIZE[:LENGTH]]", "FILE.npy",
                "FILE.npz[:KEY]")


def builtin_image(name: str, *, gray: bool = True) -> np.ndarray:
    """An image that scikit-image ships (``camera``, ``astronaut``, ...), in [0, 1]:
    grey ``(H, W)``, or RGB ``(H, W, 3)`` for a colour image with ``gray=False``.

    Nothing is downloaded: only images bundled with scikit-image work.

    Raises
    ------
    ValueError
        If ``name`` is not an image function of :mod:`skimage.data`, or needs a download.
    """
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None or name.startswith("_") or not callable(fn) or name in (
            "data_dir", "download_all", "file_hash", "lbp_frontal_face_cascade_filename"):
        raise ValueError(f"builtin_image: unknown scikit-image image {name!r}; try 'camera', "
                         "'astronaut', 'moon', 'coins', 'text', 'brick'")
    try:
        img = fn()
    except Exception as err:  # pooch missing / no network: a clear message, not a traceback
        raise ValueError(f"builtin_image: scikit-image image {name!r} is not bundled "
                         f"({type(err).__name__}); use 'camera' or a file") from None
    return as_unit_image(np.asarray(img), f"skimage:{name}", gray)


def read_image(path: str | os.PathLike, *, gray: bool = True) -> np.ndarray:
    """Read an image file as a float64 array with values in [0, 1]: ``(H, W)`` grey (the
    luminance of a colour file), or with ``gray=False`` ``(H, W, 3)`` RGB for a colour file
    (a grey file stays ``(H, W)``).

    ``path`` may also be ``skimage:NAME`` for an image that scikit-image ships (see
    :func:`builtin_image`). See the module docstring for the conversion rules.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be decoded as an image, is not 2-D grayscale / RGB(A), or is a
        floating image with values outside [0, 1].
    """
    spec = os.fspath(path)
    if spec.startswith("skimage:"):
        return builtin_image(spec.split(":", 1)[1], gray=gray)
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"read_image: no such file: '{spec}'")
    if p.is_dir():
        raise ValueError(f"read_image: expected an image file, got the directory '{spec}'")
    if not p.is_file():  # a FIFO or a device would block or stream forever
        raise ValueError(f"read_image: expected a regular image file, got '{spec}' (a FIFO, "
                         "socket or device)")
    return as_unit_image(_decode(p, spec), spec, gray)


#: PIL modes that the array readers get wrong (CMYK read as RGBA, palettes as indices,
#: YCbCr/LAB/HSV as RGB): converted by PIL first, to these modes.
_PIL_CONVERT = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "P": "RGB",
                "PA": "RGBA", "1": "L", "La": "LA", "RGBa": "RGBA"}


def _decode(p: Path, spec: str) -> np.ndarray:
    """The pixel array of one image file (integer or float, grey, grey+alpha, RGB(A))."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ValueError(f"read_image: '{spec}' holds {frames} frames (an animation "
                                 "or a stack); expected a single image")
            if im.mode in _PIL_CONVERT:
                target = _PIL_CONVERT[im.mode]
                if im.mode == "P" and "transparency" in im.info:
                    target = "RGBA"
                return np.asarray(im.convert(target))
    except UnidentifiedImageError:
        pass  # not a PIL format: the other decoders may know it
    except (OSError, SyntaxError) as err:
        raise ValueError(f"read_image: could not read '{spec}' as an image "
                         f"({type(err).__name__}: {err})") from None
    import skimage.io

    try:
        return np.asarray(skimage.io.imread(spec))
    except Exception as err:  # decoders raise many types; all mean "not an image"
        raise ValueError(f"read_image: could not read '{spec}' as an image "
                         f"({type(err).__name__})") from None


def as_unit_image(img: np.ndarray, name: str, gray: bool = True) -> np.ndarray:
    """A decoded array as float64 in [0, 1] by the reader's rules: alpha dropped, integers
    divided by their type's maximum (32/64-bit integers by 65535 when the values fit in 16
    bits), floats required in [0, 1] (NaN refused), colour kept or turned to luminance
    (``gray``). ``name`` is for the error messages."""
    if img.dtype == object or img.size == 0:
        raise ValueError(f"read_image: could not read '{name}' as an image")
    if img.ndim == 3 and img.shape[-1] in (2, 4):  # gray+alpha or RGBA: drop alpha
        img = img[..., :-1]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if np.issubdtype(img.dtype, np.bool_):
        img = img.astype(np.float64)
    elif np.issubdtype(img.dtype, np.signedinteger) and img.dtype.itemsize >= 4:
        # 32/64-bit integer pixels (PIL mode "I"): 16-bit data in a wide container
        # unless the values say otherwise; negative values mean no image scale
        if img.min() < 0:
            raise ValueError(f"read_image: '{name}' has negative integer pixels "
                             f"(min {img.min()}); expected intensities >= 0")
        top = 65535.0 if img.max() <= 65535 else float(np.iinfo(img.dtype).max)
        img = img.astype(np.float64) / top
    elif np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float64) / float(np.iinfo(img.dtype).max)
    elif np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float64)
        if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            raise ValueError(f"read_image: '{name}' is a floating-point image with values "
                             f"outside [0, 1] (range [{np.nanmin(img):.3g}, {np.nanmax(img):.3g}])"
                             "; rescale it first")
    else:
        raise ValueError(f"read_image: unsupported pixel type {img.dtype} in '{name}'")
    if img.ndim == 3 and img.shape[-1] == 3 and gray:
        from skimage.color import rgb2gray

        img = rgb2gray(img)
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 3)):
        raise ValueError(f"read_image: expected a 2-D grayscale or RGB image in '{name}', "
                         f"got an array of shape {img.shape}")
    return np.ascontiguousarray(img, dtype=np.float64)


def write_image(path: str | os.PathLike, img) -> Path:
    """Write a grey or RGB image (array ``(H, W)`` / ``(H, W, 3)`` or tensor
    ``(1, C, H, W)``, values nominally in [0, 1]) as 8-bit.

    Values are clipped to [0, 1] for display only, then rounded to ``uint8``. Parent
    directories are created. The write is atomic (temporary file, fsync, rename): a failed
    write leaves an existing file intact. Returns the path written.

    Raises
    ------
    ValueError
        If the image is not grey or RGB after squeezing singleton dimensions or has NaN
        entries.
    OSError
        If the file cannot be written.
    """
    arr = channels_last(img, "write_image")
    if not (arr.ndim == 2 or arr.shape[-1] == 3):
        raise ValueError(f"write_image: expected a grey (H, W) or RGB image, got shape "
                         f"{tuple(np.shape(img))}")
    if np.isnan(arr).any():
        raise ValueError("write_image: the image has NaN entries")
    import skimage.io

    from ._atomic import atomic_path

    p = Path(path)
    u8 = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_path(p) as tmp:  # an existing file stays intact if the write fails
        skimage.io.imsave(os.fspath(tmp), u8, check_contrast=False)
    return p


def to_numpy(img) -> np.ndarray:
    """A tensor or an array as a float64 array, leading singleton axes dropped
    (``(1, 1, H, W)`` -> ``(H, W)``, ``(1, 3, H, W)`` -> ``(3, H, W)``)."""
    if isinstance(img, torch.Tensor):
        img = img.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(img, dtype=np.float64)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def to_tensor(img: np.ndarray, *, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """A grey ``(H, W)`` or colour ``(H, W, C)`` array as a ``(1, C, H, W)`` tensor on
    ``device``."""
    arr = np.asarray(img)
    if arr.ndim == 3:
        return torch.as_tensor(np.moveaxis(arr, -1, 0).copy(), dtype=dtype)[None].to(device)
    if arr.ndim != 2:
        raise ValueError(f"to_tensor: expected a (H, W) or (H, W, C) array, got shape "
                         f"{arr.shape}")
    return torch.as_tensor(arr, dtype=dtype).reshape(1, 1, *arr.shape).to(device)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` crop of ``img`` (after a downscale when the image is more
    than twice as large, so that the crop keeps most of the scene).

    Raises
    ------
    ValueError
        If ``size`` < 16 or the image is smaller than ``size`` on a side.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"center_crop: expected an int size >= 16, got {size!r}")
    h, w = img.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"center_crop: the image ({h}x{w}) is smaller than the requested "
                         f"size {size}")
    factor = min(h, w) // size
    if factor >= 2:
        from skimage.transform import downscale_local_mean

        img = downscale_local_mean(img, (factor, factor) + (1,) * (img.ndim - 2))
        h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top:top + size, left:left + size])


def _number(spec: str, text: str, kind, what: str):
    try:
        val = kind(text)
    except ValueError:
        raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: expected {what}, "
                         f"got {text!r}") from None
    if kind is float and not math.isfinite(val):
        raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: {what} must be finite")
    return val


def parse_kernel(spec: str) -> torch.Tensor:
    """Parse a blur-kernel specification into a 2-D float64 tensor summing to 1.

    Accepted forms:

    * ``gaussian:SIGMA``: isotropic Gaussian of standard deviation ``SIGMA`` pixels (> 0);
    * ``uniform:SIZE``: ``SIZE x SIZE`` box blur;
    * ``motion:SEED[:SIZE[:LENGTH]]``: random camera-shake kernel (default 15x15), a path
      of ``LENGTH`` pixels (default ``0.6 (SIZE - 1)``), the same for the same seed;
    * ``FILE.npy``: a 2-D array saved with :func:`numpy.save`;
    * ``FILE.npz`` or ``FILE.npz:KEY``: one array of an ``.npz`` archive (its first one when
      no key is given), e.g. ``levin8.npz:arr_3``.

    File kernels must be real, finite and nonnegative with a positive sum; they are
    normalised to sum 1 (a blur preserves the mean brightness).

    Raises
    ------
    ValueError
        For any malformed specification, with the accepted forms in the message.
    FileNotFoundError
        If a kernel file does not exist.
    """
    from operators import kernels

    if not isinstance(spec, str) or not spec:
        raise ValueError(f"parse_kernel: expected a kernel spec, one of {', '.join(KERNEL_SPECS)}"
                         f"; got {spec!r}")
    head, _, rest = spec.partition(":")
    if head.lower().endswith((".npy", ".npz")):
        return _kernel_file(spec, head, rest)
    name = head.lower()
    if name == "gaussian":
        sigma = _number(spec, rest, float, "a standard deviation in pixels (e.g. gaussian:2.0)")
        if sigma <= 0 or sigma > 50:
            raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: expected 0 < sigma <= 50")
        return kernels.gaussian(sigma)
    if name == "uniform":
        size = _number(spec, rest, int, "an integer size (e.g. uniform:9)")
        if size < 1 or size > 201:
            raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: expected 1 <= size <= 201")
        return kernels.uniform(size)
    if name == "motion":
        seed_text, _, rest = rest.partition(":")
        size_text, _, length_text = rest.partition(":")
        seed = _number(spec, seed_text, int, "an integer seed (e.g. motion:3)")
        size = 15 if not size_text else _number(spec, size_text, int, "an integer size")
        if size < 3 or size > 201:
            raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: expected 3 <= size <= 201")
        length = None if not length_text else _number(spec, length_text, float,
                                                       "a path length in pixels")
        if length is not None and not 0 < length <= size - 1:
            raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: expected 0 < LENGTH <= "
                             f"SIZE - 1 = {size - 1}")
        return kernels.motion(size, seed, length=length)
    raise ValueError(f"parse_kernel: unknown kernel spec {spec!r}; expected one of "
                     f"{', '.join(KERNEL_SPECS)}")


def _kernel_file(spec: str, path: str, key: str) -> torch.Tensor:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"parse_kernel: no such kernel file: '{path}'")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"parse_kernel: could not read '{path}' as a numpy file "
                         f"({type(err).__name__})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = list(data.files)
            if not names:
                raise ValueError(f"parse_kernel: '{path}' holds no arrays")
            if key and key not in names:
                raise ValueError(f"parse_kernel: '{path}' has no array {key!r}; it has "
                                 f"{', '.join(names)}")
            arr = np.asarray(data[key or names[0]])
    else:
        if key:
            raise ValueError(f"parse_kernel: bad kernel spec {spec!r}: a .npy file holds one "
                             "array, drop ':KEY'")
        arr = np.asarray(data)
    while arr.ndim > 2 and arr.shape[0] == 1:  # (1, 1, kh, kw) as saved from a tensor
        arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"parse_kernel: expected a real 2-D kernel in '{path}', got "
                         f"shape {arr.shape} and dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError(f"parse_kernel: the kernel in '{path}' must be finite and "
                         "nonnegative with a positive sum")
    return torch.from_numpy(arr / arr.sum())


def history_series(history, key: str = "relative_change") -> list[float]:
    """One quantity per iteration from a solver ``result.history`` (worst sample of a batch).

    Accepts an object whose attribute ``key`` is a tensor ``(K,)`` or ``(K, B)`` (the
    :class:`lipinverse.solvers.History` of a result), a mapping of lists, a list of records
    with an attribute or item ``key``, or ``None`` (empty list). Missing, ``None`` and
    non-finite entries are skipped.
    """
    if history is None:
        return []
    if isinstance(history, dict):
        seq = history.get(key, [])
    elif hasattr(history, key):
        seq = getattr(history, key)
        seq = [] if seq is None else seq
    else:
        seq = [rec.get(key) if isinstance(rec, dict) else getattr(rec, key, None)
               for rec in history]
    out = []
    for v in seq:
        if isinstance(v, torch.Tensor):
            v = float(v.detach().max()) if v.numel() else None
        if v is not None and math.isfinite(float(v)):
            out.append(float(v))
    return out


def save_figure(path: str | os.PathLike, panels, curves=None, *,
                curve_key: str = "relative_change",
                title: str | None = None) -> Path:
    """Write a comparison figure (matplotlib, Agg backend): images side by side and,
    optionally, convergence curves.

    Parameters
    ----------
    path : str or Path
        Output file (PNG, PDF, SVG ... by suffix); parent folders are created.
    panels : list of (str, image)
        Titles and images (tensors or arrays, grey or colour, values in [0, 1]; shown
        clipped to [0, 1]). ``None`` images are skipped.
    curves : dict, optional
        ``label -> result`` (anything with a ``history``) or ``label -> sequence``: plotted
        on a log scale against the iteration.
    curve_key : str
        The history quantity to plot (default the relative change
        :math:`\\|x_{k+1} - x_k\\| / \\|x_k\\|`).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    panels = [(t, channels_last(im, "save_figure")) for t, im in panels if im is not None]
    series = {}
    for label, c in (curves or {}).items():
        s = history_series(getattr(c, "history", None), curve_key) if hasattr(c, "history") \
            else [float(v) for v in c]
        if s:
            series[label] = s
    n = len(panels) + (1 if series else 0)
    if n == 0:
        raise ValueError("save_figure: nothing to draw (no panels and no curves)")
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (t, im) in zip(axes[0], panels, strict=False):
        ax.imshow(np.clip(im, 0, 1), cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    if series:
        ax = axes[0][-1]
        for label, s in series.items():
            ax.semilogy(range(1, len(s) + 1), s, label=label)
        ax.set_xlabel("iteration")
        ax.set_ylabel(curve_key.replace("_", " "))
        ax.set_title("convergence", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from ._atomic import atomic_path

    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=110, format=p.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return p


def channels_last(img, name: str = "image_metrics") -> np.ndarray:
    """A grey ``(H, W)`` or colour ``(H, W, C)`` float64 array: tensors ``(1, C, H, W)`` /
    ``(C, H, W)`` are channel-first, arrays ``(H, W, 3|4)`` channel-last."""
    channel_first = isinstance(img, torch.Tensor)
    arr = to_numpy(img)
    if arr.ndim == 3 and (channel_first or arr.shape[-1] not in (3, 4)):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a grey (H, W) or colour image, got shape "
                         f"{tuple(np.shape(img))}")
    return arr
