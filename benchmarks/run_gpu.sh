#!/usr/bin/env bash
# Every GPU figure the issues ask for, in one run (about 5-8 minutes on one H100/H200), logged to $OUT (or
# ./gpu_results). Needs the wheels from benchmarks/gpu_wheels.sh carried as .whl. Figures go to RESULTS.md by hand,
# with the device named.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/device.txt"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$OUT/device.txt"

run() {   # name, timeout seconds, command...
    local name=$1 limit=$2; shift 2
    echo "=== $name: $*" | tee -a "$OUT/all.log"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tee -a "$OUT/all.log" | tail -n 30
}

run flash       60  python3 benchmarks/gpu_flash_check.py
run codec_bf16  150 python3 benchmarks/codec.py --device cuda --bf16 --repeats 5
run codec_fp32  120 python3 benchmarks/codec.py --device cuda --repeats 5
run lm          200 python3 benchmarks/lm.py --device cuda --gpu-mfu --repeats 5
run soundstorm  150 python3 benchmarks/soundstorm.py --device cuda --ar-seconds 2
