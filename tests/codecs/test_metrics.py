"""Codec quality metrics (audiolm_pytorch/codecs/metrics.py): known values, invariances, bad input, and the
self-containedness that lets the benchmark score the reference implementation with the same file."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audiolm_pytorch.codecs import metrics

SAMPLE_HZ = 16000


def tone_mix(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_HZ)) / SAMPLE_HZ
    return 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1330 * t) * np.exp(-2 * t)


def test_si_sdr_of_identical_signals_is_large():
    x = tone_mix()
    assert metrics.si_sdr(x, x) > 100


def test_si_sdr_is_scale_invariant():
    x = tone_mix()
    estimate = x + 0.05 * np.random.default_rng(0).standard_normal(x.shape)
    value = metrics.si_sdr(x, estimate)
    for scale in (0.01, 0.5, 3.0, -1.0):             # the optimal scale may be negative (standard definition)
        assert metrics.si_sdr(x, scale * estimate) == pytest.approx(value, abs = 1e-6)
    assert 10 < value < 16                          # signal power about 18x the noise power: ~12.6 dB


def test_si_sdr_against_orthogonal_noise_has_the_known_value():
    x = tone_mix()
    x = x - x.mean()
    noise = np.random.default_rng(1).standard_normal(x.shape)
    noise -= noise.mean()
    noise -= (noise @ x) / (x @ x) * x               # orthogonal to x: the optimal scale of x + noise is exactly 1
    for target_db in (0., 10., 20.):
        scaled = noise * np.sqrt((x @ x) / (noise @ noise) / 10 ** (target_db / 10))
        assert metrics.si_sdr(x, x + scaled) == pytest.approx(target_db, abs = 1e-6)


def test_log_mel_l1_and_stft_distance_are_zero_for_identical_audio_and_grow_with_distortion():
    x = tone_mix()
    assert metrics.log_mel_l1(x, x, SAMPLE_HZ) == 0.
    assert metrics.multi_resolution_stft_distance(x, x) == 0.
    rng = np.random.default_rng(2)
    mild, strong = x + 0.001 * rng.standard_normal(x.shape), x + 0.05 * rng.standard_normal(x.shape)
    assert 0 < metrics.log_mel_l1(x, mild, SAMPLE_HZ) < metrics.log_mel_l1(x, strong, SAMPLE_HZ)
    assert 0 < metrics.multi_resolution_stft_distance(x, mild) < metrics.multi_resolution_stft_distance(x, strong)


def test_log_mel_matches_the_package_mel_spectrogram():
    # the demo plots (and the issue quotes) this spectrogram: the metric must be the same definition
    from audiolm_pytorch.audio import MelSpectrogram
    x = torch.from_numpy(tone_mix()).float()
    expected = MelSpectrogram(sample_hz = SAMPLE_HZ, n_fft = 1024, hop_length = 160, n_mels = 64, log = True)(x)
    assert torch.allclose(metrics.log_mel(x, SAMPLE_HZ), expected, atol = 1e-5)


def test_log_mel_l1_of_a_known_gain_is_its_log():
    # a pure gain shifts every (unclamped) log-mel bin by ln(gain)
    x = tone_mix() + 0.01 * np.random.default_rng(3).standard_normal(SAMPLE_HZ)
    assert metrics.log_mel_l1(x, 2 * x, SAMPLE_HZ) == pytest.approx(math.log(2), rel = 1e-3)


def test_metrics_cut_the_longer_clip_and_accept_tensors_and_leading_unit_axes():
    x = tone_mix()
    longer = np.concatenate([x, np.ones(500)])
    assert metrics.log_mel_l1(x, longer, SAMPLE_HZ) == 0.
    assert metrics.si_sdr(torch.from_numpy(x)[None, None], x) > 100


def test_codebook_usage_known_histograms():
    size = 16
    uniform = np.tile(np.arange(size), 10)                       # every code 10 times
    constant = np.full(size * 10, 3)
    half = np.tile(np.arange(size // 2), 20)
    levels = metrics.codebook_usage(np.stack([uniform, constant, half], axis = -1)[None], size)
    assert levels[0] == pytest.approx(dict(used = 1., dead = 0., perplexity = size))
    assert levels[1] == pytest.approx(dict(used = 1 / size, dead = 1 - 1 / size, perplexity = 1.))
    assert levels[2] == pytest.approx(dict(used = 0.5, dead = 0.5, perplexity = size / 2))


def test_bad_input_is_a_clear_error():
    x = tone_mix()
    with pytest.raises(ValueError, match = 'mono'):
        metrics.si_sdr(np.stack([x, x]), x)
    with pytest.raises(ValueError, match = 'NaN'):
        metrics.log_mel_l1(x, np.full_like(x, np.nan), SAMPLE_HZ)
    with pytest.raises(ValueError, match = 'empty'):
        metrics.si_sdr(np.zeros(0), x)
    with pytest.raises(ValueError, match = r'\[0, 8\)'):
        metrics.codebook_usage(np.array([[0, 8]]), 8)
    with pytest.raises(ValueError, match = 'integer'):
        metrics.codebook_usage(np.zeros((4, 2)), 8)


def test_perceptual_metrics_when_installed():
    pytest.importorskip('pesq')
    pytest.importorskip('pystoi')
    import soundfile as sf
    speech, rate = sf.read(str(Path(__file__).parents[1] / 'assets' / 'speech_0_16k.wav'))
    clean = metrics.pesq_stoi(speech, speech, rate)
    noisy = metrics.pesq_stoi(speech, speech + 0.05 * np.random.default_rng(4).standard_normal(speech.shape), rate)
    assert clean['pesq'] > 4.4 and clean['stoi'] > 0.99
    assert noisy['pesq'] < clean['pesq'] and noisy['stoi'] < clean['stoi']
    assert set(metrics.reconstruction_metrics(speech, speech, rate)) >= {'log_mel_l1', 'si_sdr', 'mr_stft', 'pesq', 'stoi'}


def test_metrics_file_imports_only_numpy_and_torch():
    # benchmarks/quality.py loads this file by path to score the reference implementation too (another venv, where
    # `audiolm_pytorch` is the reference): importing anything from this package would break that
    tree = ast.parse(Path(metrics.__file__).read_text())
    imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {'__future__', 'math', 'functools', 'numpy', 'torch', 'pesq', 'pystoi'}
