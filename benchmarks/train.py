"""Training throughput of every trainer at a small config: steps/s, samples/s and the share of time spent
waiting on data. One line per case; the hardware is printed first.

    python benchmarks/train.py                     # CPU, fp32
    python benchmarks/train.py --bf16 --steps 30   # on a GPU: bf16 autocast through Accelerate
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / 'tests' / 'assets'


def build_codec():
    from audiolm_pytorch import SoundStream
    return SoundStream(codebook_size = 256, rq_num_quantizers = 4, channels = 16, strides = (2, 4, 5, 8),
                       channel_mults = (2, 4, 8, 8), codebook_dim = 64, attn_window_size = 32, attn_depth = 1,
                       attn_heads = 4, attn_dim_head = 32, discr_multi_scales = (1., 0.5), target_sample_hz = 16000)


def build_trainers(kind, folder, results, batch_size, accelerate_kwargs, workers):
    from audiolm_pytorch import (CoarseTransformer, CoarseTransformerTrainer, FineTransformer, FineTransformerTrainer,
                                 SemanticTransformer, SemanticTransformerTrainer, SoundStreamTrainer,
                                 SpectralKmeansTokenizer)
    common = dict(folder = folder, batch_size = batch_size, num_train_steps = 10 ** 6, results_folder = results,
                  save_results_every = 10 ** 6, save_model_every = 10 ** 6, progress_bar = False,
                  accelerate_kwargs = accelerate_kwargs, dl_num_workers = workers, force_clear_prev_results = True)
    lm = dict(dim = 256, depth = 4, heads = 4, dim_head = 64)
    if kind == 'soundstream':
        return SoundStreamTrainer(build_codec(), data_max_length = 8000, grad_accum_every = 1, **common)
    wav2vec = SpectralKmeansTokenizer(codebook_size = 128, target_sample_hz = 16000)
    wav2vec.fit(sorted(ASSETS.glob('*_16k.wav')), epochs = 2)
    codec = build_codec().eval()
    if kind == 'semantic':
        return SemanticTransformerTrainer(SemanticTransformer(num_semantic_tokens = 128, **lm), wav2vec,
                                          data_max_length = 32000, **common)
    if kind == 'coarse':
        return CoarseTransformerTrainer(CoarseTransformer(num_semantic_tokens = 128, codebook_size = 256,
                                                          num_coarse_quantizers = 2, **lm), codec, wav2vec,
                                        data_max_length = 16000, **common)
    return FineTransformerTrainer(FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2,
                                                  codebook_size = 256, **lm), codec, data_max_length = 16000, **common)


def bench(kind, steps, batch_size, accelerate_kwargs, workers):
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainers(kind, ASSETS, Path(tmp) / 'results', batch_size, accelerate_kwargs, workers)
        trainer.train_step()  # step 0: warm-up, k-means init, validation at step 0
        waiting = 0.
        original_next = trainer.next_batch

        def timed_next(train = True):
            nonlocal waiting
            start = time.perf_counter()
            batch = original_next(train)
            waiting += time.perf_counter() - start
            return batch

        trainer.next_batch = timed_next
        sync = torch.cuda.synchronize if trainer.device.type == 'cuda' else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        sync()
        elapsed = time.perf_counter() - start
        samples = steps * batch_size * trainer.grad_accum_every * trainer.accelerator.num_processes
        print(f'{kind:12s} device={trainer.device.type} precision={trainer.mixed_precision} batch={batch_size} '
              f'workers={workers} steps/s={steps / elapsed:7.2f} samples/s={samples / elapsed:8.1f} '
              f'data_wait={100 * waiting / elapsed:5.1f}%', flush = True)


def main():
    parser = argparse.ArgumentParser(description = __doc__, formatter_class = argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--kinds', default = 'soundstream,semantic,coarse,fine')
    parser.add_argument('--steps', type = int, default = 10)
    parser.add_argument('--batch-size', type = int, default = 4)
    parser.add_argument('--workers', type = int, default = 0)
    parser.add_argument('--bf16', action = 'store_true')
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
    print(f'# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, GPU: {gpu}, '
          f'torch {torch.__version__}, python {sys.version.split()[0]}')
    accelerate_kwargs = dict(mixed_precision = 'bf16') if args.bf16 else {}
    for kind in args.kinds.split(','):
        bench(kind, args.steps, args.batch_size, accelerate_kwargs, args.workers)


if __name__ == '__main__':
    main()
