"""Causal local (sliding-window) transformer, for the SoundStream bottleneck.

Each position attends to itself and the ``window_size - 1`` positions before it (a banded causal mask), with
rotary positions (relative, so chunked and whole-signal runs agree). Cost is ``O(n * window)``: long inputs are
processed window by window through the same key/value cache that streaming uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from audiolm_pytorch.nn.attention import Attention, KVCache
from audiolm_pytorch.nn.positions import RotaryEmbedding


def banded_causal_mask(query_positions: Tensor, key_positions: Tensor, window_size: int) -> Tensor:
    """Boolean ``(n_q, n_k)``, True where ``0 <= q - k < window_size``."""
    distance = query_positions[:, None] - key_positions[None, :]
    return (distance >= 0) & (distance < window_size)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.):
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim))


@dataclass
class LocalTransformerState:
    """Streaming state: frames seen so far and, per layer, the keys/values of the last ``window_size - 1``."""
    position: int = 0
    caches: list = field(default_factory = list)


class LocalTransformer(nn.Module):
    """Pre-norm transformer with causal sliding-window self-attention.

    Args:
        dim: width. depth: layers. heads, dim_head: attention heads. window_size: positions each query sees
        (itself included). ff_mult: feed-forward expansion. dropout: attention / feed-forward dropout.

    ``forward(x (b, n, dim)) -> (b, n, dim)``; ``init_state(batch_size)`` / ``forward_stream(chunk, state)``
    give the same outputs chunk by chunk.
    """

    def __init__(self, *, dim: int, depth: int, heads: int = 8, dim_head: int = 64, window_size: int = 128,
                 ff_mult: int = 4, dropout: float = 0.):
        super().__init__()
        if window_size < 1:
            raise ValueError(f'window_size must be >= 1, got {window_size}')
        self.window_size = window_size
        self.rotary = RotaryEmbedding(dim_head)
        self.layers = nn.ModuleList([
            nn.ModuleList([
                nn.LayerNorm(dim),
                Attention(dim = dim, heads = heads, dim_head = dim_head, dropout = dropout, qk_norm = True),
                nn.LayerNorm(dim),
                FeedForward(dim, ff_mult, dropout),
            ])
            for _ in range(depth)
        ])
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-2]
        if n <= 4 * self.window_size:
            positions = torch.arange(n, device = x.device)
            mask = banded_causal_mask(positions, positions, self.window_size)
            return self._run(x, 0, mask, None)[0]

        # long input: window-sized chunks through the kv cache, O(n * window) memory and compute
        state, outputs = self.init_state(x.shape[0]), []
        for chunk in x.split(self.window_size, dim = -2):
            out, state = self.forward_stream(chunk, state)
            outputs.append(out)
        return torch.cat(outputs, dim = -2)

    def init_state(self, batch_size: int, device = None, dtype = None) -> LocalTransformerState:
        return LocalTransformerState(position = 0, caches = [None] * len(self.layers))

    def forward_stream(self, x: Tensor, state: LocalTransformerState) -> tuple[Tensor, LocalTransformerState]:
        n, start = x.shape[-2], state.position
        past = 0 if state.caches[0] is None else state.caches[0].length
        query_positions = torch.arange(start, start + n, device = x.device)
        key_positions = torch.arange(start - past, start + n, device = x.device)
        mask = banded_causal_mask(query_positions, key_positions, self.window_size)
        out, caches = self._run(x, start, mask, state.caches)
        return out, LocalTransformerState(position = start + n, caches = caches)

    def _run(self, x: Tensor, offset: int, mask: Tensor, caches: list | None):
        cos, sin = self.rotary(x.shape[-2], offset = offset)
        cos, sin = cos.to(x.device), sin.to(x.device)
        mask = mask[None]            # (1, n_q, n_k): never mistaken for a (b, n_k) padding mask
        keep = self.window_size - 1
        new_caches = []
        for index, (attn_norm, attn, ff_norm, ff) in enumerate(self.layers):
            cache = caches[index] if caches is not None else None
            if caches is None:
                x = x + attn(attn_norm(x), mask = mask, rotary = (cos, sin))
            else:
                out, cache = attn(attn_norm(x), mask = mask, rotary = (cos, sin), cache = cache, return_cache = True)
                x = x + out
                start = max(0, cache.length - keep)
                cache = KVCache(cache.keys[..., start:, :], cache.values[..., start:, :])
                new_caches.append(cache)
            x = x + ff(ff_norm(x))
        return self.final_norm(x), new_caches
