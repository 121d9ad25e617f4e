"""MuLaN embedding throughput: audio and text embeddings per second (inference, eval mode).

    python benchmarks/mulan.py                       # CPU, and CUDA when available
    python benchmarks/mulan.py --devices cpu --audio-seconds 2 --batch 4

Model: the seed-003 towers (dim 512, depth 6, heads 8, dim_head 64; AST patch 16, n_fft 128, window 24,
hop 12). Prints one line per case with the hardware.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from audiolm_pytorch import AudioSpectrogramTransformer, MuLaN, TextTransformer


def hardware(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads'


def synchronize(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def rate(fn, items: int, device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return items * iters / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description = __doc__, formatter_class = argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--devices', nargs = '+', default = None, help = 'default: cpu, plus cuda when available')
    parser.add_argument('--audio-seconds', type = float, default = 10.)
    parser.add_argument('--sample-hz', type = int, default = 16000)
    parser.add_argument('--text-tokens', type = int, default = 128)
    parser.add_argument('--batch', type = int, default = 8)
    parser.add_argument('--iters', type = int, default = 5)
    parser.add_argument('--warmup', type = int, default = 2)
    parser.add_argument('--dtype', default = 'float32', choices = ['float32', 'bfloat16'],
                        help = 'autocast dtype on CUDA (CPU always runs float32)')
    args = parser.parse_args()

    devices = args.devices or (['cpu'] + (['cuda'] if torch.cuda.is_available() else []))
    torch.manual_seed(0)
    mulan = MuLaN(
        audio_transformer = AudioSpectrogramTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64,
                                                        spec_n_fft = 128, spec_win_length = 24),
        text_transformer = TextTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64)).eval()

    samples = int(args.audio_seconds * args.sample_hz)
    patches = mulan.audio.patchify(mulan.audio.spectrogram(torch.zeros(1, samples)))[0].shape[1]

    for name in devices:
        device = torch.device(name)
        model = mulan.to(device)
        wavs = torch.randn(args.batch, samples, device = device)
        ids = torch.randint(1, 20000, (args.batch, args.text_tokens), device = device)
        use_autocast = device.type == 'cuda' and args.dtype == 'bfloat16'

        def audio():
            with torch.inference_mode(), torch.autocast('cuda', dtype = torch.bfloat16, enabled = use_autocast):
                model.get_audio_latents(wavs)

        def text():
            with torch.inference_mode(), torch.autocast('cuda', dtype = torch.bfloat16, enabled = use_autocast):
                model.get_text_latents(ids)

        dtype = args.dtype if device.type == 'cuda' else 'float32'
        audio_rate = rate(audio, args.batch, device, args.warmup, args.iters)
        print(f'mulan audio | {hardware(device)} | {dtype} | batch {args.batch} x {args.audio_seconds:g} s @ '
              f'{args.sample_hz} Hz ({patches} patches) | {audio_rate:.2f} embeddings/s '
              f'({audio_rate * args.audio_seconds:.1f} s of audio per s)', flush = True)
        text_rate = rate(text, args.batch, device, args.warmup, args.iters)
        print(f'mulan text  | {hardware(device)} | {dtype} | batch {args.batch} x {args.text_tokens} tokens | '
              f'{text_rate:.2f} embeddings/s', flush = True)


if __name__ == '__main__':
    main()
