"""k-means for semantic tokens: nearest-centroid assignment in torch (``KMeans``) and the mini-batch algorithm that
fits centroids (``minibatch_kmeans``).

Neighbours: reading centroid files (safetensors, .npy, .pt, scikit-learn pickles through a restricted unpickler)
is ``kmeans_io.py``; sampling encoder frames to fit on is ``kmeans_features.py``; the pipeline fitting a
tokenizer's features (``fit_kmeans``) is ``kmeans_fit.py``. Their public names are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import atomic_write
from audiolm_pytorch.data import list_audio_files  # re-exported (its former home); listed in __all__
from audiolm_pytorch.semantic.kmeans_features import collect_features
from audiolm_pytorch.semantic.kmeans_io import (  # noqa: F401 (re-exported: their former home)
    KMEANS_FORMAT, PICKLE_SUFFIXES, KMeansFileError, load_kmeans_centroids, read_sklearn_kmeans_pickle,
)
from audiolm_pytorch.utils import default
from audiolm_pytorch.version import __version__

__all__ = ['KMeans', 'KMeansFileError', 'load_kmeans_centroids', 'read_sklearn_kmeans_pickle', 'minibatch_kmeans',
           'collect_features', 'list_audio_files']


class KMeans(nn.Module):
    """Nearest-centroid assignment in torch (on the module's device).

    ``forward(x (..., d)) -> ids (...)`` = argmin over centroids of ``||x - c||^2``, computed as
    ``||c||^2 - 2 x.c`` in float32 (the ``||x||^2`` term does not change the argmin), as scikit-learn's
    ``predict`` does.
    """

    def __init__(self, centroids: Tensor, config: dict | None = None):
        super().__init__()
        if centroids.ndim != 2:
            raise ValueError(f'centroids must be (clusters, dim), got {tuple(centroids.shape)}')
        self.register_buffer('centroids', centroids.float().clone())
        self.config = dict(default(config, {}))

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, allow_pickle: bool = False) -> 'KMeans':
        centroids, config = load_kmeans_centroids(path, allow_pickle = allow_pickle)
        return cls(centroids, config = config)

    def _apply(self, fn, recurse = True):
        # follow device moves but keep float32 centroids when the parent is cast to bf16 / fp16: assignments
        # must not change because the encoder runs in low precision
        device = fn(torch.empty(0, device = self.centroids.device, dtype = self.centroids.dtype)).device
        self.centroids = self.centroids.to(device)
        return self

    @property
    def codebook_size(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def distances(self, x: Tensor) -> Tensor:
        """``(..., d) -> (..., k)`` squared distances up to the per-row constant ``||x||^2``."""
        centroids = self.centroids
        x = x.to(device = centroids.device, dtype = torch.float32)
        with torch.autocast(device_type = x.device.type, enabled = False):
            return centroids.pow(2).sum(-1) - 2. * (x @ centroids.t())

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise KMeansFileError(f'k-means centroids have dimension {self.dim} but the features have dimension '
                                  f'{x.shape[-1]}: the k-means file was fitted on another model or layer')
        return self.distances(x).argmin(dim = -1)

    def save(self, path: str | os.PathLike, config: dict | None = None) -> Path:
        """Write ``centroids`` as safetensors with a JSON config in the metadata (and a ``.json`` beside it)."""
        from safetensors.torch import save
        path = Path(path)
        if path.suffix != '.safetensors':
            raise ValueError(f'k-means files are saved as .safetensors, got {path}')
        config = {**self.config, **default(config, {}), 'clusters': self.codebook_size, 'dim': self.dim,
                  'format': KMEANS_FORMAT, 'version': __version__}
        payload = save({'centroids': self.centroids.detach().cpu().contiguous()},
                       metadata = {'format': KMEANS_FORMAT, 'config': json.dumps(config)})
        atomic_write(path, lambda f: f.write(payload))
        path.with_suffix('.json').write_text(json.dumps(config, indent = 2))
        self.config = config
        return path


# ----------------------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------------------

def _kmeans_plus_plus(x: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on ``x`` (n, d)."""
    n = x.shape[0]
    first = torch.randint(n, (1,), generator = generator, device = 'cpu').item()
    centroids = [x[first]]
    closest = (x - x[first]).pow(2).sum(-1)
    for _ in range(1, clusters):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than clusters: pick any point
            index = torch.randint(n, (1,), generator = generator, device = 'cpu').item()
        else:
            probs = (closest / total).double().cpu()
            index = torch.multinomial(probs, 1, generator = generator).item()
        centroids.append(x[index])
        closest = torch.minimum(closest, (x - x[index]).pow(2).sum(-1))
    return torch.stack(centroids)


@torch.no_grad()
def minibatch_kmeans(
    features: Tensor, *, clusters: int, batch_size: int = 10_000, epochs: float = 20., init_size: int | None = None,
    seed: int = 0, device: str | torch.device | None = None,
) -> tuple[Tensor, float]:
    """Mini-batch k-means (Sculley 2010, "Web-scale k-means clustering") in torch.

    Args:
        features: ``(n, d)`` frames (any device; moved to ``device``, default CUDA when available).
        clusters: number of centroids ``k`` (``n >= k`` required).
        epochs: passes over the data, in mini-batches of ``batch_size`` frames sampled with replacement.

    Returns:
        ``(centroids (k, d) float32 on CPU, inertia)`` where inertia is the mean squared distance of every
        frame to its centroid.
    """
    device = torch.device(default(device, 'cuda' if torch.cuda.is_available() else 'cpu'))
    x = features.detach().to(device = device, dtype = torch.float32)
    n = x.shape[0]
    if x.ndim != 2:
        raise ValueError(f'features must be (frames, dim), got {tuple(x.shape)}')
    if n < clusters:
        raise ValueError(f'need at least as many frames as clusters: {n} frames < {clusters} clusters; '
                         'give more audio or fewer clusters')

    generator = torch.Generator().manual_seed(seed)
    init_size = min(n, default(init_size, max(3 * clusters, 3 * min(batch_size, n))))
    init_index = torch.randperm(n, generator = generator, device = 'cpu')[:init_size].to(device)
    centroids = _kmeans_plus_plus(x[init_index], clusters, generator)

    counts = torch.zeros(clusters, device = device)
    batch_size = min(batch_size, n)
    steps = max(1, math.ceil(epochs * n / batch_size))
    kmeans = KMeans(centroids)

    for step in range(steps):
        index = torch.randint(n, (batch_size,), generator = generator, device = 'cpu').to(device)
        batch = x[index]
        labels = kmeans.distances(batch).argmin(-1)
        batch_counts = torch.bincount(labels, minlength = clusters).float()
        sums = torch.zeros_like(kmeans.centroids).index_add_(0, labels, batch)
        counts += batch_counts
        hit = batch_counts > 0
        # running mean of every frame ever assigned: c <- c + (sum_b - n_b c) / n_total
        kmeans.centroids[hit] += (sums[hit] - batch_counts[hit, None] * kmeans.centroids[hit]) / counts[hit, None]

        # centroids that have attracted (almost) nothing are moved onto random frames of this batch
        if step % 10 == 9 or step == steps - 1:
            starved = counts < 1e-3 * counts.max()
            if starved.any() and step < steps - 1:
                picks = torch.randint(batch_size, (int(starved.sum()),), generator = generator,
                                      device = 'cpu').to(device)
                kmeans.centroids[starved] = batch[picks]
                counts[starved] = counts[~starved].min() if (~starved).any() else 1.

    inertia, total = 0., 0
    for chunk in x.split(65536):
        distances = kmeans.distances(chunk).min(-1).values + chunk.pow(2).sum(-1)
        inertia += distances.clamp(min = 0).sum().item()
        total += chunk.shape[0]
    return kmeans.centroids.cpu(), inertia / max(total, 1)
