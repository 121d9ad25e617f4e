"""Language-model speed: fine-stage training throughput and semantic generation with the kv cache.

    python benchmarks/lm.py [--device cpu|cuda] [--threads N] [--repeats R] [--gpu-mfu]

Prints one line per case with the hardware. Tokens are counted as positions of the modelled sequence:
fine training = batch x frames x (coarse + fine quantizers); generation = sampled tokens x batch.
On a shared CPU each line also gives this process's CPU time (``time.process_time``) and the 1-minute load
average: with other jobs running, wall time with several threads is unreliable, while CPU time with
``--threads 1`` measures the work itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads of a 2-thread
# pool wait for a descheduled partner and generation slows down several times. Set OMP_WAIT_POLICY yourself to
# override (it must be set before torch starts its thread pool).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402

from audiolm_pytorch.lm.fine import FineTransformer, FineTransformerWrapper  # noqa: E402
from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper  # noqa: E402


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def load_average() -> str:
    try:
        return f'load {os.getloadavg()[0]:.2f}'
    except OSError:
        return 'load n/a'


def hardware(device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads'


def bench_fine_training(device, repeats, batch = 2, frames = 200, dtype = None):
    model = FineTransformer(num_coarse_quantizers = 3, num_fine_quantizers = 5, codebook_size = 1024,
                            dim = 512, depth = 6).to(device)
    wrapper = FineTransformerWrapper(transformer = model).train()
    opt = torch.optim.Adam(model.parameters(), lr = 1e-4)
    codes = torch.randint(0, 1024, (batch, frames, 8), device = device)

    def step():
        with torch.autocast(device.type, dtype = dtype, enabled = dtype is not None):
            loss = wrapper(token_ids = codes, return_loss = True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none = True)

    step()  # warm up
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    cpu = (time.process_time() - cpu_start) / repeats
    tokens = batch * frames * 8
    print(f'fine training  dim=512 depth=6 batch={batch} frames={frames} ({tokens} tokens): '
          f'{seconds:.2f} s/step, {tokens / seconds:.0f} tokens/s (cpu {cpu:.2f} s/step) '
          f'[{hardware(device)}, {load_average()}]')


def bench_semantic_generation(device, batch, length = 240):
    model = SemanticTransformer(num_semantic_tokens = 500, dim = 512, depth = 6).to(device)
    with torch.no_grad():
        model.to_logits.bias[model.eos_id] = -1e4      # never stop early: time exactly `length` tokens
    wrapper = SemanticTransformerWrapper(transformer = model)
    wrapper.generate(max_length = 8, batch_size = batch)  # warm up
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = wrapper.generate(max_length = length, batch_size = batch)
    sync(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert out.shape == (batch, length)
    print(f'semantic generation dim=512 depth=6 batch={batch} tokens={length}: {seconds:.2f} s, '
          f'{batch * length / seconds:.0f} tokens/s ({length / seconds:.0f} steps/s, cpu {cpu:.2f} s) kv cache '
          f'[{hardware(device)}, {load_average()}]')


def bench_gpu_mfu(device, batch = 8, seq = 2048, steps = 10):
    """bf16 training MFU of a dim 1024 / depth 12 semantic transformer."""
    model = SemanticTransformer(num_semantic_tokens = 1024, dim = 1024, depth = 12, dim_head = 64, heads = 16).to(device)
    wrapper = SemanticTransformerWrapper(transformer = model, unique_consecutive = False, mask_prob = 0.)
    opt = torch.optim.AdamW(model.parameters(), lr = 1e-4, fused = True)
    ids = torch.randint(0, 1024, (batch, seq - 1), device = device)
    params = sum(p.numel() for p in model.parameters())

    def step():
        with torch.autocast('cuda', dtype = torch.bfloat16):
            loss = wrapper(semantic_token_ids = ids, return_loss = True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none = True)

    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    # 6 N per token for the matmuls plus causal attention (12 * layers * dim * seq / 2 per token)
    flops = batch * seq * (6 * params + 6 * 12 * 1024 * seq)
    peak = 989e12 if 'H100' in torch.cuda.get_device_name(device) or 'H200' in torch.cuda.get_device_name(device) else None
    mfu = f', MFU {flops / seconds / peak:.0%} of {peak / 1e12:.0f} TFLOPS' if peak else ''
    print(f'semantic bf16 training dim=1024 depth=12 batch={batch} seq={seq}: {seconds * 1e3:.0f} ms/step, '
          f'{batch * seq / seconds:.0f} tokens/s{mfu} [{hardware(device)}]')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default = 'cpu')
    parser.add_argument('--threads', type = int, default = None)
    parser.add_argument('--repeats', type = int, default = 2)
    parser.add_argument('--gpu-mfu', action = 'store_true')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    bench_fine_training(device, args.repeats)
    for batch in (1, 16):
        bench_semantic_generation(device, batch)
    if args.gpu_mfu and device.type == 'cuda':
        bench_gpu_mfu(device)


if __name__ == '__main__':
    main()
