"""Training-time dynamics of a codec's residual quantizer, on top of vector-quantize-pytorch.

Two things vector-quantize-pytorch does not offer in the form the strong codec recipes use:

- **Quantizer dropout per example with a probability** (DAC, arXiv 2306.06546, sec. 3.2: ``p = 0.5``). Each
  example of a batch, with probability ``p``, is decoded from its first ``k + 1`` residual levels only, ``k`` drawn
  uniformly from ``[cutoff, num_quantizers)``; the others use every level. vector-quantize-pytorch draws one ``k``
  for the whole batch on every step, so the full bitrate is trained on ``1 / (num_quantizers - cutoff)`` of the
  steps only. The truncated value enters the decoder through a straight-through estimator on the full
  quantizer output, so the encoder gets the same gradient path as without dropout.
- **A dead-code threshold relative to the vectors seen per update.** vector-quantize-pytorch replaces a code when
  its EMA count falls under a fixed number (it was 2 here). With ``N`` vectors per forward and ``K`` codes the
  uniform share is ``N / K``: at ``N = 100`` frames and ``K = 256`` codes every code is "dead" under 2 and the
  codebook is re-drawn from the batch on every pass. ``set_dead_code_threshold`` sets the threshold to
  ``fraction * N / K`` before each training forward (and gives replaced codes the uniform share as their count).
- **k-means initialisation on enough vectors.** vector-quantize-pytorch runs k-means on the first forward's
  vectors: with 4 x 25 frames and 256 codes, 100 vectors for 256 centroids (most codes are duplicates, and the
  later levels are fitted to residuals of that one micro-batch). ``KMeansInitWarmup`` runs k-means again, on
  every level at once, once training has seen ``min_vectors`` latents.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _codebooks(quantizer: nn.Module) -> list[nn.Module]:
    """vector-quantize-pytorch EMA codebooks (the modules that own ``threshold_ema_dead_code``)."""
    return [m for m in quantizer.modules()
            if hasattr(m, 'threshold_ema_dead_code') and hasattr(m, 'cluster_size') and hasattr(m, 'codebook_size')]


def pending_kmeans_init(quantizer: nn.Module) -> bool:
    """Whether any k-means codebook of ``quantizer`` still waits for its initialisation."""
    return any(isinstance(getattr(m, 'initted', None), Tensor) and not bool(m.initted.all())
               for m in _codebooks(quantizer))


class KMeansInitWarmup:
    """Re-runs the k-means initialisation of every level once training has seen ``min_vectors`` latents.

    vector-quantize-pytorch initialises each codebook on the first forward's vectors (kept: the quantizer works
    from the first step, and the commitment loss keeps the latents' scale in check). This object collects the
    latents of the following training forwards and, once it holds ``min_vectors`` of them, runs k-means again
    on all of them, level ``l`` on the residuals left by levels ``< l``, replacing the first codebooks. Holding
    the quantizer back instead (latents passing through unquantized until enough were seen) was measured to
    collapse every level to ~3% of its codes (benchmarks/RESULTS.md): the latents grow without the commitment
    loss and then collapse onto a few codes.

    A plain object, not a module: nothing of it is saved. It acts only on a quantizer whose codebooks were still
    uninitialised at its first training forward, so a trained or loaded codec is never re-initialised (a
    checkpoint written mid-collection keeps its first-batch codebooks)."""

    def __init__(self, min_vectors: int):
        if min_vectors < 1:
            raise ValueError(f'min_vectors must be >= 1, got {min_vectors}')
        self.min_vectors = int(min_vectors)
        self._chunks: list[Tensor] = []
        self._count = 0
        self._active: bool | None = None      # None: not decided yet (decided at the first training forward)

    def step(self, quantizer: nn.Module, latents: Tensor):
        """Call before each training forward of ``quantizer`` with its input ``latents (b, n, d)``."""
        if self._active is None:
            self._active = pending_kmeans_init(quantizer)
        if not self._active:
            return
        flat = latents.detach().float().reshape(-1, latents.shape[-1])
        self._chunks.append(flat)
        self._count += flat.shape[0]
        # keep only the most recent vectors the initialisation needs (the encoder moves meanwhile)
        while self._count - self._chunks[0].shape[0] >= self.min_vectors:
            self._count -= self._chunks.pop(0).shape[0]
        if self._count < self.min_vectors:
            return
        vectors = torch.cat(self._chunks)[-self.min_vectors:]
        self._chunks, self._count, self._active = [], 0, False
        codebooks = [m for m in _codebooks(quantizer) if isinstance(getattr(m, 'initted', None), Tensor)]
        for codebook in codebooks:
            codebook.initted.fill_(False)
        with torch.no_grad(), builtin_dropout_off(quantizer):
            # a training-mode forward with frozen statistics: each level k-means-initialises on its residuals
            # (vector-quantize-pytorch's own init, so codebook syncing across processes applies); no EMA /
            # dead-code update runs on this pass
            quantizer(vectors[None], freeze_codebook = True)
        # k-means leaves counts of ``min_vectors`` vectors; the EMA statistics (and the relative dead-code
        # threshold) count the vectors of one forward: rescale (the codebook itself, sum / count, is unchanged)
        scale = flat.shape[0] / vectors.shape[0]
        for codebook in codebooks:
            codebook.cluster_size.mul_(scale)
            codebook.embed_avg.mul_(scale)


def set_dead_code_threshold(quantizer: nn.Module, fraction: float, num_vectors: int):
    """Replace codes whose EMA count is under ``fraction * num_vectors / codebook_size`` (``num_vectors``: vectors
    each codebook sees in this forward). No-op for codebooks built without dead-code replacement."""
    for codebook in _codebooks(quantizer):
        if not codebook.has_dead_code_replacement:
            continue
        vectors = num_vectors
        if getattr(codebook, 'use_ddp', False) and dist.is_available() and dist.is_initialized():
            vectors *= dist.get_world_size()     # synced codebooks count the vectors of every process
        share = vectors / codebook.codebook_size
        codebook.threshold_ema_dead_code = fraction * share
        codebook.reset_cluster_size = share


@contextmanager
def builtin_dropout_off(quantizer: nn.Module):
    """Switch vector-quantize-pytorch's once-per-batch quantizer dropout off for one forward (the flag stays on
    otherwise: its ``get_output_from_indices`` only accepts dropped levels (-1) when it is set)."""
    modules = [m for m in quantizer.modules() if isinstance(getattr(m, 'quantize_dropout', None), bool)]
    saved = [m.quantize_dropout for m in modules]
    for m in modules:
        m.quantize_dropout = False
    try:
        yield
    finally:
        for m, flag in zip(modules, saved):
            m.quantize_dropout = flag


def per_example_dropout_levels(batch: int, num_quantizers: int, prob: float, cutoff: int, multiple_of: int,
                               device: torch.device) -> Tensor:
    """``(b,)`` number of residual levels each example keeps: all of them, or with probability ``prob`` a count
    ``k + 1`` with ``k`` uniform in ``[cutoff, num_quantizers)`` rounded up to a multiple of ``multiple_of``."""
    keep = torch.full((batch,), num_quantizers, device = device, dtype = torch.long)
    if prob <= 0 or num_quantizers <= 1:
        return keep
    dropped = torch.rand(batch, device = device) < prob
    levels = torch.randint(cutoff, num_quantizers, (batch,), device = device) + 1
    if multiple_of > 1:
        levels = ((levels + multiple_of - 1) // multiple_of * multiple_of).clamp(max = num_quantizers)
    return torch.where(dropped, levels, keep)


def drop_levels(codes: Tensor, keep: Tensor) -> Tensor:
    """Codes ``(..., b, n, q)`` with the levels at and after ``keep[b]`` set to -1 (dropped)."""
    level = torch.arange(codes.shape[-1], device = codes.device)
    dropped = level >= keep[:, None, None]                                    # (b, 1, q)
    return codes.masked_fill(dropped, -1)
