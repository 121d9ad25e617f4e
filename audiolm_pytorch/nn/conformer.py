"""Conformer (Gulati et al., arXiv 2005.08100) as used by SoundStorm (arXiv 2305.09636).

Each block is ``x + ½·FF(x) -> x + MHSA(x) -> x + Conv(x) -> x + ½·FF(x) -> LayerNorm``:
macaron feed-forward halves around self-attention and a depthwise convolution module. Changes from the
paper that keep it fast and simple:

- relative positions come from rotary embeddings (arXiv 2104.09864) instead of Transformer-XL / Shaw
  biases, so attention stays on ``F.scaled_dot_product_attention`` (flash kernels when there is no padding);
- the convolution module normalises with a LayerNorm after the swish instead of a BatchNorm (no batch
  statistics, identical train/eval behaviour, padding-safe).

Padding (``mask``, True = real frame) is handled everywhere a frame could leak into its neighbours: keys of
padded frames are masked out of attention and padded frames are zeroed before the depthwise convolution,
so the outputs at real frames do not depend on what the padded frames hold.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.nn.attention import Attention
from audiolm_pytorch.nn.positions import RotaryEmbedding
from audiolm_pytorch.utils import exists


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * mult),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(dim * mult, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """LayerNorm -> pointwise conv + GLU -> depthwise conv -> swish -> LayerNorm -> pointwise conv.

    ``forward(x (b, n, d), mask (b, n) | None)``; padded frames are zeroed before the depthwise conv.
    ``causal=True`` pads on the left only, so frame ``i`` sees frames ``<= i``.
    """

    def __init__(self, dim: int, *, expansion_factor: int = 2, kernel_size: int = 31, dropout: float = 0.,
                 causal: bool = False):
        super().__init__()
        inner = dim * expansion_factor
        self.causal = causal
        self.padding = (kernel_size - 1, 0) if causal else (kernel_size // 2, (kernel_size - 1) // 2)
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, inner * 2)
        self.depthwise = nn.Conv1d(inner, inner, kernel_size, groups = inner)
        self.post_norm = nn.LayerNorm(inner)
        self.pointwise_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = F.glu(self.pointwise_in(self.norm(x)), dim = -1)          # (b, n, inner)
        if exists(mask):
            x = x.masked_fill(~mask[..., None], 0.)
        x = rearrange(x, 'b n c -> b c n')
        x = self.depthwise(F.pad(x, self.padding))
        x = rearrange(x, 'b c n -> b n c')
        x = self.post_norm(F.silu(x))
        return self.dropout(self.pointwise_out(x))


class ConformerBlock(nn.Module):
    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8, ff_mult: int = 4,
                 conv_expansion_factor: int = 2, conv_kernel_size: int = 31, attn_dropout: float = 0.,
                 ff_dropout: float = 0., conv_dropout: float = 0., conv_causal: bool = False):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_mult, ff_dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim = dim, heads = heads, dim_head = dim_head, dropout = attn_dropout,
                              causal = conv_causal)
        self.conv = ConvModule(dim, expansion_factor = conv_expansion_factor, kernel_size = conv_kernel_size,
                               dropout = conv_dropout, causal = conv_causal)
        self.ff2 = FeedForward(dim, ff_mult, ff_dropout)
        self.post_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(self.attn_norm(x), mask = mask, rotary = rotary)
        x = x + self.conv(x, mask = mask)
        x = x + 0.5 * self.ff2(x)
        return self.post_norm(x)


@reference_compat('Conformer')
class Conformer(Checkpointable, nn.Module):
    """Stack of Conformer blocks sharing one rotary embedding.

    Args:
        dim: model width. depth: number of blocks. dim_head, heads: attention head width and count.
        ff_mult: feed-forward hidden width multiplier. conv_expansion_factor: conv-module width multiplier.
        conv_kernel_size: depthwise kernel length (frames). attn_dropout, ff_dropout, conv_dropout: dropouts.
        conv_causal: left-only conv padding and causal attention (streaming use).

    ``forward(x (b, n, dim), mask=None (b, n) bool, True = real frame) -> (b, n, dim)``.
    """

    def __init__(self, *, dim: int, depth: int, dim_head: int = 64, heads: int = 8, ff_mult: int = 4,
                 conv_expansion_factor: int = 2, conv_kernel_size: int = 31, attn_dropout: float = 0.,
                 ff_dropout: float = 0., conv_dropout: float = 0., conv_causal: bool = False):
        super().__init__()
        if dim < 1 or depth < 1:
            raise ValueError(f'Conformer needs dim >= 1 and depth >= 1, got dim={dim}, depth={depth}')
        if conv_kernel_size < 1:
            raise ValueError(f'conv_kernel_size must be >= 1, got {conv_kernel_size}')
        self.dim = dim
        self.rotary = RotaryEmbedding(dim_head)
        self.layers = nn.ModuleList([
            ConformerBlock(dim = dim, dim_head = dim_head, heads = heads, ff_mult = ff_mult,
                           conv_expansion_factor = conv_expansion_factor, conv_kernel_size = conv_kernel_size,
                           attn_dropout = attn_dropout, ff_dropout = ff_dropout, conv_dropout = conv_dropout,
                           conv_causal = conv_causal)
            for _ in range(depth)
        ])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if exists(mask):
            if mask.shape != x.shape[:2]:
                raise ValueError(f'mask must be (batch, seq) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}')
            mask = mask.bool()
            if bool(mask.all()):
                mask = None   # no padding: keep attention on the mask-free (flash) kernel
            else:
                # an all-padding row would make softmax NaN; let it attend to itself (its output is unused)
                mask = mask | ~mask.any(dim = -1, keepdim = True)
        rotary = self.rotary(x.shape[1])
        for block in self.layers:
            x = block(x, mask = mask, rotary = rotary)
        return x
