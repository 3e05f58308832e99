#!/usr/bin/env bash
# GPU speed benchmark of issue 7 — one prepared run, at most ~8 minutes on an H100/H200.
#
#   SD-1.5 architecture (random weights, built in memory), 512 px, batch 1: the standard recipe
#   (fp16 mixed precision, as the diffusers example script) vs our trainer in bf16 with K = 1, 4, 8, 16
#   concepts per UNet batch. Writes $OUT/gpu.csv, $OUT/gpu-table.txt, $OUT/gpu-info.txt.
#
# THE GPU MACHINE HAS NO NETWORK. This script installs and downloads nothing. The caller must
# prepare a Python that can import: torch (with CUDA), diffusers, transformers, safetensors,
# open_clip (its bundled BPE file is our CLIP vocabulary), pillow and numpy — e.g. carry a
# site-packages folder over and point PYTHONPATH at it, or set PYTHON to an interpreter that has
# them. The repository root is put on PYTHONPATH here (inversion/ and bench/ are imported from it).
#
#   PYTHON=python3 OUT=/some/dir bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-bench/gpu-out}"
LIMIT_S="${LIMIT_S:-450}"   # hard stop for the benchmark itself; results are written after every run
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

"$PYTHON" - <<'PY'
import importlib.util, sys
needed = ["torch", "diffusers", "transformers", "safetensors", "open_clip", "PIL", "numpy"]
missing = [m for m in needed if importlib.util.find_spec(m) is None]
if missing:
    sys.exit("bench/gpu.sh: missing Python packages: " + ", ".join(missing)
             + " (no network here: carry them over and set PYTHONPATH or PYTHON)")
import torch
if not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: torch sees no CUDA device")
print(f"bench/gpu.sh: torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
PY

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true; \
  "$PYTHON" -c 'import torch, diffusers, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__, "transformers", transformers.__version__)'; \
  date -u +"%Y-%m-%d %H:%M UTC"; } > "$OUT/gpu-info.txt"

timeout --signal=INT "$LIMIT_S" "$PYTHON" -m bench.speed \
    --models sd15 --resolutions 512 --batch 1 --packs 1,4,8,16 \
    --device cuda --precision bf16 --steps 10 --warmup 3 \
    --out "$OUT/gpu.csv" | tee "$OUT/gpu-table.txt"

# Optional (COMPILE=1, about 2 more minutes): our trainer with the torch.compile'd UNet, K = 1 and 8.
if [ "${COMPILE:-0}" = 1 ]; then
    timeout --signal=INT "${COMPILE_LIMIT_S:-240}" "$PYTHON" -m bench.speed \
        --models sd15 --resolutions 512 --batch 1 --packs 1,8 --variants sstar,sstar-packed \
        --device cuda --precision bf16 --compile --steps 10 --warmup 3 \
        --out "$OUT/gpu-compile.csv" | tee "$OUT/gpu-compile-table.txt"
fi
