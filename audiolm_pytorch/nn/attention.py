"""Multi-head attention on ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where the
device has them, Hopper included), with rotary positions, cross-attention and a key/value cache.

Speed notes:
- causal self-attention with only a key keep-mask ``(b, n_k)`` (padding, forgetful causal masking) still runs
  with ``is_causal=True`` (kernels skip the future blocks): the mask enters as one extra query/key feature whose
  product is ``-1e4`` for hidden keys and ``0`` otherwise, so no ``(n_q, n_k)`` mask is materialised. The same
  trick (without ``is_causal``) serves key masks in cross-attention, non-causal self-attention and one-query
  decoding, so those also stay on flash kernels (which refuse any ``attn_mask``). Only a 3-D ``(b, n_q, n_k)``
  mask, or a causal chunk of several queries after a cache, takes the masked kernels.
- the key/value cache grows inside a preallocated buffer (amortised O(1) per decoded token instead of a copy of
  the whole cache per step); a stale cache that is extended again falls back to a copy, so caches stay values.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolm_pytorch.nn.positions import apply_rotary
from audiolm_pytorch.utils import default, exists

MASK_BIAS = -1e4     # added to the attention logit of a hidden key (exp underflows to exactly 0; fp16-safe)


class KVBuffer:
    """Preallocated storage behind growing ``KVCache`` views: ``(b, h, capacity, d)`` keys and values, and how
    many positions are written. Internal to ``Attention``."""

    __slots__ = ('keys', 'values', 'filled')

    def __init__(self, keys: Tensor, values: Tensor, capacity: int):
        b, h, n, d = keys.shape
        self.keys = keys.new_empty(b, h, capacity, d)
        self.values = values.new_empty(b, h, capacity, values.shape[-1])
        self.keys[:, :, :n] = keys
        self.values[:, :, :n] = values
        self.filled = n


class KVCache(NamedTuple):
    keys: Tensor     # (b, h, n_past, d)
    values: Tensor   # (b, h, n_past, d)
    buffer: KVBuffer | None = None   # preallocated storage the views live in (None: plain tensors)

    @property
    def length(self) -> int:
        return self.keys.shape[-2]

    def extend(self, keys: Tensor, values: Tensor) -> 'KVCache':
        """Append ``(b, h, t, d)`` keys/values -> a new cache (in place in the buffer when this cache is its
        newest view and nothing needs gradients; otherwise a copy into a larger buffer)."""
        n, t = self.length, keys.shape[-2]
        needs_grad = torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad or self.keys.requires_grad)
        if needs_grad:
            return KVCache(torch.cat((self.keys, keys), dim = -2), torch.cat((self.values, values), dim = -2))
        buf = self.buffer
        fits = (exists(buf) and buf.filled == n and n + t <= buf.keys.shape[-2] and buf.keys.dtype == keys.dtype
                and buf.keys.shape[0] == keys.shape[0])
        if not fits:
            buf = KVBuffer(self.keys, self.values, capacity = max(2 * (n + t), n + t + 64))
        buf.keys[:, :, n:n + t] = keys
        buf.values[:, :, n:n + t] = values
        buf.filled = n + t
        return KVCache(buf.keys[:, :, :n + t], buf.values[:, :, :n + t], buf)


def causal_mask(query_len: int, key_len: int, device) -> Tensor:
    """Boolean ``(query_len, key_len)``, True = may attend. Queries are the last ``query_len`` positions."""
    offset = key_len - query_len
    q = torch.arange(query_len, device = device)[:, None]
    k = torch.arange(key_len, device = device)[None, :]
    return k <= (q + offset)


def attention_with_key_mask(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, dropout_p: float = 0.,
                            causal: bool = True) -> Tensor:
    """SDPA without an ``attn_mask`` (so flash kernels stay usable; ``is_causal=True`` when ``causal``, which
    needs as many queries as keys) that hides keys where ``key_mask (b, n_k)`` is False.

    The mask rides in 8 extra features (one carries it, the rest keep the head width a multiple of 8): query
    feature ``sqrt(d)`` times key feature ``MASK_BIAS`` (hidden) or ``0`` gives, after SDPA's ``1/sqrt(d)``
    scale, a logit bias of exactly ``MASK_BIAS`` or ``0`` (in float16 a smaller bias, so the unscaled product
    stays finite). A query whose visible keys are all hidden gets an average over its (hidden) past, not NaN.
    """
    b, h, n, d = q.shape
    extra = 8
    q_extra = q.new_zeros(b, h, n, extra)
    q_extra[..., 0] = d ** 0.5
    k_extra = k.new_zeros(*k.shape[:-1], extra)
    bias = MASK_BIAS if q.dtype != torch.float16 else max(MASK_BIAS, -6e4 / d ** 0.5)   # unscaled q.k fits fp16
    k_extra[..., 0] = (~key_mask).to(k.dtype)[:, None, :] * bias
    q = torch.cat((q, q_extra), dim = -1)
    k = torch.cat((k, k_extra), dim = -1)
    v = F.pad(v, (0, extra))
    out = F.scaled_dot_product_attention(q, k, v, is_causal = causal, dropout_p = dropout_p, scale = d ** -0.5)
    return out[..., :d]


class Attention(nn.Module):
    """Self- or cross-attention.

    Args:
        dim: model width. dim_context: width of ``context`` for cross-attention (defaults to ``dim``).
        heads, dim_head: head count and width. causal: mask future positions (self-attention only).
        dropout: attention-probability dropout (training only).
        kv_heads: key/value heads, shared by groups of ``heads // kv_heads`` query heads (grouped-query attention,
            arXiv 2305.13245; 1 = multi-query attention, arXiv 1911.02150; ``None`` = ``heads``, one per query
            head). The cache stores the ``kv_heads`` heads only.

    ``forward(x (b, n, dim), context=None, mask=None, rotary=None, cache=None, return_cache=False)``:
        ``mask``: boolean, True = keep; 2-D is always key padding ``(b, n_k)``, 3-D is ``(b, n_q, n_k)``
            (a leading 1 broadcasts over the batch).
        ``rotary``: ``(cos, sin)`` for the query positions (keys in the cache were rotated when stored).
        ``cache``: past keys/values of this layer (self-attention) -> the new cache is returned with
        ``return_cache=True`` as ``(out, cache)``.
    """

    def __init__(self, *, dim: int, heads: int = 8, dim_head: int = 64, dim_context: int | None = None,
                 causal: bool = False, dropout: float = 0., qk_norm: bool = False, kv_heads: int | None = None):
        super().__init__()
        kv_heads = default(kv_heads, heads)
        if kv_heads < 1 or heads % kv_heads != 0:
            raise ValueError(f'kv_heads={kv_heads} must be at least 1 and divide heads={heads}')
        self.heads, self.kv_heads, self.dim_head, self.causal, self.dropout = heads, kv_heads, dim_head, causal, dropout
        inner = heads * dim_head
        self.is_cross = exists(dim_context)
        self.qk_norm = qk_norm
        self.to_q = nn.Linear(dim, inner, bias = False)
        self.to_kv = nn.Linear(default(dim_context, dim), kv_heads * dim_head * 2, bias = False)
        self.q_norm = nn.LayerNorm(dim_head) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim_head) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(inner, dim, bias = False)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                rotary: tuple[Tensor, Tensor] | None = None, cache: KVCache | None = None,
                return_cache: bool = False):
        if self.is_cross and not exists(context):
            raise ValueError('cross-attention layer needs a context')
        kv_input = default(context, x)
        batch, query_len, h, d = x.shape[0], x.shape[1], self.heads, self.dim_head

        q = self.to_q(x).view(batch, query_len, h, d).transpose(1, 2)                       # (b, h, n, d)
        kv = self.to_kv(kv_input)
        kv = kv.view(kv.shape[0], kv.shape[1], 2, self.kv_heads, d).permute(2, 0, 3, 1, 4)  # (2, b, h_kv, n, d)
        k, v = kv[0], kv[1]
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)

        if exists(rotary) and not self.is_cross:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        new_cache = None
        if exists(cache) and not self.is_cross:
            new_cache = cache.extend(k, v) if isinstance(cache, KVCache) else KVCache(*cache).extend(k, v)
            k, v = new_cache.keys, new_cache.values
        elif return_cache:
            new_cache = KVCache(k, v)

        if self.kv_heads != h:
            # each group of query heads reads its shared key/value head (the cache above keeps kv_heads only)
            k = k.repeat_interleave(h // self.kv_heads, dim = 1)
            v = v.repeat_interleave(h // self.kv_heads, dim = 1)

        key_len = k.shape[-2]
        dropout_p = self.dropout if self.training else 0.
        attn_mask = None
        if exists(mask):
            expected = (batch, key_len) if mask.ndim == 2 else (batch, query_len, key_len)
            if mask.ndim not in (2, 3) or tuple(mask.shape[1:]) != expected[1:] or mask.shape[0] not in (1, batch):
                raise ValueError(f'attention mask must be (b, n_k) key padding or (b, n_q, n_k); expected '
                                 f'{expected}, got {tuple(mask.shape)}')
            self_causal = self.causal and not self.is_cross
            # a key mask alone rides in the features (no attn_mask): cross-attention, non-causal self-attention,
            # causal self-attention over a whole sequence (is_causal) or one decoded query (sees every key)
            if mask.ndim == 2 and (not self_causal or query_len == key_len or query_len == 1):
                causal = self_causal and query_len == key_len and query_len > 1
                out = attention_with_key_mask(q, k, v, mask.expand(batch, -1), dropout_p, causal = causal)
                out = self.to_out(out.transpose(1, 2).reshape(batch, query_len, h * d))
                return (out, new_cache) if return_cache else out
            attn_mask = mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]   # (b, 1, n_q | 1, n_k)

        use_is_causal = False
        if self.causal and not self.is_cross:
            if not exists(attn_mask) and query_len == key_len:
                use_is_causal = True          # fastest kernel path
            elif query_len > 1 or exists(attn_mask):
                causal = causal_mask(query_len, key_len, q.device)
                if not exists(attn_mask):
                    attn_mask = causal
                else:
                    # every query also sees itself, so a hidden (padding) query never faces an empty key set
                    own = torch.arange(key_len - query_len, key_len, device = q.device)[:, None] == \
                        torch.arange(key_len, device = q.device)[None, :]
                    attn_mask = (attn_mask & causal) | own

        out = F.scaled_dot_product_attention(q, k, v, attn_mask = attn_mask, is_causal = use_is_causal,
                                             dropout_p = dropout_p)
        out = self.to_out(out.transpose(1, 2).reshape(batch, query_len, h * d))
        return (out, new_cache) if return_cache else out
