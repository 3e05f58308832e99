#!/usr/bin/env bash
# GPU speed benchmark of issues 7, 12 and 23 — one prepared run, at most ~15 minutes on an H100/H200.
#
#   SD-1.5 architecture (random weights, built in memory), 512 px, batch 1: the standard recipe
#   (fp16 mixed precision, as the diffusers example script) vs our trainer in bf16 with K = 1, 4, 8, 16
#   concepts per UNet batch. Writes $OUT/gpu.csv, $OUT/gpu-table.txt, $OUT/gpu-info.txt.
#   SDXL architecture (random weights, built in bf16), 1024 px, batch 1: the SDXL recipe (bf16 mixed
#   precision, as the diffusers SDXL script's README) vs ours in bf16 with K = 1 and 4. Writes
#   $OUT/gpu-sdxl.csv and $OUT/gpu-sdxl-table.txt. SDXL=0 skips it.
#   Tiny Flux (issue 23; random weights, 64 px, batch 4 — real-size Flux does not fit): diffusers' advanced
#   Flux script in pure textual-inversion mode (bf16 as its README) vs ours in bf16 with K = 1 and 4, run
#   between the two blocks above (about a minute, FLUX_LIMIT_S caps it). Writes $OUT/gpu-flux.csv and
#   $OUT/gpu-flux-table.txt. FLUX=0 skips it.
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
LIMIT_S="${LIMIT_S:-450}"   # hard stop for the SD-1.5 rows; results are written after every run
SDXL_LIMIT_S="${SDXL_LIMIT_S:-330}"   # hard stop for the SDXL rows
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

# bench LIMIT NAME ARGS…: python -m bench.speed ARGS… stopped after LIMIT seconds (it keeps the rows
# measured so far), its CSV at $OUT/NAME.csv and its table at $OUT/NAME-table.txt; a stop at the
# limit does not end this script (the next block still runs).
bench() {
    local limit="$1" name="$2"
    shift 2
    timeout --signal=INT "$limit" "$PYTHON" -m bench.speed "$@" --out "$OUT/$name.csv" \
        | tee "$OUT/$name-table.txt" \
        || echo "bench/gpu.sh: $name stopped (time limit $limit s or error); its CSV keeps the rows measured" >&2
}

bench "$LIMIT_S" gpu --models sd15 --resolutions 512 --batch 1 --packs 1,4,8,16 \
    --device cuda --precision bf16 --steps 10 --warmup 3

if [ "${FLUX:-1}" = 1 ]; then
    bench "${FLUX_LIMIT_S:-120}" gpu-flux --models flux-tiny --resolutions native --batch 4 --packs 1,4 \
        --device cuda --precision bf16 --steps 30 --warmup 5
fi

if [ "${SDXL:-1}" = 1 ]; then
    bench "$SDXL_LIMIT_S" gpu-sdxl --models sdxl --resolutions 1024 --batch 1 --packs 1,4 \
        --device cuda --precision bf16 --steps 5 --warmup 2
fi

# Optional (COMPILE=1, about 2 more minutes): our trainer with the torch.compile'd UNet, K = 1 and 8.
if [ "${COMPILE:-0}" = 1 ]; then
    bench "${COMPILE_LIMIT_S:-240}" gpu-compile --models sd15 --resolutions 512 --batch 1 --packs 1,8 \
        --variants sstar,sstar-packed --device cuda --precision bf16 --compile --steps 10 --warmup 3
fi
