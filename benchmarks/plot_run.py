r"""Learning curves of a recipe run folder (``lipinverse train --recipe``): the training loss
and the validation PSNR of every stage against steps and core-hours, as ``curve.png`` in the
run folder, and the whole run's history as one CSV (``curve.csv``).

Usage: ``python benchmarks/plot_run.py lipinverse/pretrained/runs/wcrr``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def rows(run_dir: Path) -> list[dict]:
    """Every epoch record of every stage, with the stage name and a global step."""
    run = json.loads((run_dir / "run.json").read_text())
    out, offset = [], 0
    for i, stage in enumerate(run["recipe"]["stage"], 1):
        name = f"stage{i}-{stage.get('name', stage['objective'])}"
        path = run_dir / name / "history.csv"
        if not path.is_file():
            break
        with path.open() as f:
            recs = list(csv.DictReader(f))
        for r in recs:
            rec = {"stage": name, **{k: float(v) for k, v in r.items() if v not in ("", None)}}
            rec["global_step"] = offset + rec.get("step", 0.0)
            out.append(rec)
        offset += stage["epochs"] * stage["steps_per_epoch"]
    return out


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(argv[0])
    recs = rows(run_dir)
    if not recs:
        print(f"plot_run: no history.csv in {run_dir} yet")
        return 1
    keys = sorted({k for r in recs for k in r}, key=lambda k: (k != "stage", k))
    with (run_dir / "curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(recs)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for stage in dict.fromkeys(r["stage"] for r in recs):
        rs = [r for r in recs if r["stage"] == stage]
        tr = [r for r in rs if "train_data_loss" in r]
        a.semilogy([r["global_step"] for r in tr], [r["train_data_loss"] for r in tr],
                   label=stage)
        va = [r for r in rs if "val_psnr" in r]
        b.plot([r["global_step"] for r in va], [r["val_psnr"] for r in va], "o-", ms=3,
               label=stage)
    a.set(xlabel="step (batch 128)", ylabel="training MSE", title="training loss")
    b.set(xlabel="step (batch 128)", ylabel="PSNR (dB)",
          title="validation: set12 crops, sigma 15/255")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    run = json.loads((run_dir / "run.json").read_text())
    fig.suptitle(f"{run_dir.name} ({run['recipe'].get('name')} recipe): {usage(run)}")
    fig.tight_layout()
    fig.savefig(run_dir / "curve.png", dpi=110)
    print(f"wrote {run_dir / 'curve.png'}, {run_dir / 'curve.csv'}")
    return 0


def on_cuda(session: dict) -> bool:
    """Whether a session of ``run.json`` ran on a GPU."""
    return str(session.get("device", "cpu")).startswith("cuda")


def core_seconds(session: dict) -> float:
    """CPU core-seconds of a session of ``run.json``: wall time × threads, 0 on a GPU."""
    return 0.0 if on_cuda(session) else session.get("wall_s", 0.0) * session.get("threads", 1)


def usage(run: dict) -> str:
    """Compute spent so far: CPU core-hours, and GPU hours where sessions ran on CUDA."""
    cpu = sum(core_seconds(s) for s in run["sessions"])
    gpu = sum(s.get("wall_s", 0.0) for s in run["sessions"] if on_cuda(s))
    text = f"{cpu / 3600:.2f} CPU core-hours"
    return text + (f" + {gpu / 3600:.2f} GPU-hours" if gpu else "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
