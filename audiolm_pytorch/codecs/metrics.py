"""Reconstruction quality of an audio codec: log-mel L1, SI-SDR, multi-resolution STFT distance, codebook usage,
and PESQ / STOI when those packages are installed.

Every function takes a reference (the original) and an estimate (the codec's reconstruction), 1-D numpy arrays
or tensors at the same rate; the longer one is cut to the shorter. Values are Python floats. This file imports
only ``math``, ``numpy`` and ``torch`` (never the rest of the package), so a benchmark can load it by path in
another interpreter and score a different implementation with exactly the same code.

Definitions:

- ``log_mel_l1``: mean over mel bins and frames of ``|ln max(M_est, 1e-5) - ln max(M_ref, 1e-5)|``, where ``M`` is
  the 64-band mel spectrogram of the magnitude STFT (Hann window 1024, hop 160, centred with reflect padding,
  Slaney mel scale and area normalisation, 0 Hz to Nyquist). Identical to ``audiolm_pytorch.audio.MelSpectrogram
  (n_fft=1024, hop_length=160, n_mels=64, log=True)``, the spectrogram that ``audiolm demo`` plots. 0 = perfect.
- ``si_sdr``: scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019) after removing each signal's
  mean: ``10 log10(|a s|^2 / |a s - e|^2)`` with ``a = <e, s> / |s|^2``. Higher is better; a silent estimate
  scores about -inf (clamped by ``eps``), white noise uncorrelated with ``s`` about ``-10 log10(N / (|s|^2/|e|^2))``.
- ``multi_resolution_stft_distance``: mean over FFT sizes (512, 1024, 2048; hop = size / 4, Hann) of spectral
  convergence ``||S_ref - S_est||_F / ||S_ref||_F`` plus mean ``|ln(S_ref + 1e-5) - ln(S_est + 1e-5)|`` of the
  magnitudes. 0 = perfect.
- ``codebook_usage``: for codes ``(..., levels)``, per level the fraction of the codebook used, the dead fraction
  (``1 - used``) and the perplexity ``exp(entropy)`` of the code histogram (= codebook size when uniform).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

MEL_N_FFT, MEL_HOP, MEL_N_MELS, MEL_EPS = 1024, 160, 64, 1e-5
STFT_SIZES = (512, 1024, 2048)


def _as_tensor(wave) -> torch.Tensor:
    wave = torch.as_tensor(np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave),
                           dtype = torch.float64)
    if wave.ndim == 0 or wave.numel() != wave.shape[-1]:
        raise ValueError(f'pass one mono clip as a 1-D array (or (1, n) / (1, 1, n)), got shape {tuple(wave.shape)}')
    wave = wave.reshape(-1)
    if not torch.isfinite(wave).all():
        raise ValueError('audio contains NaN or inf')
    return wave


def _pair(reference, estimate) -> tuple[torch.Tensor, torch.Tensor]:
    reference, estimate = _as_tensor(reference), _as_tensor(estimate)
    n = min(reference.numel(), estimate.numel())
    if n == 0:
        raise ValueError('empty audio: both clips need at least one sample')
    return reference[:n], estimate[:n]


def _slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype = np.float64)
    log_part = 15. + np.log(np.maximum(hz, 1e-10) / 1000.) / (math.log(6.4) / 27.)
    return np.where(hz >= 1000., log_part, 3. * hz / 200.)


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype = np.float64)
    return np.where(mel >= 15., 1000. * np.exp((math.log(6.4) / 27.) * (mel - 15.)), 200. * mel / 3.)


@lru_cache(maxsize = 8)
def mel_filterbank(sample_hz: int, n_fft: int = MEL_N_FFT, n_mels: int = MEL_N_MELS) -> torch.Tensor:
    """Slaney-scale, area-normalised triangular filters ``(n_mels, n_fft // 2 + 1)`` from 0 Hz to Nyquist."""
    fft_hz = np.linspace(0., sample_hz / 2, n_fft // 2 + 1)
    hz_points = _slaney_hz(np.linspace(_slaney_mel(0.), _slaney_mel(sample_hz / 2), n_mels + 2))
    lower, center, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising, falling = (fft_hz[None] - lower) / (center - lower), (upper - fft_hz[None]) / (upper - center)
    filters = np.maximum(np.minimum(rising, falling), 0.) * (2. / (upper - lower))
    return torch.from_numpy(filters).float()


def _magnitude(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    wave = wave.float()
    if wave.numel() <= n_fft // 2:   # reflect padding needs more samples than half a window
        wave = torch.nn.functional.pad(wave, (0, n_fft // 2 + 1 - wave.numel()))
    spec = torch.stft(wave, n_fft, hop_length = hop, window = torch.hann_window(n_fft), center = True,
                      pad_mode = 'reflect', return_complex = True)
    return torch.view_as_real(spec).pow(2).sum(-1).clamp(min = 1e-10).sqrt()     # (freqs, frames)


def log_mel(wave, sample_hz: int) -> torch.Tensor:
    """``(n_mels, frames)`` natural-log mel magnitude spectrogram used by :func:`log_mel_l1`."""
    mel = mel_filterbank(sample_hz) @ _magnitude(_as_tensor(wave), MEL_N_FFT, MEL_HOP)
    return mel.clamp(min = MEL_EPS).log()


def log_mel_l1(reference, estimate, sample_hz: int) -> float:
    reference, estimate = _pair(reference, estimate)
    return float((log_mel(estimate, sample_hz) - log_mel(reference, sample_hz)).abs().mean())


def si_sdr(reference, estimate, eps: float = 1e-10) -> float:
    reference, estimate = _pair(reference, estimate)
    reference, estimate = reference - reference.mean(), estimate - estimate.mean()
    scale = (estimate @ reference) / (reference @ reference + eps)
    target = scale * reference
    noise = estimate - target
    return float(10 * torch.log10((target @ target + eps) / (noise @ noise + eps)))


def multi_resolution_stft_distance(reference, estimate, fft_sizes = STFT_SIZES) -> float:
    reference, estimate = _pair(reference, estimate)
    total = 0.
    for n_fft in fft_sizes:
        ref, est = _magnitude(reference, n_fft, n_fft // 4), _magnitude(estimate, n_fft, n_fft // 4)
        convergence = torch.linalg.norm(ref - est) / torch.linalg.norm(ref).clamp(min = 1e-8)
        log_distance = ((ref + MEL_EPS).log() - (est + MEL_EPS).log()).abs().mean()
        total += float(convergence + log_distance)
    return total / len(fft_sizes)


def codebook_usage(codes, codebook_size: int) -> list[dict]:
    """Per quantizer level (last axis of ``codes``): ``used`` and ``dead`` fractions of the codebook and the
    ``perplexity`` of the code histogram."""
    codes = torch.as_tensor(np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes))
    if codes.ndim < 1 or codes.dtype.is_floating_point:
        raise ValueError('codes must be an integer array (..., levels)')
    codes = codes.reshape(-1, codes.shape[-1]).long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f'codes must lie in [0, {codebook_size}); got {int(codes.min())}..{int(codes.max())}')
    levels = []
    for level in codes.unbind(-1):
        counts = torch.bincount(level, minlength = codebook_size).double()
        probs = counts / counts.sum().clamp(min = 1.)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        used = float((counts > 0).double().mean())
        levels.append(dict(used = used, dead = 1. - used, perplexity = float(entropy.exp())))
    return levels


def pesq_stoi(reference, estimate, sample_hz: int) -> dict:
    """``{'pesq': wide-band PESQ (16 kHz) or narrow-band (8 kHz), 'stoi': STOI}`` for whichever of the ``pesq`` /
    ``pystoi`` packages is installed and accepts the clip (PESQ needs speech-like activity); others are omitted."""
    reference, estimate = _pair(reference, estimate)
    ref, est = reference.float().numpy(), estimate.float().numpy()
    out = {}
    try:
        from pesq import pesq
    except ImportError:
        pass
    else:
        if sample_hz in (8000, 16000):
            try:
                out['pesq'] = float(pesq(sample_hz, ref, est, 'wb' if sample_hz == 16000 else 'nb'))
            except Exception:   # pesq raises its own error types for clips without detectable utterances
                pass
    try:
        from pystoi import stoi
    except ImportError:
        pass
    else:
        out['stoi'] = float(stoi(ref, est, sample_hz, extended = False))
    return out


def reconstruction_metrics(reference, estimate, sample_hz: int, perceptual: bool = True) -> dict:
    """All waveform metrics of one clip as a dict (``pesq`` / ``stoi`` only with ``perceptual`` and installed)."""
    metrics = dict(log_mel_l1 = log_mel_l1(reference, estimate, sample_hz), si_sdr = si_sdr(reference, estimate),
                   mr_stft = multi_resolution_stft_distance(reference, estimate))
    if perceptual:
        metrics.update(pesq_stoi(reference, estimate, sample_hz))
    return metrics
