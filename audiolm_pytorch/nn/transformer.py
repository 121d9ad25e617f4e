"""Pre-norm decoder stack on ``Attention`` (SDPA): rotary positions, optional cross-attention, GEGLU
feed-forward, dropout, gradient shrink and a key/value cache spanning all layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolm_pytorch.nn.attention import Attention, KVCache
from audiolm_pytorch.nn.positions import RotaryEmbedding
from audiolm_pytorch.utils import exists


def grad_shrink(x: Tensor, alpha: float) -> Tensor:
    """Forward identity, gradient scaled by ``alpha`` (stabilises embeddings; GLM-130B, arXiv 2210.02414)."""
    if alpha >= 1. or not (torch.is_grad_enabled() and x.requires_grad):
        return x      # identity in value; only the gradient differs
    return x * alpha + x.detach() * (1. - alpha)


class GEGLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        x, gate = x.chunk(2, dim = -1)
        return F.gelu(gate) * x


class FeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer, arXiv 2002.05202); inner width ``dim * mult * 2 / 3`` keeps the parameter
    count of a plain ``mult``-times MLP."""

    def __init__(self, *, dim: int, mult: float = 4., dropout: float = 0.):
        super().__init__()
        inner = int(dim * mult * 2 / 3)
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, inner * 2, bias = False),
            GEGLU(),
            nn.Dropout(dropout),
            nn.Linear(inner, dim, bias = False),
        )

    def forward(self, x: Tensor) -> Tensor:
        # the Sequential's modules (state-dict names net.0 ... net.4), called without per-module dispatch
        norm, proj_in, _, dropout, proj_out = self.net
        x, gate = F.linear(F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps),
                           proj_in.weight).chunk(2, dim = -1)
        return proj_out(dropout(F.gelu(gate) * x))


class TransformerLayer(nn.Module):
    def __init__(self, *, dim, heads, dim_head, attn_dropout, ff_dropout, ff_mult, dim_context, causal, qk_norm,
                 kv_heads = None):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim = dim, heads = heads, dim_head = dim_head, causal = causal,
                              dropout = attn_dropout, qk_norm = qk_norm, kv_heads = kv_heads)
        self.cross_norm = self.cross_attn = None
        if exists(dim_context):
            self.cross_norm = nn.LayerNorm(dim)
            self.cross_attn = Attention(dim = dim, heads = heads, dim_head = dim_head, dim_context = dim_context,
                                        dropout = attn_dropout, qk_norm = qk_norm, kv_heads = kv_heads)
        self.ff = FeedForward(dim = dim, mult = ff_mult, dropout = ff_dropout)


def stack_layers(hidden: list[Tensor], like: Tensor) -> Tensor:
    """Per-layer outputs -> ``(layers, b, n, dim)`` (empty first axis for a one-layer stack)."""
    return torch.stack(hidden) if hidden else like.new_zeros((0, *like.shape))


class Transformer(nn.Module):
    """Causal (by default) pre-norm transformer.

    Args:
        dim, depth, heads, dim_head: sizes. attn_dropout, ff_dropout: dropout probabilities.
        ff_mult: feed-forward expansion. cross_attend: add a cross-attention sublayer per layer, attending to
        ``context (b, m, dim_context)``. causal: mask future positions. grad_shrink_alpha: gradient scale on the
        input (1 = off). rotary: rotary positions in self-attention. kv_heads: key/value heads shared by the query
        heads in every attention sublayer (``None``: one per query head; 1: multi-query attention).

    ``forward(x (b, n, dim), mask=None, context=None, context_mask=None, cache=None, return_cache=False)``:
        ``mask``: boolean self-attention mask, True = attend; ``(b, n_k)`` or ``(b, n, n_k)`` (causality is added).
        ``cache``: list of per-layer ``KVCache`` from a previous call; rotary positions continue after it.
        Returns ``(b, n, dim)`` (final layer norm applied), and the new cache list when ``return_cache``.
    """

    def __init__(self, *, dim: int, depth: int, heads: int = 8, dim_head: int = 64, attn_dropout: float = 0.,
                 ff_dropout: float = 0., ff_mult: float = 4., cross_attend: bool = False,
                 dim_context: int | None = None, causal: bool = True, grad_shrink_alpha: float = 1.,
                 rotary: bool = True, qk_norm: bool = False, kv_heads: int | None = None):
        super().__init__()
        dim_context = (dim_context or dim) if cross_attend else None
        self.grad_shrink_alpha = grad_shrink_alpha
        self.rotary = RotaryEmbedding(dim_head) if rotary else None
        self.layers = nn.ModuleList([
            TransformerLayer(dim = dim, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
                             ff_dropout = ff_dropout, ff_mult = ff_mult, dim_context = dim_context,
                             causal = causal, qk_norm = qk_norm, kv_heads = kv_heads)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, context: Tensor | None = None,
                context_mask: Tensor | None = None, cache: list[KVCache] | None = None,
                return_cache: bool = False, return_all_layers: bool = False):
        """``return_all_layers``: also return the outputs of every layer but the last, stacked
        ``(depth - 1, b, n, dim)`` (before the final norm; not with ``return_cache``)."""
        if return_cache and return_all_layers:
            raise ValueError('return_cache and return_all_layers cannot be combined')
        x = grad_shrink(x, self.grad_shrink_alpha)
        hidden = []
        offset = cache[0].length if exists(cache) else 0
        rotary = self.rotary(x.shape[1], offset = offset) if exists(self.rotary) else None

        if exists(mask) and exists(cache) and mask.ndim == 2 and mask.shape[-1] != offset + x.shape[1]:
            raise ValueError('mask must cover the cached positions as well as the new ones')

        new_cache = []
        for index, layer in enumerate(self.layers):
            layer_cache = cache[index] if exists(cache) else None
            out = layer.attn(layer.attn_norm(x), mask = mask, rotary = rotary, cache = layer_cache,
                             return_cache = return_cache)
            if return_cache:
                out, layer_new_cache = out
                new_cache.append(layer_new_cache)
            x = x + out
            if exists(layer.cross_attn):
                if not exists(context):
                    raise ValueError('this transformer cross-attends: pass context=(b, m, dim_context)')
                x = x + layer.cross_attn(layer.cross_norm(x), context = context, mask = context_mask)
            x = x + layer.ff(x)
            hidden.append(x)

        x = self.norm(x)
        if return_all_layers:
            return x, stack_layers(hidden[:-1], x)
        return (x, new_cache) if return_cache else x
