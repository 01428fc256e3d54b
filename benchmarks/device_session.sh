#!/usr/bin/env bash
# One GPU session in one call: continue the recipe runs on CUDA, then the CUDA tests and
# the CUDA timings; everything that must come back is written under $OUT as few files.
#
# Run on the device machine from the checkout's root (the `device` tool of this workplace),
# with the training data copied beforehand into the ignored folder .devdata/ and carried:
#   mkdir -p .devdata && cp -r ../shared/data/train400 ../shared/data/set12 .devdata/
#   (echo /.devdata/ >> .git/info/exclude once)
#   run: bash benchmarks/device_session.sh MINUTES RUN [RUN ...]    carry: [".devdata"]
# e.g. `bash benchmarks/device_session.sh 6 wcrr2` trains runs/wcrr2 for 6 minutes.
# Back here: `tar -xf <files_at>/runs.tar -C lipinverse/pretrained/runs`, then
# `python benchmarks/plot_run.py lipinverse/pretrained/runs/RUN` and commit.
set -u
minutes=${1:?minutes of training per run}
shift
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
out=${OUT:-/tmp/out}
mkdir -p "$out/runs" /work/shared
# run.json records the data as /work/shared/data/{train400,set12} (this project's layout)
[ -d /work/shared/data ] || cp -r .devdata /work/shared/data
nvidia-smi -L
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
for run in "$@"; do
    cp -r "lipinverse/pretrained/runs/$run" "$out/runs/$run"
    timeout $(( minutes * 60 + 120 )) python3 -m lipinverse.cli train --resume \
        "$out/runs/$run" --minutes "$minutes" --device cuda --quiet 2>&1 \
        | tee -a "$out/runs/$run/train.log" | tail -4
done
tar -C "$out/runs" -cf "$out/runs.tar" . && rm -rf "$out/runs"
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors tests 2>&1 | tail -6
timeout 120 python3 benchmarks/gpu.py --repeats 3 --out "$out/gpu.json" | tail -12
