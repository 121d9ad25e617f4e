"""SoundStorm generation speed vs. the coarse + fine autoregressive path.

Case (paper §4 setup): 30 s of codes at 50 Hz (1500 frames), 12 RVQ levels of 1024 codes, conditioned on
25 Hz semantic tokens; Conformer dim 512 / depth 12; 16 decoding steps on level 1 and 1 (greedy) on each of
the other 11 levels = 27 forward passes. Batch 1, untrained weights (speed only).

The autoregressive baseline generates the same 12 levels with a CoarseTransformer (4 levels) and a
FineTransformer (8 levels) of the same width / depth, one token per forward with a key/value cache. It needs
18 000 sequential steps for 30 s, so by default it runs on ``--ar-seconds`` of audio and the 30 s time is
extrapolated linearly from its per-frame cost (a lower bound: cached attention grows with length).

Prints one line per case: ``case device dtype seconds_of_audio wall_s realtime_factor``.

    python benchmarks/soundstorm.py                      # CPU (and CUDA when available)
    python benchmarks/soundstorm.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time

import torch

from audiolm_pytorch import ConformerWrapper, SoundStorm

FRAME_HZ, SEMANTIC_HZ, LEVELS, CODEBOOK, NUM_SEMANTIC = 50, 25, 12, 1024, 500


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def autocast(device, dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type = device.type, dtype = dtype)


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def soundstorm_case(device, dtype, seconds, repeats, dim, depth, first_level_steps):
    net = ConformerWrapper(codebook_size = CODEBOOK, num_quantizers = LEVELS, conformer = dict(dim = dim, depth = depth))
    model = SoundStorm(net, num_semantic_token_ids = NUM_SEMANTIC, codec_target_sample_hz = 16000,
                       codec_downsample_factor = 16000 // FRAME_HZ, wav2vec_target_sample_hz = 16000,
                       wav2vec_downsample_factor = 16000 // SEMANTIC_HZ).to(device).eval()
    semantic = torch.randint(0, NUM_SEMANTIC, (1, int(seconds * SEMANTIC_HZ)), device = device)

    def run():
        with autocast(device, dtype):
            return model.generate(cond_semantic_token_ids = semantic, steps = first_level_steps, num_full_sampling_levels = 1)

    timed(lambda: model.generate(cond_semantic_token_ids = semantic[:, :SEMANTIC_HZ], steps = 2), device, 1)  # warm-up
    wall, codes = timed(run, device, repeats)
    assert codes.shape == (1, int(seconds * FRAME_HZ), LEVELS) and codes.min() >= 0 and codes.max() < CODEBOOK
    passes = first_level_steps + LEVELS - 1
    return wall, passes


def autoregressive_case(device, dtype, seconds, dim, depth):
    from audiolm_pytorch import CoarseTransformer, CoarseTransformerWrapper, FineTransformer, FineTransformerWrapper
    coarse = CoarseTransformerWrapper(transformer = CoarseTransformer(
        num_semantic_tokens = NUM_SEMANTIC, codebook_size = CODEBOOK, num_coarse_quantizers = 4, dim = dim, depth = depth))
    fine = FineTransformerWrapper(transformer = FineTransformer(
        num_coarse_quantizers = 4, num_fine_quantizers = 8, codebook_size = CODEBOOK, dim = dim, depth = depth))
    coarse, fine = coarse.to(device).eval(), fine.to(device).eval()
    # the coarse transformer may sample EOS early when untrained: forbid it so every run generates all frames
    head_bias = getattr(coarse.transformer, 'coarse_head_bias', None)
    if head_bias is not None:
        head_bias.data[:, CODEBOOK:] = -1e4
    frames = int(seconds * FRAME_HZ)
    semantic = torch.randint(0, NUM_SEMANTIC, (1, int(seconds * SEMANTIC_HZ)), device = device)

    with torch.no_grad(), autocast(device, dtype):
        sync(device)
        start = time.perf_counter()
        coarse_codes = coarse.generate(semantic_token_ids = semantic, max_time_steps = frames, cond_scale = 1.)
        sync(device)
        coarse_time = time.perf_counter() - start
        start = time.perf_counter()
        fine_codes = fine.generate(coarse_token_ids = coarse_codes.clamp(min = 0), cond_scale = 1.)
        sync(device)
        fine_time = time.perf_counter() - start
    generated_frames = int((coarse_codes[..., 0] >= 0).sum())
    return coarse_time + fine_time, generated_frames, fine_codes.shape


def main():
    parser = argparse.ArgumentParser(description = __doc__, formatter_class = argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default = 'all', help = 'cpu, cuda or all (cpu + cuda when available)')
    parser.add_argument('--dtype', default = 'auto', help = 'float32, bfloat16 or auto (bf16 on cuda, fp32 on cpu)')
    parser.add_argument('--seconds', type = float, default = 30.)
    parser.add_argument('--dim', type = int, default = 512)
    parser.add_argument('--depth', type = int, default = 12)
    parser.add_argument('--steps', type = int, default = 16, help = 'decoding steps on level 1')
    parser.add_argument('--repeats', type = int, default = 0, help = 'timed runs (median); default 1 on cpu, 5 on cuda')
    parser.add_argument('--ar-seconds', type = float, default = 1., help = 'audio generated by the AR baseline (0 = skip)')
    parser.add_argument('--threads', type = int, default = 0, help = 'torch CPU threads (0 = leave as is)')
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ['cpu', 'cuda'] if args.device == 'all' else [args.device]
    devices = [d for d in devices if d != 'cuda' or torch.cuda.is_available()]
    print(f'# torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, '
          f'{torch.get_num_threads()} torch threads' + (f', {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''))
    print(f'# {args.seconds:g} s = {int(args.seconds * FRAME_HZ)} frames x {LEVELS} levels x {CODEBOOK} codes, '
          f'dim {args.dim} depth {args.depth}, steps {args.steps} + 1 x {LEVELS - 1}, batch 1')
    torch.manual_seed(0)
    for name in devices:
        device = torch.device(name)
        dtype = dict(float32 = torch.float32, bfloat16 = torch.bfloat16, float16 = torch.float16).get(
            args.dtype, torch.bfloat16 if name == 'cuda' else torch.float32)
        repeats = args.repeats or (5 if name == 'cuda' else 1)
        wall, passes = soundstorm_case(device, dtype, args.seconds, repeats, args.dim, args.depth, args.steps)
        print(f'soundstorm      {name:5s} {str(dtype)[6:]:9s} {args.seconds:6.1f} s audio  {wall:9.3f} s  '
              f'rtf {wall / args.seconds:.4f}  ({passes} passes, {wall / passes * 1e3:.1f} ms/pass)')
        if args.ar_seconds > 0:
            try:
                ar_wall, frames, _ = autoregressive_case(device, dtype, args.ar_seconds, args.dim, args.depth)
            except ImportError as error:
                print(f'coarse+fine AR  {name:5s} skipped: the lm stages are not available ({error})')
                continue
            per_frame = ar_wall / max(frames, 1)
            extrapolated = per_frame * args.seconds * FRAME_HZ
            print(f'coarse+fine AR  {name:5s} {str(dtype)[6:]:9s} {frames / FRAME_HZ:6.1f} s audio  {ar_wall:9.3f} s  '
                  f'rtf {ar_wall / (frames / FRAME_HZ):.4f}  ({frames * LEVELS} sequential tokens; '
                  f'{args.seconds:g} s extrapolated >= {extrapolated:.1f} s, {extrapolated / wall:.0f}x SoundStorm)')


if __name__ == '__main__':
    main()
