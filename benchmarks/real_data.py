r"""What users bring: colour photos, photos blurred with an unknown boundary, CT of images
that are not piecewise constant.

Three tables, every method at the library's defaults (no tuning on the test images):

* **colour**: set5_colour, 128x128 centre crops (after a downscale), Levin kernel 1,
  circular blur, noise 2.55/255 per channel. TV (:math:`\lambda = 10\sigma^2`, channels
  coupled by nothing but the data), ``crr`` and ``wcrr`` on the opponent channels
  (:mod:`lipinverse.regularizers.colour`, certificates unchanged), at
  :func:`lipinverse.pretrained.deblur_prior`.
* **boundary**: BSD68 (the first ``--images``), 128x128 crops blurred the ordinary way,
  ``scipy.ndimage.convolve(mode="reflect")`` with Levin kernel 1, noise 2.55/255.
  Reconstructed with the circular model (wrong boundary) and with
  ``Blur(padding="valid")`` (unknown boundary: the image is solved for on a larger domain
  and cropped), TV and ``crr``.
* **ct**: BSD68 crops as attenuation maps and the Shepp-Logan phantom, 128x128, 60 angles,
  parallel beam, ``Radon(normalize=True)``, 1 % noise. FBP, TV (:math:`10\bar\sigma^2`),
  ``crr`` and ``wcrr`` at :func:`lipinverse.pretrained.ct_prior`, from the FBP.

PSNR (dB, clipped to [0, 1], over all channels). Writes
``benchmarks/results/real_data.{json,md}``.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/real_data.py [--images 4] [--parts colour boundary ct]

A part not run is kept from the saved results, with its own date.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from common import DATA, RESULTS, fmt, load_images, psnr, require_data, save  # noqa: I001

from operators import Blur, Radon

NOISE = 2.55 / 255
PARTS = ("colour", "boundary", "ct")


def levin(i: int) -> torch.Tensor:
    d = np.load(require_data(DATA / "kernels") / "levin8.npz")
    return torch.from_numpy(np.asarray(d[f"arr_{i}"], dtype=np.float64))


def solve(A, y, method: str, sigma: float, *, x0=None, ct: bool = False, max_iter=200,
          lam: float | None = None):
    """``(x, iterations, seconds)`` at the library's default strength for ``method``, or at
    the weight ``lam`` of a ridge prior (its conditioning level stays the default)."""
    from lipinverse import pretrained
    from lipinverse.functionals import L2Fidelity
    from lipinverse.regularizers import TV
    from lipinverse.solvers import PGD

    f = L2Fidelity(A, y)
    if method == "tv":
        solver = PGD(f, TV(), lam=max(10.0 * sigma**2, 1e-6), accelerate=True)
    else:
        model = pretrained.load(method).double()
        prior, default = (pretrained.ct_prior if ct else pretrained.deblur_prior)(model, sigma)
        solver = PGD(f, prior, lam=default if lam is None else lam, scheme="grad",
                     accelerate=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = solver.solve(x0=y if x0 is None else x0, max_iter=max_iter, tol=1e-4,
                           track_objective=False)
    return res.x, int(torch.as_tensor(res.iterations).max()), time.perf_counter() - t0


def colour_images(n: int):
    from lipinverse.io import center_crop, read_image, to_tensor

    folder = require_data(DATA / "set5_colour")
    files = sorted(folder.glob("*.png"))[:n]
    return [(p.name, to_tensor(center_crop(read_image(p, gray=False), 128),
                               dtype=torch.float64)) for p in files]


def part_colour(n: int, methods) -> dict:
    k = levin(1)
    rows = {m: [] for m in ("observation",) + tuple(methods)}
    for i, (name, x) in enumerate(colour_images(n)):
        A = Blur(k)
        g = torch.Generator().manual_seed(i)
        y = A(x) + NOISE * torch.randn(x.shape, generator=g, dtype=x.dtype)
        rows["observation"].append(psnr(y, x))
        for m in methods:
            xh, its, sec = solve(A, y, m, NOISE)
            rows[m].append(psnr(xh, x))
            print(f"colour {name} {m}: {rows[m][-1]:.2f} dB, {its} its, {sec:.1f} s", flush=True)
    return {"images": n, "kernel": "levin 1", "noise_x255": 2.55,
            "psnr": {m: statistics.mean(v) for m, v in rows.items()},
            "per_image": rows}


def part_boundary(n: int, methods) -> dict:
    import scipy.ndimage

    k = levin(1)
    ims = load_images(require_data(DATA / "bsd68"), limit=n, crop=128)
    rows = {"observation": []}
    for m in methods:
        rows[f"{m} circular"], rows[f"{m} valid"] = [], []
    for i, (name, x) in enumerate(ims):
        blurred = scipy.ndimage.convolve(x[0, 0].numpy(), k.numpy(), mode="reflect")
        g = torch.Generator().manual_seed(100 + i)
        y = torch.from_numpy(blurred)[None, None] + NOISE * torch.randn(x.shape, generator=g,
                                                                        dtype=x.dtype)
        rows["observation"].append(psnr(y, x))
        for m in methods:
            for boundary in ("circular", "valid"):
                A = Blur(k, padding=boundary)
                xh, its, sec = solve(A, y, m, NOISE, x0=A.extend(y))
                rows[f"{m} {boundary}"].append(psnr(A.crop(xh), x))
                print(f"boundary {name} {m} {boundary}: {rows[f'{m} {boundary}'][-1]:.2f} dB, "
                      f"{its} its, {sec:.1f} s", flush=True)
    return {"images": n, "kernel": "levin 1", "noise_x255": 2.55, "blur": "scipy reflect",
            "psnr": {m: statistics.mean(v) for m, v in rows.items()}, "per_image": rows}


def ct_problem(A, x, seed: int):
    """``(y, sigma, x_fbp)``: the sinogram of ``x`` with Gaussian noise of 1 % of
    max|Ax| (seeded), its noise level and its filtered back-projection."""
    clean = A(x)
    sigma = 0.01 * float(clean.abs().max())
    g = torch.Generator().manual_seed(seed)
    y = clean + sigma * torch.randn(clean.shape, generator=g, dtype=x.dtype)
    return y, sigma, A.fbp(y)


def part_ct(n: int, methods) -> dict:
    from lipinverse import pretrained
    from operators.phantoms import shepp_logan

    sets = {"bsd68 crops": load_images(require_data(DATA / "bsd68"), limit=n, crop=128),
            "shepp-logan": [("shepp-logan", shepp_logan(128).double())]}
    A = Radon(128, 60, normalize=True)
    out = {}
    for label, ims in sets.items():
        rows = {m: [] for m in ("fbp",) + tuple(methods)}
        for i, (name, x) in enumerate(ims):
            y, sigma, x_fbp = ct_problem(A, x, 200 + i)
            rows["fbp"].append(psnr(x_fbp, x))
            for m in methods:
                xh, its, sec = solve(A, y, m, sigma, x0=x_fbp, ct=True)
                rows[m].append(psnr(xh, x))
                print(f"ct {name} {m}: {rows[m][-1]:.2f} dB, {its} its, {sec:.1f} s",
                      flush=True)
        out[label] = {"images": len(ims), "psnr": {m: statistics.mean(v)
                                                   for m, v in rows.items()},
                      "per_image": rows}
    weights = {m: pretrained.ct_weight(pretrained.load(m)) for m in methods if m != "tv"}
    return {"angles": 60, "geometry": "parallel", "noise": "1 % of max|Ax|", "sets": out,
            "weights": weights}


def _measured(part: dict) -> str:
    return f"Measured {part['measured']}.\n" if "measured" in part else ""


def markdown(p) -> str:
    lines = ["# Real data: colour, unknown boundaries, CT of natural images", "",
             f"{p['date']}, {p['machine']}. PSNR in dB (clipped to [0, 1]), library defaults "
             "(no tuning on these images). `python benchmarks/real_data.py`.", ""]
    if "colour" in p:
        c = p["colour"]
        lines += [f"## Colour deblurring (set5_colour, {c['images']} images 128x128, "
                  f"{c['kernel']}, σ = {c['noise_x255']}/255)", "", _measured(c),
                  "| method | PSNR | vs TV |", "|---|---|---|"]
        tv = c["psnr"].get("tv")
        for m, v in c["psnr"].items():
            lines.append(f"| {m} | {fmt(v)} | {fmt(v - tv) if tv is not None else '–'} |")
        lines.append("")
    if "boundary" in p:
        b = p["boundary"]
        lines += [f"## Unknown boundary (BSD68, {b['images']} crops 128x128 blurred by "
                  f"{b['blur']}, {b['kernel']}, σ = {b['noise_x255']}/255)", "", _measured(b),
                  "| method | circular model | valid model (extend + crop) |", "|---|---|---|",
                  f"| observation | {fmt(b['psnr']['observation'])} | |"]
        for m in sorted({k.rsplit(' ', 1)[0] for k in b["psnr"] if k != "observation"}):
            lines.append(f"| {m} | {fmt(b['psnr'][m + ' circular'])} | "
                         f"{fmt(b['psnr'][m + ' valid'])} |")
        lines.append("")
    if "ct" in p:
        c = p["ct"]
        methods = list(next(iter(c["sets"].values()))["psnr"])
        lines += [f"## Sparse-view CT ({c['angles']} angles, {c['geometry']} beam, "
                  f"{c['noise']}, Radon(normalize=True))", "", _measured(c),
                  "Weights of the ridge priors (`pretrained.ct_weight`): "
                  + (", ".join(f"{m} {w:g}" for m, w in c["weights"].items())
                     if "weights" in c else "not recorded") + ".\n",
                  "| set | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for label, s in c["sets"].items():
            lines.append(f"| {label} ({s['images']}) | "
                         + " | ".join(fmt(s["psnr"][m]) for m in methods) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--methods", nargs="+", default=["tv", "crr", "wcrr"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    payload = {"threads": args.threads}
    if "colour" in args.parts:
        payload["colour"] = part_colour(min(args.images, 5), args.methods)
    if "boundary" in args.parts:
        payload["boundary"] = part_boundary(args.images, [m for m in args.methods
                                                          if m != "wcrr"])
    if "ct" in args.parts:
        payload["ct"] = part_ct(args.images, args.methods)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for part in args.parts:
        payload[part]["measured"] = stamp
    saved = RESULTS / "real_data.json"
    if saved.is_file():  # the parts not run this time are kept, with their own dates
        old = json.loads(saved.read_text())
        for part in PARTS:
            if part not in args.parts and part in old:
                payload[part] = dict(old[part], measured=old[part].get("measured",
                                                                       old["date"]))
    save("real_data", payload, markdown)


if __name__ == "__main__":
    main()
