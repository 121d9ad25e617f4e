"""Does the codec pass content through its bottleneck? A probe for issue 13's learning gap.

Trains the small config of ``benchmarks/quality.py`` on its corpus with the model's own generator loss (Adam,
seeded crops, one thread) and prints, every ``--every`` steps: the held-out log-mel L1 (``codecs/metrics.py``),
the held-out code use per level, the mean latent magnitude and the latents' standard deviation *over time*
(near 0: the encoder sends the same vector for every frame, the decoder can only output a mean spectrum).
Also prints, once, the log-mel L1 of the per-clip constant-spectrum oracle (each held-out clip's own mean log-mel
at every frame): a model above it has not learned the clips' content.

    python benchmarks/codec_latent_probe.py --steps 800 [--no-quantizer] [--no-final-norm] [--kwargs '{json}']

``--no-quantizer`` passes the latents to the decoder unquantized; ``--no-final-norm`` replaces the last
LayerNorm of the encoder / decoder local transformers by the identity. Figures: benchmarks/RESULTS.md,
"Codec recipe side by side in one run (300 steps), ours at 1000 steps, and why the small codec does not learn
content yet".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--steps', type = int, default = 800)
    parser.add_argument('--every', type = int, default = 100)
    parser.add_argument('--lr', type = float, default = 1e-3)
    parser.add_argument('--kwargs', default = '{}', help = 'JSON merged into the SoundStream kwargs')
    parser.add_argument('--no-quantizer', action = 'store_true')
    parser.add_argument('--no-final-norm', action = 'store_true')
    parser.add_argument('--corpus', type = Path, default = Path('/work/data/codec_corpus'))
    args = parser.parse_args()

    torch.set_num_threads(1)
    sys.path.insert(0, str(quality.REPO_ROOT))
    import audiolm_pytorch as lib
    metrics = quality._metrics_module()
    train = [w for _, w in quality._load_clips(args.corpus / 'train')]
    heldout = quality._load_clips(args.corpus / 'heldout')

    torch.manual_seed(0)
    model = lib.SoundStream(**{**quality.SMALL_CONFIG, **json.loads(args.kwargs)})
    if args.no_final_norm:
        for attn in (model.encoder_attn, model.decoder_attn):
            if attn is not None:
                attn.final_norm = torch.nn.Identity()
    levels = model.num_quantizers

    def quantize(latents):
        if args.no_quantizer:
            return latents, torch.zeros(*latents.shape[:2], levels, dtype = torch.long), torch.zeros(())
        return model.quantize(latents)

    def probe(step, started):
        model.eval()
        scores, codes, spreads, sizes = [], [], [], []
        with torch.no_grad():
            for _, wave in heldout:
                n = wave.shape[0] // model.seq_len_multiple_of * model.seq_len_multiple_of
                latents = model.encode(torch.from_numpy(wave[:n]).reshape(1, 1, n))
                quantized, clip_codes, _ = quantize(latents)
                recon = model.decode(quantized).reshape(-1).numpy()
                scores.append(metrics.log_mel_l1(wave[:recon.shape[0]], recon, quality.SAMPLE_HZ))
                codes.append(clip_codes.reshape(-1, clip_codes.shape[-1]).numpy())
                spreads.append(latents.std(dim = 1).mean().item())
                sizes.append(latents.abs().mean().item())
        model.train()
        used = [] if args.no_quantizer else [round(level['used'], 2) for level in
                                              metrics.codebook_usage(np.concatenate(codes), model.codebook_size)]
        print(f'step {step}: held-out log-mel L1 {np.mean(scores):.3f}, code use {used}, |latent| {np.mean(sizes):.3g}, '
              f'latent std over time {np.mean(spreads):.3g} ({time.perf_counter() - started:.0f} s)', flush = True)

    oracle = []
    for _, wave in heldout:
        ref = metrics.log_mel(wave, quality.SAMPLE_HZ)
        oracle.append((ref.mean(dim = 1, keepdim = True) - ref).abs().mean().item())
    print(f'per-clip constant-spectrum oracle: held-out log-mel L1 {np.mean(oracle):.3f}', flush = True)

    optimizer = torch.optim.Adam(model.non_discr_parameters(), lr = args.lr)
    rng = np.random.default_rng(0)
    crop = int(0.5 * quality.SAMPLE_HZ)
    started = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            probe(step, started)
        if step == args.steps:
            break
        x = torch.from_numpy(np.stack([quality._crop(rng, train, crop) for _ in range(4)]))
        real = model.process_input(x)
        quantized, _, commitment = quantize(model.encode(real))
        loss, _ = model._generator_losses(real, model.decode(quantized), commitment)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == '__main__':
    main()
