"""Positional information that keeps attention on the SDPA fast path.

Rotary embeddings (RoFormer, arXiv 2104.09864) rotate queries and keys, so no bias matrix is needed and
``F.scaled_dot_product_attention`` can pick flash / memory-efficient kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """``forward(positions (n,) or seq_len, offset=0) -> (cos, sin)`` each ``(n, rotary_dim)`` in float32; apply
    with ``apply_rotary``. Integer lengths are served from a cached table (grown on demand up to
    ``MAX_TABLE`` positions; beyond it angles are computed per call), so decoding one token at a time does not
    recompute the trigonometry.

    Angles are always computed from float32-or-better frequencies (float64 where the device has it), whatever
    dtype the module was cast to: ``model.to(torch.bfloat16)`` casts buffers, and bf16 frequencies would turn
    the angle at position 1000 by radians.
    """

    MAX_TABLE = 1 << 16

    def __init__(self, dim_head: int, *, theta: float = 10000., rotary_fraction: float = 1.):
        super().__init__()
        rotary_dim = int(dim_head * rotary_fraction) // 2 * 2
        if rotary_dim < 2:
            raise ValueError(f'rotary embedding needs at least 2 dimensions, got dim_head={dim_head}')
        self.rotary_dim = rotary_dim
        self.theta = theta
        inv_freq = 1. / (theta ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
        # kept (non-persistent) for the device and for readers; angles are recomputed at full precision
        self.register_buffer('inv_freq', inv_freq, persistent = False)
        self._table: tuple[Tensor, Tensor] | None = None

    def _compute(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        device = positions.device
        dtype = torch.float32 if device.type == 'mps' else torch.float64
        inv_freq = 1. / (self.theta ** (torch.arange(0, self.rotary_dim, 2, device = device, dtype = dtype)
                                        / self.rotary_dim))
        freqs = positions.to(dtype)[..., None] * inv_freq              # (..., n, rotary_dim / 2)
        freqs = torch.cat((freqs, freqs), dim = -1)                   # (..., n, rotary_dim)
        return freqs.cos().float(), freqs.sin().float()

    def forward(self, positions: Tensor | int, *, offset: int = 0) -> tuple[Tensor, Tensor]:
        device = self.inv_freq.device
        if not isinstance(positions, int):
            return self._compute(positions)
        end = offset + positions
        if end > self.MAX_TABLE:
            return self._compute(torch.arange(offset, end, device = device))
        table = self._table
        if table is None or table[0].shape[0] < end or table[0].device != device:
            size = min(max(end, 2 * table[0].shape[0] if table is not None else 0, 256), self.MAX_TABLE)
            table = self._table = self._compute(torch.arange(size, device = device))
        return table[0][offset:end], table[1][offset:end]


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim = -1)
    return torch.cat((-x2, x1), dim = -1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``cos.shape[-1]`` features of ``x (b, h, n, d)``; ``cos``/``sin`` are ``(n, r)`` or
    ``(b, 1, n, r)``. Computed in float32 (a no-op cast for float32 inputs)."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        rotated = x if x.dtype == torch.float32 else x.float()
        return (rotated * cos + rotate_half(rotated) * sin).to(x.dtype)
    rotated, passthrough = x[..., :rotary_dim], x[..., rotary_dim:]
    rotated = rotated.float()
    rotated = (rotated * cos + rotate_half(rotated) * sin).to(x.dtype)
    return torch.cat((rotated, passthrough), dim = -1)
