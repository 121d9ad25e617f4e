#!/usr/bin/env bash
# Fetch (here, where pip can download) the wheels that the lent GPU machine's image lacks, into .whl/ at the
# repository root, for Python 3.12 on x86-64. The image already has torch, accelerate, transformers, einops,
# safetensors, numpy, pyyaml, tqdm, sympy, typing-extensions (see the device tool's KINDS.md).
# Then run benchmarks/run_gpu.sh there with `.whl` carried.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    vector-quantize-pytorch==1.32.0 einx==0.4.3 frozendict==2.5.1 loguru==0.7.3 torch-einops-utils==0.2.0 \
    beartype==0.23.1 julius==0.2.8 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
ls -la .whl
