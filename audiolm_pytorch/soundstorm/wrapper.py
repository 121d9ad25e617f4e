"""``ConformerWrapper``: the SoundStorm network. A frame of residual codes becomes one Conformer input vector
(per-level embeddings summed, groups concatenated); every codebook has its own output head.

Codes are ``(b, n, g·q)`` in the codec's group-major order (``'b n (g q)'``), ``q`` residual levels per group.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.nn.conformer import Conformer
from audiolm_pytorch.utils import beartype, exists


@reference_compat('ConformerWrapper')
class ConformerWrapper(Checkpointable, nn.Module):
    """Conformer over frames of residual codes.

    Args:
        codebook_size: codes per codebook (``c``); index ``c`` is each codebook's learned mask token.
        num_quantizers: residual levels per group (``q``).
        conformer: a ``Conformer`` or the keyword arguments to build one.
        grouped_quantizers: codec quantizer groups (``g``); each group gets ``dim // g`` channels, its levels'
            embeddings summed, and the groups concatenated into the model width.
        quantizer_heads: project the conformer output to one ``dim``-wide vector per codebook
            (``Linear(dim, dim·g·q)``, then a shared LayerNorm) before each codebook's logits, as soundstorm-pytorch
            does; ``False``: each codebook's logits straight from the conformer output (versions <= 0.1.0, whose
            checkpoints rebuild that layout).

    ``forward(codes (b, n, g·q), mask=None (b, n), cond=None (b, n, dim), quantizers=None)``
    ``-> logits (b, n, k, c)`` for the ``k`` codebooks named by ``quantizers`` (``(k,)`` or per sample
    ``(b, k)``, indices into ``g·q``; all codebooks when ``None``).
    """

    # checkpoints of versions <= 0.1.0 read the logits straight from the conformer output
    legacy_defaults = dict(quantizer_heads = False)

    @beartype
    def __init__(self, *, codebook_size: int, num_quantizers: int, conformer: dict | Conformer,
                 grouped_quantizers: int = 1, quantizer_heads: bool = True):
        super().__init__()
        if codebook_size < 2 or num_quantizers < 1 or grouped_quantizers < 1:
            raise ValueError('ConformerWrapper needs codebook_size >= 2, num_quantizers >= 1 and '
                             f'grouped_quantizers >= 1, got {codebook_size}, {num_quantizers}, {grouped_quantizers}')
        if isinstance(conformer, dict):
            conformer = Conformer(**conformer)
        dim = conformer.dim
        if dim % grouped_quantizers != 0:
            raise ValueError(f'conformer dim ({dim}) must be divisible by grouped_quantizers ({grouped_quantizers})')

        self.codebook_size, self.num_quantizers, self.grouped_quantizers = codebook_size, num_quantizers, grouped_quantizers
        self.num_effective_quantizers = num_quantizers * grouped_quantizers
        self.mask_id = codebook_size
        self.dim = dim

        self.code_embeds = nn.Embedding(self.num_effective_quantizers * (codebook_size + 1), dim // grouped_quantizers)
        offsets = torch.arange(self.num_effective_quantizers) * (codebook_size + 1)
        self.register_buffer('code_offsets', offsets, persistent = False)

        self.conformer = conformer
        self.heads = self.heads_norm = None
        if quantizer_heads:
            self.heads = nn.Linear(dim, dim * self.num_effective_quantizers)
            self.heads_norm = nn.LayerNorm(dim)
        self.to_logits_weight = nn.Parameter(torch.randn(self.num_effective_quantizers, dim, codebook_size) * dim ** -0.5)
        self.to_logits_bias = nn.Parameter(torch.zeros(self.num_effective_quantizers, codebook_size))

    def level_quantizers(self, level: int) -> list[int]:
        """Indices into ``g·q`` of residual level ``level`` (one per group)."""
        return [group * self.num_quantizers + level for group in range(self.grouped_quantizers)]

    def embed(self, codes: Tensor) -> Tensor:
        if codes.ndim != 3 or codes.shape[-1] != self.num_effective_quantizers:
            raise ValueError(f'codes must be (batch, frames, {self.num_effective_quantizers}), got {tuple(codes.shape)}')
        emb = self.code_embeds(codes + self.code_offsets)                       # (b, n, g·q, d/g)
        return reduce(emb, 'b n (g q) d -> b n (g d)', 'sum', g = self.grouped_quantizers)

    def forward(self, codes: Tensor, *, mask: Tensor | None = None, cond: Tensor | None = None,
                quantizers: Tensor | Sequence[int] | None = None, sum_embeds: Tensor | None = None,
                return_embeddings: bool = False, return_logits_and_embeddings: bool = False):
        """``sum_embeds (b, n, dim)`` is added to the input embeddings like ``cond``. ``return_embeddings``: the
        conformer output ``(b, n, dim)`` instead of logits; ``return_logits_and_embeddings``: both."""
        x = self.embed(codes)
        if exists(cond):
            x = x + cond
        if exists(sum_embeds):
            x = x + sum_embeds
        x = self.conformer(x, mask = mask)                                       # (b, n, dim)
        if return_embeddings:
            return x
        if return_logits_and_embeddings:
            return self._logits(x, quantizers), x
        return self._logits(x, quantizers)

    def _logits(self, x: Tensor, quantizers) -> Tensor:
        if quantizers is None:
            if exists(self.heads):
                x = self.heads_norm(rearrange(self.heads(x), 'b n (k d) -> b n k d', k = self.num_effective_quantizers))
                return torch.einsum('b n k d, k d c -> b n k c', x, self.to_logits_weight) + self.to_logits_bias
            return torch.einsum('b n d, k d c -> b n k c', x, self.to_logits_weight) + self.to_logits_bias
        quantizers = torch.as_tensor(quantizers, device = x.device, dtype = torch.long)
        weight, bias = self.to_logits_weight[quantizers], self.to_logits_bias[quantizers]
        if exists(self.heads):
            # only the requested codebooks' projections: (k, dim_out, dim_in) slices of the heads
            head_weight = rearrange(self.heads.weight, '(k o) i -> k o i', k = self.num_effective_quantizers)
            head_bias = rearrange(self.heads.bias, '(k o) -> k o', k = self.num_effective_quantizers)
            head_weight, head_bias = head_weight[quantizers], head_bias[quantizers]
            if quantizers.ndim == 1:
                x = torch.einsum('b n i, k o i -> b n k o', x, head_weight) + head_bias
                x = self.heads_norm(x)
                return torch.einsum('b n k d, k d c -> b n k c', x, weight) + bias
            x = self.heads_norm(torch.einsum('b n i, b k o i -> b n k o', x, head_weight) + head_bias[:, None])
            return torch.einsum('b n k d, b k d c -> b n k c', x, weight) + bias[:, None]
        if quantizers.ndim == 1:
            return torch.einsum('b n d, k d c -> b n k c', x, weight) + bias
        return torch.einsum('b n d, b k d c -> b n k c', x, weight) + bias[:, None]
