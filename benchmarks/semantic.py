"""Semantic tokenization speed: frames/s of HuBERT-base-sized ``HubertWithKmeans`` (random weights, layer 9,
500 clusters), on CPU in float32 and, when CUDA is available, on GPU in bf16 (and fp32 for reference).

    python benchmarks/semantic.py [--seconds 10] [--batch 1] [--repeats 5] [--threads N]

One line per case: device, dtype, batch x seconds, frames/s, and x-real-time (audio seconds per wall second).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_tokenizer(root: Path):
    from transformers import HubertConfig, HubertModel

    from audiolm_pytorch import HubertWithKmeans

    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(root / 'hubert_base')    # HuBERT base: 768 dims, 12 layers
    np.save(root / 'km500.npy', np.random.default_rng(0).standard_normal((500, 768)).astype(np.float32))
    return HubertWithKmeans(root / 'hubert_base', root / 'km500.npy', output_layer = 9)


def time_case(tokenizer, *, device: str, dtype: torch.dtype, batch: int, seconds: float, repeats: int) -> str:
    tokenizer = tokenizer.to(device = device, dtype = dtype)
    wave = torch.randn(batch, int(seconds * tokenizer.target_sample_hz), device = device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    tokenizer(wave)  # warm-up (kernel selection, allocator)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        ids = tokenizer(wave)
    sync()
    elapsed = (time.perf_counter() - start) / repeats

    frames = ids.numel()
    name = torch.cuda.get_device_name() if device == 'cuda' else f'{platform.processor() or platform.machine()} ' \
                                                                 f'({torch.get_num_threads()} threads)'
    return (f'hubert-base L9 km500 | {device} {name} | {str(dtype).replace("torch.", "")} | '
            f'batch {batch} x {seconds:g} s | {frames / elapsed:,.0f} frames/s | '
            f'{batch * seconds / elapsed:,.1f}x real time')


def main():
    parser = argparse.ArgumentParser(description = __doc__, formatter_class = argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type = float, default = 10.)
    parser.add_argument('--batch', type = int, default = 1)
    parser.add_argument('--gpu-batch', type = int, default = 16)
    parser.add_argument('--repeats', type = int, default = 5)
    parser.add_argument('--threads', type = int, default = None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp))
        print(time_case(tokenizer, device = 'cpu', dtype = torch.float32, batch = args.batch, seconds = args.seconds,
                        repeats = args.repeats), flush = True)
        if torch.cuda.is_available():
            for dtype in (torch.float32, torch.bfloat16):
                print(time_case(tokenizer, device = 'cuda', dtype = dtype, batch = args.gpu_batch,
                                seconds = args.seconds, repeats = args.repeats * 4), flush = True)


if __name__ == '__main__':
    main()
