"""Multi-head attention on ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where the
device has them, Hopper included), with rotary positions, cross-attention and a key/value cache.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.nn.positions import apply_rotary
from audiolm_pytorch.utils import default, exists


class KVCache(NamedTuple):
    keys: Tensor     # (b, h, n_past, d)
    values: Tensor   # (b, h, n_past, d)

    @property
    def length(self) -> int:
        return self.keys.shape[-2]


def causal_mask(query_len: int, key_len: int, device) -> Tensor:
    """Boolean ``(query_len, key_len)``, True = may attend. Queries are the last ``query_len`` positions."""
    offset = key_len - query_len
    q = torch.arange(query_len, device = device)[:, None]
    k = torch.arange(key_len, device = device)[None, :]
    return k <= (q + offset)


class Attention(nn.Module):
    """Self- or cross-attention.

    Args:
        dim: model width. dim_context: width of ``context`` for cross-attention (defaults to ``dim``).
        heads, dim_head: head count and width. causal: mask future positions (self-attention only).
        dropout: attention-probability dropout (training only).

    ``forward(x (b, n, dim), context=None, mask=None, rotary=None, cache=None, return_cache=False)``:
        ``mask``: boolean, True = keep; 2-D is always key padding ``(b, n_k)``, 3-D is ``(b, n_q, n_k)``
            (a leading 1 broadcasts over the batch).
        ``rotary``: ``(cos, sin)`` for the query positions (keys in the cache were rotated when stored).
        ``cache``: past keys/values of this layer (self-attention) -> the new cache is returned with
        ``return_cache=True`` as ``(out, cache)``.
    """

    def __init__(self, *, dim: int, heads: int = 8, dim_head: int = 64, dim_context: int | None = None,
                 causal: bool = False, dropout: float = 0., qk_norm: bool = False):
        super().__init__()
        self.heads, self.dim_head, self.causal, self.dropout = heads, dim_head, causal, dropout
        inner = heads * dim_head
        self.is_cross = exists(dim_context)
        self.to_q = nn.Linear(dim, inner, bias = False)
        self.to_kv = nn.Linear(default(dim_context, dim), inner * 2, bias = False)
        self.q_norm = nn.LayerNorm(dim_head) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim_head) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(inner, dim, bias = False)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                rotary: tuple[Tensor, Tensor] | None = None, cache: KVCache | None = None,
                return_cache: bool = False):
        if self.is_cross and not exists(context):
            raise ValueError('cross-attention layer needs a context')
        kv_input = default(context, x)

        q = rearrange(self.to_q(x), 'b n (h d) -> b h n d', h = self.heads)
        k, v = rearrange(self.to_kv(kv_input), 'b n (kv h d) -> kv b h n d', kv = 2, h = self.heads)
        q, k = self.q_norm(q), self.k_norm(k)

        if exists(rotary) and not self.is_cross:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        if exists(cache) and not self.is_cross:
            k = torch.cat((cache.keys, k), dim = -2)
            v = torch.cat((cache.values, v), dim = -2)
        new_cache = KVCache(k, v) if return_cache else None

        query_len, key_len = q.shape[-2], k.shape[-2]
        attn_mask = None
        if exists(mask):
            expected = (x.shape[0], key_len) if mask.ndim == 2 else (x.shape[0], query_len, key_len)
            if mask.ndim not in (2, 3) or tuple(mask.shape[1:]) != expected[1:] or mask.shape[0] not in (1, x.shape[0]):
                raise ValueError(f'attention mask must be (b, n_k) key padding or (b, n_q, n_k); expected '
                                 f'{expected}, got {tuple(mask.shape)}')
            attn_mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]   # (b, 1, n_q | 1, n_k)

        use_is_causal = False
        if self.causal and not self.is_cross:
            if not exists(attn_mask) and query_len == key_len:
                use_is_causal = True          # fastest kernel path
            elif query_len > 1:
                causal = causal_mask(query_len, key_len, q.device)
                attn_mask = causal if not exists(attn_mask) else (attn_mask & causal)

        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask = attn_mask, is_causal = use_is_causal,
            dropout_p = self.dropout if self.training else 0.)
        out = self.to_out(rearrange(out, 'b h n d -> b n (h d)'))
        return (out, new_cache) if return_cache else out
