#!/usr/bin/env bash
# Train the toy world on a GPU, then (optionally) run the quality benchmark against it.
#
#   OUT=/some/dir bash bench/world/gpu.sh            # training with the default step counts (~130 s on an H200)
#   CALIBRATE=1 OUT=/some/dir bash bench/world/gpu.sh  # first a short run to measure steps/s (logged)
#   QUALITY=1 ...                                      # also python -m bench.quality.run on the result
#
# No network there: Python packages missing on the machine come as wheels in .whl/ (diffusers,
# open_clip_torch, ftfy, wcwidth, importlib_metadata); they are installed into /tmp/site.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-bench/world/gpu-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu-info.txt" 2>&1 || true
"$PYTHON" -c 'import torch, diffusers, transformers, open_clip; print("torch", torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__, "open_clip", open_clip.__version__)' | tee -a "$OUT/gpu-info.txt"

EXTRA=()
if [ "${CALIBRATE:-0}" = 1 ]; then
    timeout 150 "$PYTHON" -m bench.world.train --out /tmp/world-calib --device cuda --seed 0 \
        --dataset-size 16384 --vae-steps 300 --diffusion-steps 400 --clip-steps 300 --eval-samples 64 \
        2>&1 | tee "$OUT/calibration.log"
    cp /tmp/world-calib/train_log.json "$OUT/calibration_log.json" 2>/dev/null || true
    # step counts for ~TARGET seconds per phase, from the measured rates (rounded down to 100s)
    read -r VAE DIFF CLIP < <("$PYTHON" - "$OUT/calibration_log.json" <<'PY'
import json, sys
log = json.load(open(sys.argv[1]))
target = {"vae": 25, "diffusion": 100, "clip": 25}
print(*(max(100, int(log[k]["steps_per_s"] * t) // 100 * 100) for k, t in target.items()))
PY
    )
    echo "calibrated step counts: vae $VAE diffusion $DIFF clip $CLIP" | tee -a "$OUT/calibration.log"
    EXTRA=(--vae-steps "$VAE" --diffusion-steps "$DIFF" --clip-steps "$CLIP")
fi

WEIGHTS=/tmp/world-weights
timeout "${TRAIN_LIMIT_S:-300}" "$PYTHON" -m bench.world.train --out "$WEIGHTS" --device cuda --seed 0 "${EXTRA[@]}" \
    2>&1 | tee "$OUT/train.log"
if [ ! -d "$WEIGHTS" ] && [ -d "$WEIGHTS.partial" ]; then WEIGHTS="$WEIGHTS.partial"; fi

if [ "${QUALITY:-0}" = 1 ] && [ -f "$WEIGHTS/model_index.json" ]; then
    timeout "${QUALITY_LIMIT_S:-420}" "$PYTHON" -m bench.quality.run --world "$WEIGHTS" --out /tmp/quality \
        --device cuda 2>&1 | tee "$OUT/quality.log"
fi
# files come back in at most 8 pieces of < 16 MB: one tarball of everything, split
tar -czf /tmp/world-gpu.tgz -C /tmp "$(basename "$WEIGHTS")" $( [ -d /tmp/quality ] && echo quality ) 2>/dev/null
split -b 15M -d /tmp/world-gpu.tgz "$OUT/world-gpu.tgz.part"
ls -la "$OUT"
