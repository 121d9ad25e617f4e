"""Codebook dynamics of the codec's residual quantizer (issue 13, "codebook dynamics"): k-means initialisation
on enough vectors (``rq_kmeans_init_multiple``) and code usage on held-out audio after a short training run.

Figures behind the defaults: benchmarks/RESULTS.md, "Codebook usage (codec-usage)".
"""

import math

import pytest
import torch

from audiolm_pytorch import SoundStream
from audiolm_pytorch.codecs.quantizer_training import KMeansInitWarmup, pending_kmeans_init

HOP = 320
TINY = dict(channels = 8, strides = (2, 4, 5, 8), codebook_dim = 32, use_local_attn = False,
            discr_multi_scales = (), stft_discriminator = False)


def varied_audio(clips: int, length: int, seed: int, sample_hz: int = 16000) -> torch.Tensor:
    """``(clips, length)`` of varied synthetic audio: gliding harmonic tones, band-limited gated noise and
    tremolo chords, with pitches drawn over ~4.5 octaves."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / sample_hz
    out = []
    for _ in range(clips):
        kind = int(torch.randint(3, (1,), generator = gen))
        f0 = 80 * 2 ** (4.5 * float(torch.rand(1, generator = gen)))
        if kind == 0:
            glide = 2 ** ((float(torch.rand(1, generator = gen)) - 0.5) * t)
            phase = 2 * math.pi * torch.cumsum(f0 * glide, 0) / sample_hz
            x = sum(torch.sin(k * phase) / k for k in range(1, 6))
        elif kind == 1:
            width = int(torch.randint(1, 16, (1,), generator = gen))
            noise = torch.randn(1, 1, length, generator = gen)
            x = torch.nn.functional.avg_pool1d(noise, width, 1, padding = width // 2)[0, 0, :length]
            x = x * (torch.sin(2 * math.pi * 8 * float(torch.rand(1, generator = gen)) * t) > 0)
        else:
            partials = f0 * (1 + 3 * torch.rand(4, generator = gen))
            x = torch.sin(2 * math.pi * partials[:, None] * t).sum(0) * (1 + torch.sin(2 * math.pi * 3 * t)) / 2
        out.append(0.5 * x / x.abs().max().clamp(min = 1e-6))
    return torch.stack(out)


def level_codebooks(model):
    return [layer._codebook for layer in model.rq.layers]


def quantize_train(model, x):
    """One training-mode quantizer pass (EMA, dead codes, k-means) without the generator losses."""
    model.train()
    with torch.no_grad():
        return model.quantize(model.encode(x[:, None]))


def test_kmeans_runs_again_on_enough_vectors():
    """The first micro-batch (4 x 10 frames = 40 vectors for 64 codes) initialises the codebooks as before; once
    8 x 64 vectors were seen, k-means runs again on all of them and replaces every level's codebook."""
    torch.manual_seed(0)
    model = SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 3, rq_kmeans_init_multiple = 8)
    assert model._kmeans_warmup.min_vectors == 8 * 64
    data = varied_audio(64, 10 * HOP, seed = 1)
    quantize_train(model, data[:4])
    assert not pending_kmeans_init(model.rq) and model._kmeans_warmup._active
    steps = 1
    while model._kmeans_warmup._active:
        before = [cb.embed.clone() for cb in level_codebooks(model)]
        quantize_train(model, data[4 * steps: 4 * steps + 4])
        steps += 1
        assert steps <= 13
    assert steps == math.ceil(8 * 64 / 40)
    # every level was re-fitted (EMA alone moves a codebook by at most (1 - decay) of its distance to the batch)
    for old, cb in zip(before, level_codebooks(model)):
        moved = (cb.embed - old).norm(dim = -1).mean() / old.norm(dim = -1).mean()
        assert moved > 0.1, moved
    # the EMA counts are in vectors per forward again (what the relative dead-code threshold compares with)
    for cb in level_codebooks(model):
        assert 30 < cb.cluster_size.sum().item() < 50


def test_former_behaviour_keeps_the_first_micro_batch_init():
    torch.manual_seed(0)
    model = SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 3)     # default: rq_kmeans_init_multiple=None
    assert model._kmeans_warmup is None
    data = varied_audio(64, 10 * HOP, seed = 1)
    quantize_train(model, data[:4])
    for step in range(1, 14):
        before = level_codebooks(model)[0].embed.clone()
        quantize_train(model, data[4 * step: 4 * step + 4])
        moved = (level_codebooks(model)[0].embed - before).norm(dim = -1).mean() / before.norm(dim = -1).mean()
        assert moved < 0.1, (step, moved)


def test_a_trained_or_loaded_codec_is_not_reinitialised():
    torch.manual_seed(0)
    trained = SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 2, rq_kmeans_init_multiple = 8)
    data = varied_audio(8, 10 * HOP, seed = 1)
    quantize_train(trained, data[:4])
    loaded = SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 2, rq_kmeans_init_multiple = 8)
    loaded.load_state_dict(trained.state_dict())
    quantize_train(loaded, data[4:])
    assert loaded._kmeans_warmup._active is False and loaded._kmeans_warmup._count == 0


def test_bad_kmeans_multiple_is_a_clear_error():
    with pytest.raises(ValueError, match = 'rq_kmeans_init_multiple'):
        SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 2, rq_kmeans_init_multiple = 0)
    with pytest.raises(ValueError, match = 'min_vectors'):
        KMeansInitWarmup(0)


def test_lfq_and_fsq_have_no_kmeans_warmup():
    lfq = SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 2, use_lookup_free_quantizer = True,
                      rq_kmeans_init_multiple = 8)
    assert lfq._kmeans_warmup is None


def test_every_level_keeps_half_of_its_codes_on_varied_audio():
    """A tiny codec (3 x 64 codes) trained for 60 steps (batch 4 x 0.5 s) on varied synthetic audio uses at least
    half of every level's codes on held-out clips of the same kinds. Measured (seeds 0 / 1 / 2): [0.94 0.94 1.0] /
    [0.98 0.97 1.0] / [0.70 0.89 0.92]; with PyTorch's default conv init (``conv_init='torch_default'``, versions
    <= 0.1.0) [0.06 0.14 0.31] / [0.06 0.03 0.20] / [0.06 0.12 0.17]: the first level collapses onto a few codes
    because the encoder output is mostly a constant (tests/codecs/test_conv_init.py)."""
    torch.manual_seed(0)
    model = SoundStream(**TINY, codebook_size = 64, rq_num_quantizers = 3)
    opt = torch.optim.Adam(model.non_discr_parameters(), lr = 1e-3)
    data = varied_audio(128, 8000, seed = 1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = model(data[torch.randint(128, (4,), generator = gen)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        codes = model.eval().tokenize(varied_audio(24, 16000, seed = 2))              # (b, frames, levels)
    usage = [codes[..., level].unique().numel() / model.codebook_size for level in range(codes.shape[-1])]
    assert min(usage) >= 0.5, usage
