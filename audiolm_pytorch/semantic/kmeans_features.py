"""Frame features for fitting k-means: a bounded, uniform random sample of an encoder's frames over many audio
files (reservoir sampling). Used by ``kmeans_fit`` and ``SpectralKmeansTokenizer.fit``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import Tensor

from audiolm_pytorch.audio import AudioDecodeError, load_audio

__all__ = ['collect_features']


@torch.no_grad()
def collect_features(
    extract: Callable[[Tensor], Tensor], files: Iterable[Path], *, sample_hz: int, device: torch.device,
    max_frames: int = 1_000_000, segment_seconds: float = 30., seed: int = 0,
) -> Tensor:
    """Run ``extract(wave (1, n) on device) -> (1, frames, d)`` over every file (in segments of at most
    ``segment_seconds``) and return up to ``max_frames`` frames ``(n, d)`` on CPU: all of them, or a uniform
    random sample (reservoir sampling, so memory stays bounded however much audio there is)."""
    segment = int(segment_seconds * sample_hz)
    generator = torch.Generator().manual_seed(seed)
    reservoir, filled, seen = None, 0, 0
    for path in files:
        try:
            wave = load_audio(path, target_sample_hz = sample_hz).wave  # (1, n)
        except AudioDecodeError:
            continue  # unreadable files are skipped; an all-bad folder fails below
        for start in range(0, wave.shape[-1], segment):
            piece = wave[:, start:start + segment]
            if piece.shape[-1] < sample_hz // 10:  # < 100 ms: too short for a conv front-end
                continue
            feats = extract(piece.to(device))
            feats = feats.reshape(-1, feats.shape[-1]).float().cpu()   # (m, d)
            if reservoir is None:
                reservoir = feats.new_empty(max_frames, feats.shape[-1])
            take = min(feats.shape[0], max_frames - filled)
            reservoir[filled:filled + take] = feats[:take]
            filled += take
            rest = feats[take:]
            if rest.shape[0]:
                # frame number i (0-based) replaces a random slot with probability max_frames / (i + 1)
                index = torch.arange(seen + take, seen + feats.shape[0], device = 'cpu') + 1
                slots = (torch.rand(rest.shape[0], generator = generator, device = 'cpu') * index).long()
                keep = slots < max_frames
                reservoir[slots[keep]] = rest[keep]
            seen += feats.shape[0]
    if not filled:
        raise ValueError('no features could be extracted: are the audio files readable and longer than 100 ms?')
    return reservoir[:filled]
