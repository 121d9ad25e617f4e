"""SoundStream speed: one training step and tokenize + decode, for the seed config.

    python benchmarks/codec.py [--threads 2] [--device cpu|cuda] [--bf16] [--repeats 3] [--profile]

Cases (one line each, hardware named):
  train_step   generator + discriminator losses from one encoder/decoder pass, forward + backward,
               batch 2 x 1 s at 16 kHz (``return_all_losses=True``: what the trainer does)
  train_step_two_pass  the established two-call pattern: ``model(x)`` then ``model(x, return_discr_loss=True)``
  inference    tokenize + decode_from_codebook_indices of 10 s mono; RTF = seconds / 10

Seconds are the median wall clock over ``--repeats`` runs after one warm-up; ``cpu_s`` is process CPU time
(useful on a shared machine, where wall clock includes waiting for the cores).

Threads: unless ``OMP_WAIT_POLICY`` is already set, this script sets it to ``PASSIVE`` before torch loads. On a
shared 2-core box, OpenMP's default spin-waiting made 2-thread runs burn 3x the CPU time of 1-thread runs
(measured: train step 17.5 s wall / 12.5 cpu-s spinning vs 3.0 s / 4.3 cpu-s passive, load average ~3). Run with
``OMP_WAIT_POLICY=ACTIVE`` to measure the spinning default.
"""

from __future__ import annotations

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # must precede the torch import (read once by OpenMP)

import argparse
import platform
import statistics
import time

import torch


def hardware(device: str) -> str:
    if device == 'cuda':
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{name}, {torch.get_num_threads()} threads'


def timed(fn, repeats: int, device: str):
    fn()  # warm-up (k-means init, allocator, kernel selection)
    walls, cpus = [], []
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--threads', type = int, default = 2)
    parser.add_argument('--device', default = 'cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--bf16', action = 'store_true', help = 'bf16 autocast (GPU)')
    parser.add_argument('--repeats', type = int, default = 3)
    parser.add_argument('--batch', type = int, default = 2)
    parser.add_argument('--profile', action = 'store_true', help = 'print a torch.profiler table of the train step')
    parser.add_argument('--cases', default = 'train_step,train_step_two_pass,inference')
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from audiolm_pytorch import SoundStream

    device = args.device
    model = SoundStream(codebook_size = 1024, rq_num_quantizers = 8).to(device)
    sample_hz = model.target_sample_hz
    hw = hardware(device)
    autocast = torch.autocast(device_type = device, dtype = torch.bfloat16, enabled = args.bf16)
    precision = 'bf16' if args.bf16 else 'fp32'
    wave = torch.randn(args.batch, sample_hz, device = device) * 0.1

    def train_step():
        model.train()
        model.zero_grad(set_to_none = True)
        with autocast:
            losses = model(wave, return_all_losses = True)
        (losses.generator + losses.discriminator).backward()

    def train_step_two_pass():
        model.train()
        model.zero_grad(set_to_none = True)
        with autocast:
            loss = model(wave)
        loss.backward()
        with autocast:
            discr_loss = model(wave, return_discr_loss = True)
        discr_loss.backward()

    long_wave = torch.randn(1, sample_hz * 10, device = device) * 0.1

    def inference():
        model.eval()
        with torch.inference_mode(), autocast:
            codes = model.tokenize(long_wave)
            model.decode_from_codebook_indices(codes)

    cases = dict(train_step = (train_step, 1.), train_step_two_pass = (train_step_two_pass, 1.),
                 inference = (inference, 10.))
    for name in args.cases.split(','):
        fn, audio_seconds = cases[name]
        wall, cpu = timed(fn, args.repeats, device)
        extra = f'RTF {wall / audio_seconds:.3f}' if name == 'inference' else \
            f'{args.batch * audio_seconds / wall:.2f} audio-s/s'
        load = f', load {os.getloadavg()[0]:.2f}' if hasattr(os, 'getloadavg') else ''
        print(f'codec {name:20s} {wall:7.3f} s  (cpu {cpu:6.2f} s)  {extra}  [{precision}, {hw}{load}]', flush = True)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == 'cuda' else [])
        with profile(activities = activities) as prof:
            train_step()
        sort = 'cuda_time_total' if device == 'cuda' else 'cpu_time_total'
        print(prof.key_averages().table(sort_by = sort, row_limit = 30))
        with profile(activities = activities) as prof:
            inference()
        print(prof.key_averages().table(sort_by = sort, row_limit = 20))


if __name__ == '__main__':
    main()
