"""Fit k-means centroids on a tokenizer's features over a folder of audio (``fit_kmeans``, ``audiolm fit-kmeans``).

The pipeline sits above the tokenizers it fits (``hubert_kmeans``, ``spectral``) and the algorithm
(``kmeans``), so imports flow one way: kmeans_fit -> tokenizers -> kmeans.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from audiolm_pytorch.data import list_audio_files
from audiolm_pytorch.semantic.hubert_kmeans import feature_extractor_from_path
from audiolm_pytorch.semantic.kmeans import KMeans, collect_features, minibatch_kmeans
from audiolm_pytorch.semantic.spectral import SpectralKmeansTokenizer
from audiolm_pytorch.utils import beartype, default, exists

__all__ = ['fit_kmeans', 'FitKMeansResult']


@dataclass
class FitKMeansResult:
    centroids: Tensor      # (clusters, dim)
    inertia: float         # mean squared distance of a frame to its centroid
    num_frames: int
    path: Path | None      # the saved file, when ``out`` was given
    config: dict


def _resolve_tokenizer(tokenizer, output_layer: int):
    """A module with ``extract_features(wave, ...) -> (b, frames, d)`` and ``target_sample_hz``."""
    if isinstance(tokenizer, nn.Module) or hasattr(tokenizer, 'extract_features'):
        if not hasattr(tokenizer, 'extract_features'):
            raise TypeError(f'{type(tokenizer).__name__} has no extract_features(wave) method to fit k-means on')
        source = {'tokenizer': type(tokenizer).__name__}
        if isinstance(getattr(tokenizer, 'output_layer', None), int):   # checked when the centroids are loaded
            source['output_layer'] = tokenizer.output_layer
        return tokenizer, source
    extractor = feature_extractor_from_path(tokenizer, output_layer = output_layer)
    return extractor, {'tokenizer': str(tokenizer), 'output_layer': output_layer}


@beartype
def fit_kmeans(
    tokenizer: str | os.PathLike | nn.Module,
    *,
    data: str | os.PathLike | Sequence[str | os.PathLike],
    clusters: int,
    out: str | os.PathLike | None = None,
    output_layer: int = 9,
    max_files: int | None = None,
    max_frames: int = 1_000_000,
    segment_seconds: int | float = 30.,
    batch_size: int = 10_000,
    epochs: int | float = 20.,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> FitKMeansResult:
    """Learn k-means centroids over the features of any tokenizer for a folder of audio; save as safetensors.

    This is what ``audiolm fit-kmeans --tokenizer T --data DIR --clusters K --out FILE`` runs.

    Args:
        tokenizer: a ``transformers`` model directory (HuBERT, wav2vec 2.0, w2v-BERT 2.0), a fairseq HuBERT /
            wav2vec 2.0 ``.pt`` (features of layer ``output_layer``), the string ``'spectral'`` (fits a
            ``SpectralKmeansTokenizer`` and saves the whole tokenizer), or a module with
            ``extract_features(wave (b, n)) -> (b, frames, d)`` and ``target_sample_hz``.
        data: a folder (searched recursively), one file, or a list of files.
        clusters: number of centroids (``codebook_size`` of the resulting tokenizer).
        out: ``.safetensors`` path to write (config in its metadata and in a ``.json`` beside it).
        max_frames: frames kept for fitting (random subset when the data yields more).
        device: where features are computed and k-means runs (default: CUDA when available).

    Returns:
        ``FitKMeansResult(centroids, inertia, num_frames, path, config)``.
    """
    if clusters < 2:
        raise ValueError(f'clusters must be >= 2, got {clusters}')
    device = torch.device(default(device, 'cuda' if torch.cuda.is_available() else 'cpu'))
    files = list_audio_files(data)[:max_files]

    if isinstance(tokenizer, str) and tokenizer == 'spectral':
        spectral = SpectralKmeansTokenizer(codebook_size = clusters).to(device)
        inertia, num_frames = spectral.fit(files, max_frames = max_frames, batch_size = batch_size, epochs = epochs,
                                           seed = seed, segment_seconds = segment_seconds)
        path = spectral.save(out) if exists(out) else None
        return FitKMeansResult(spectral.kmeans.centroids.cpu(), inertia, num_frames, path,
                               {'tokenizer': 'spectral', **spectral.config})

    extractor, source = _resolve_tokenizer(tokenizer, output_layer)
    extractor = extractor.to(device)
    sample_hz = int(extractor.target_sample_hz)
    features = collect_features(lambda wave: extractor.extract_features(wave), files, sample_hz = sample_hz,
                                device = device, max_frames = max_frames, segment_seconds = segment_seconds,
                                seed = seed)
    centroids, inertia = minibatch_kmeans(features, clusters = clusters, batch_size = batch_size, epochs = epochs,
                                          seed = seed, device = device)
    config = {**source, 'clusters': clusters, 'dim': centroids.shape[1], 'num_frames': features.shape[0],
              'num_files': len(files), 'inertia': inertia, 'sample_hz': sample_hz, 'seed': seed}
    path = KMeans(centroids).save(out, config) if exists(out) else None
    return FitKMeansResult(centroids, inertia, features.shape[0], path, config)
