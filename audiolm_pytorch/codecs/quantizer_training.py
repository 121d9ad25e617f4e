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
