#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared run for a lent GPU machine (the `device` tool), whose image
# has torch and transformers but not raysweep's other imports. Two halves:
#
#   bash bench/gpu_run.sh fetch   # here, with pip's registry: the missing wheels into .whl/ (git-ignored)
#   bash bench/gpu_run.sh run     # there (device run, carry [".whl"]): install them, run bench/gpu_path.py
#
# `run` writes each preset's output to $OUT (or bench-out/ without it) and prints it; each preset is
# bounded by PRESET_TIMEOUT_S so one hang cannot eat the whole lease.
set -euo pipefail
cd "$(dirname "$0")/.."

# Exactly the versions this repo's venv was tested with; cp312 is the device image's Python.
WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        universal-pathlib==0.3.9 pathlib-abc==0.5.2 transformers==5.24.0)

case "${1:-}" in
  fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "${WHEELS[@]}"
    ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    out="${OUT:-bench-out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt" || true
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
      | tee -a "$out/gpu.txt"
    # SCALES and GPU_PATH_ARGS override the presets and shapes (a CPU smoke test: SCALES=nano).
    for scale in ${SCALES:-qwen2-0.5b openelm-270m}; do
      # shellcheck disable=SC2086  # GPU_PATH_ARGS is a list of arguments
      timeout "${PRESET_TIMEOUT_S:-200}" torchrun --nproc_per_node=1 bench/gpu_path.py --scale "$scale" \
        ${GPU_PATH_ARGS:---vocab 32000 --seq-len 512 --batch 16} --variants "${VARIANTS:-eager,compile,compile+ac}" \
        2>&1 | tee "$out/$scale.txt" || echo "$scale: exited $?" | tee -a "$out/$scale.txt"
    done
    ;;
  *)
    echo "usage: bash bench/gpu_run.sh fetch|run" >&2
    exit 2
    ;;
esac
