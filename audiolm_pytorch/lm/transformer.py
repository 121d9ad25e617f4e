"""The conditioned causal decoder shared by the semantic, coarse and fine stages.

Conditioning (text via T5, precomputed ``text_embeds`` or an ``audio_conditioner``'s embeddings) enters either
through cross-attention or, VALL-E style (arXiv 2301.02111), as a self-attention prefix
(``cond_as_self_attn_prefix``). A learned null token is always present in the condition, so a dropped
condition (classifier-free guidance, Ho & Salimans arXiv 2207.12598) attends to that token only and
attention never sees an empty key set.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from audiolm_pytorch.lm.conditioning import DEFAULT_T5_NAME, T5Embedder, t5_embed_dim
from audiolm_pytorch.nn.attention import KVCache
from audiolm_pytorch.nn.transformer import Transformer
from audiolm_pytorch.utils import default, exists


class DecoderCache(NamedTuple):
    """Inference state: per-layer keys/values plus what later steps need to build their masks."""
    layers: list[KVCache]
    key_mask: Tensor | None       # (b, n_past) True = real token; None = all real
    context: Tensor | None        # (b, m, dim) cross-attention condition
    context_mask: Tensor | None   # (b, m)
    prefix_len: int = 0           # condition tokens at the start of the cache (self-attention prefix mode)

    @property
    def length(self) -> int:
        """Number of the caller's own tokens held (the condition prefix excluded)."""
        return self.layers[0].length - self.prefix_len


def left_align(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Move the kept entries of each row to the right end (padding to the left), preserving their order, so
    rotary (relative) positions between real tokens do not depend on the padding.

    Args:
        x: ``(b, n, ...)``. keep: ``(b, n)`` bool.
    Returns ``(x', keep')`` with the same shapes.
    """
    order = torch.sort(keep.int(), dim = 1, stable = True).indices
    gathered = x.gather(1, order.view(*order.shape, *((1,) * (x.ndim - 2))).expand_as(x))
    return gathered, keep.gather(1, order)


def self_attention_mask(key_mask: Tensor | None, query_len: int) -> Tensor | None:
    """``(b, n_q, n_k)`` mask from a key keep-mask; every query may also attend to itself, so padded queries
    never see an empty key set (which would give NaN). ``None`` when nothing is padded (fast SDPA path)."""
    if not exists(key_mask) or bool(key_mask.all()):
        return None
    key_len = key_mask.shape[-1]
    own = torch.arange(key_len - query_len, key_len, device = key_mask.device)
    diag = own[:, None] == torch.arange(key_len, device = key_mask.device)[None, :]
    return key_mask[:, None, :] | diag[None]


class ConditionedDecoder(nn.Module):
    """Causal transformer with optional text / audio conditioning.

    Args:
        dim, depth, heads, dim_head, attn_dropout, ff_dropout, ff_mult, grad_shrink_alpha: transformer sizes.
        has_condition: accept a condition. cond_dim: width of ``text_embeds`` (default: T5 ``t5_name``'s width,
        768 when unknown, without contacting the hub). cond_as_self_attn_prefix: condition as a prefix of the
        sequence instead of cross-attention. cond_drop_prob: probability of dropping the condition in training.
        attn_kv_heads: key/value heads shared by the query heads (1: multi-query attention, as audiolm-pytorch;
        ``None``: one per query head, the layout of this package's versions <= 0.1.0).

    ``forward(x (b, n, dim), text=None, text_embeds=None, text_mask=None, cond_drop_prob=None, drop_cond=None,
    key_mask=None, cache=None, return_cache=False) -> (hidden (b, n, dim), DecoderCache | None)``.
    ``drop_cond``: ``(b,)`` bool forcing the null condition per row (guidance). ``key_mask``: ``(b, n)`` True =
    real token (padding positions False).
    """

    def __init__(self, *, dim: int, depth: int, heads: int = 8, dim_head: int = 64, attn_dropout: float = 0.,
                 ff_dropout: float = 0., ff_mult: float = 4., grad_shrink_alpha: float = 0.1,
                 has_condition: bool = False, cond_dim: int | None = None, t5_name: str = DEFAULT_T5_NAME,
                 cond_as_self_attn_prefix: bool = False, cond_drop_prob: float = 0.5, attn_kv_heads: int | None = 1):
        super().__init__()
        self.dim = dim
        self.has_condition = has_condition
        self.cond_as_self_attn_prefix = cond_as_self_attn_prefix
        self.cond_drop_prob = cond_drop_prob
        self.t5_name = t5_name
        self.cond_dim = default(cond_dim, lambda: t5_embed_dim(t5_name))
        self._t5 = None

        cross_attend = has_condition and not cond_as_self_attn_prefix
        if has_condition:
            self.proj_cond = nn.Linear(self.cond_dim, dim) if self.cond_dim != dim else nn.Identity()
            self.null_cond = nn.Parameter(torch.randn(dim) * 0.02)

        self.transformer = Transformer(
            dim = dim, depth = depth, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
            ff_dropout = ff_dropout, ff_mult = ff_mult, cross_attend = cross_attend, dim_context = dim,
            causal = True, grad_shrink_alpha = grad_shrink_alpha, kv_heads = attn_kv_heads)

    # conditioning

    def embed_text(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """T5-embed ``texts`` (loads T5 from local files on first use) -> ``(embeds (b, n, d), mask (b, n))``."""
        if self._t5 is None:
            self._t5 = T5Embedder(self.t5_name)
        embeds, mask = self._t5(texts, device = self.null_cond.device if self.has_condition else 'cpu')
        if embeds.shape[-1] != self.cond_dim:
            raise ValueError(f'T5 {self.t5_name!r} gives {embeds.shape[-1]}-dim embeddings but cond_dim={self.cond_dim}')
        return embeds, mask

    def condition(self, *, batch: int, device, text=None, text_embeds: Tensor | None = None,
                  text_mask: Tensor | None = None, cond_drop_prob: float | None = None,
                  drop_cond: Tensor | None = None) -> tuple[Tensor, Tensor] | tuple[None, None]:
        """Projected condition ``(b, 1 + m, dim)`` with its mask; position 0 is the null token."""
        if not self.has_condition:
            if exists(text) or exists(text_embeds):
                raise ValueError('this model was built without conditioning: construct it with has_condition=True '
                                 'to pass text or text_embeds')
            return None, None

        if exists(text) and not exists(text_embeds):
            text = [text] if isinstance(text, str) else list(text)
            text_embeds, text_mask = self.embed_text(text)

        null = self.null_cond.expand(batch, 1, self.dim)
        if not exists(text_embeds):
            return null, torch.ones(batch, 1, dtype = torch.bool, device = device)

        text_embeds = text_embeds.to(device)          # conditions made on the CPU work with a model on the GPU
        text_mask = text_mask.to(device) if exists(text_mask) else None
        if text_embeds.ndim == 2:
            text_embeds = text_embeds[:, None]
        if text_embeds.shape[-1] != self.cond_dim:
            raise ValueError(f'text_embeds have width {text_embeds.shape[-1]} but this model expects cond_dim='
                             f'{self.cond_dim}: construct it with cond_dim={text_embeds.shape[-1]}')
        text_embeds, text_mask = match_condition_batch(text_embeds, text_mask, batch)   # 1 -> batch, else equal
        if not exists(text_mask):
            text_mask = (text_embeds != 0).any(dim = -1)

        keep = text_mask.bool()
        # an explicit cond_drop_prob applies in any mode; the constructor's only in training
        prob = cond_drop_prob if exists(cond_drop_prob) else (self.cond_drop_prob if self.training else 0.)
        if exists(drop_cond):
            keep = keep & ~drop_cond.to(device)[:, None]
        elif prob > 0.:
            keep = keep & (torch.rand(batch, device = device) >= prob)[:, None]

        cond = self.proj_cond(text_embeds.to(null.dtype))
        cond = torch.cat((null, cond), dim = 1)
        mask = torch.cat((torch.ones(batch, 1, dtype = torch.bool, device = device), keep), dim = 1)
        return cond, mask

    # forward

    def forward(self, x: Tensor, *, text=None, text_embeds: Tensor | None = None, text_mask: Tensor | None = None,
                cond_drop_prob: float | None = None, drop_cond: Tensor | None = None,
                key_mask: Tensor | None = None, cache: DecoderCache | None = None,
                return_cache: bool = False) -> tuple[Tensor, DecoderCache | None]:
        batch, seq_len, device = x.shape[0], x.shape[1], x.device
        if exists(key_mask) and key_mask.all():
            key_mask = None

        prefix_len = 0
        if exists(cache):
            context, context_mask = cache.context, cache.context_mask
            if exists(cache.key_mask) or exists(key_mask):
                past = default(cache.key_mask, lambda: torch.ones(batch, cache.layers[0].length, dtype = torch.bool,
                                                                   device = device))
                new = default(key_mask, lambda: torch.ones(batch, seq_len, dtype = torch.bool, device = device))
                key_mask = torch.cat((past, new), dim = 1)
        else:
            context, context_mask = self.condition(
                batch = batch, device = device, text = text, text_embeds = text_embeds, text_mask = text_mask,
                cond_drop_prob = cond_drop_prob, drop_cond = drop_cond)
            if self.cond_as_self_attn_prefix and exists(context):
                prefix_len = context.shape[1]
                new = default(key_mask, lambda: torch.ones(batch, seq_len, dtype = torch.bool, device = device))
                # padding of the condition AND the leading padding of x (a stage's left-aligned prefix, e.g. the
                # coarse stage's semantic ids) go to the very front together, so the real condition tokens sit
                # right before x's real tokens: rotary distances then never depend on how much padding a row has
                # (batched rows == the row alone; training == inference). x's non-leading positions keep their
                # indices, so callers read out[:, i] as before.
                leading_pad = new.cumsum(dim = 1) == 0
                front = torch.cat((~context_mask, leading_pad), dim = 1)
                x = torch.cat((context.to(x.dtype), x), dim = 1)
                key_mask = torch.cat((context_mask, new), dim = 1)
                order = torch.sort((~front).int(), dim = 1, stable = True).indices
                x = x.gather(1, order[..., None].expand_as(x))
                key_mask = key_mask.gather(1, order)
                context = context_mask = None

        # a 2-D key mask keeps causal attention on the is_causal kernel path (see nn.attention); None when
        # nothing is hidden
        attn_mask = key_mask if exists(key_mask) and not bool(key_mask.all()) else None
        out = self.transformer(
            x, mask = attn_mask, context = context, context_mask = context_mask,
            cache = cache.layers if exists(cache) else None, return_cache = return_cache)

        new_cache = None
        if return_cache:
            out, layers = out
            prefix = cache.prefix_len if exists(cache) else prefix_len
            new_cache = DecoderCache(layers, key_mask, context, context_mask, prefix)
        return out[:, prefix_len:], new_cache


class GuidanceMixin:
    """``forward_with_cond_scale`` for a stage model whose ``forward(..., drop_cond=, kv_cache=,
    return_kv_cache=)`` returns logits (or a tuple of logits), plus the cache when asked.

    Conditional and unconditional passes run as one batch of ``2b``; the kv cache then holds both halves.
    With ``cond_scale=1`` (or an unconditioned model) a single conditional pass is made.
    """

    def forward_with_cond_scale(self, *args, cond_scale: float = 3., kv_cache: DecoderCache | None = None,
                                return_kv_cache: bool = False, **kwargs):
        decoder = self.decoder
        if cond_scale == 1 or not decoder.has_condition:
            return self.forward(*args, cond_drop_prob = 0., kv_cache = kv_cache, return_kv_cache = return_kv_cache,
                                **kwargs)

        condition_names = ('text', 'text_embeds', 'text_mask')
        tokens = (*args, *(v for k, v in kwargs.items() if k not in condition_names))
        batch = next(a for a in tokens if torch.is_tensor(a)).shape[0]
        text = kwargs.pop('text', None)
        if exists(text) and not exists(kwargs.get('text_embeds')):
            kwargs['text_embeds'], kwargs['text_mask'] = decoder.embed_text([text] if isinstance(text, str) else text)
        if exists(kwargs.get('text_embeds')):
            kwargs['text_embeds'], kwargs['text_mask'] = match_condition_batch(
                kwargs['text_embeds'], kwargs.get('text_mask'), batch)

        def double(value):
            return torch.cat((value, value), dim = 0) if torch.is_tensor(value) and value.shape[0] == batch else value

        args = tuple(double(a) for a in args)
        kwargs = {k: double(v) for k, v in kwargs.items()}
        device = next(t for t in (*args, *kwargs.values()) if torch.is_tensor(t)).device
        drop = torch.arange(batch * 2, device = device) >= batch

        out = self.forward(*args, drop_cond = drop, kv_cache = kv_cache, return_kv_cache = return_kv_cache, **kwargs)
        logits, new_cache = (out if return_kv_cache else (out, None))

        def guide(t):
            cond, null = t.chunk(2, dim = 0)
            return null + (cond - null) * cond_scale

        logits = tuple(guide(t) for t in logits) if isinstance(logits, tuple) else guide(logits)
        return (logits, new_cache) if return_kv_cache else logits


def stage_decoder(*, dim, depth, heads, dim_head, attn_dropout, ff_dropout, ff_mult, grad_shrink_alpha,
                  t5_name, cond_dim, has_condition, audio_text_condition, cond_as_self_attn_prefix,
                  cond_drop_prob, attn_kv_heads = 1) -> ConditionedDecoder:
    """Build the decoder from the keyword arguments all three stages share (``audio_text_condition`` implies
    ``has_condition``: the audio conditioner's embeddings are the condition, and without an explicit ``cond_dim``
    they are as wide as the model, as ``MuLaNEmbedQuantizer(conditioning_dims=...)`` is set up to give)."""
    if audio_text_condition and cond_dim is None:
        cond_dim = dim
    return ConditionedDecoder(
        dim = dim, depth = depth, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
        ff_dropout = ff_dropout, ff_mult = ff_mult, grad_shrink_alpha = grad_shrink_alpha,
        has_condition = has_condition or audio_text_condition, cond_dim = cond_dim,
        t5_name = default(t5_name, DEFAULT_T5_NAME), cond_as_self_attn_prefix = cond_as_self_attn_prefix,
        cond_drop_prob = cond_drop_prob, attn_kv_heads = attn_kv_heads)


def resolve_condition(decoder: ConditionedDecoder, *, audio_conditioner=None, namespace: str, text=None,
                      text_embeds: Tensor | None = None, text_mask: Tensor | None = None,
                      wavs: Tensor | None = None, wavs_sample_hz: int | None = None, batch_size: int | None = None):
    """Turn the ways a condition can be given into ``(text_embeds, text_mask)`` once (before a loss or a
    sampling loop): an audio conditioner embeds ``wavs`` (training) or ``text`` (generation) under
    ``namespace``; otherwise text goes through T5 (loaded lazily, local files only)."""
    from audiolm_pytorch.lm.conditioning import audio_condition
    if exists(text_embeds) or not (exists(text) or exists(wavs)):
        return match_condition_batch(text_embeds, text_mask, batch_size)
    if isinstance(text, str):
        text = [text] * default(batch_size, 1)
    if exists(audio_conditioner):
        embeds = audio_condition(audio_conditioner, namespace = namespace, wavs = wavs,
                                 texts = None if exists(wavs) else text, input_sample_hz = wavs_sample_hz)
        return match_condition_batch(embeds, None, batch_size)
    if not exists(text):
        return None, None
    if not decoder.has_condition:
        raise ValueError('text was given but this model was built without conditioning (has_condition=False)')
    return match_condition_batch(*decoder.embed_text(list(text)), batch_size)


def condition_batch_size(text=None, text_embeds: Tensor | None = None) -> int | None:
    """How many samples a condition describes: ``text_embeds``' batch, the number of texts, or None (no
    condition, or one string that applies to any batch)."""
    if exists(text_embeds):
        return text_embeds.shape[0]
    if exists(text) and not isinstance(text, str):
        return len(text)
    return None


def match_condition_batch(embeds: Tensor | None, mask: Tensor | None, batch_size: int | None):
    """One condition for the whole batch is repeated; otherwise there must be one per sample (never a silent
    pairing of some samples with another sample's condition)."""
    if not exists(embeds) or not exists(batch_size) or embeds.shape[0] == batch_size:
        return embeds, mask
    if embeds.shape[0] == 1:
        expand = lambda t: t.expand(batch_size, *t.shape[1:]) if exists(t) else None
        return expand(embeds), expand(mask)
    raise ValueError(f'{embeds.shape[0]} conditions (texts or text_embeds) for a batch of {batch_size} samples: '
                     f'give one condition per sample, or a single one for the whole batch')


def aligned_prefix(tokens: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Left-align a padded prefix. Returns ``(tokens', keep', where)`` where ``where (b, P)`` gives, for each
    original prefix position, its index in the aligned prefix (to read the logits back in original order)."""
    order = torch.sort(keep.int(), dim = 1, stable = True).indices
    where = torch.argsort(order, dim = 1)
    aligned = tokens.gather(1, order[..., None].expand_as(tokens))
    return aligned, keep.gather(1, order), where


def slot_logits(hidden: Tensor, weight: Tensor, bias: Tensor, first_slot: int = 0) -> Tensor:
    """Per-quantizer output heads. ``hidden (b, m, d)`` predicts tokens whose quantizer slots cycle
    ``first_slot, first_slot + 1, ...`` modulo ``Q``; ``weight (Q, d, V)``, ``bias (Q, V)`` -> ``(b, m, V)``."""
    num_slots, m = weight.shape[0], hidden.shape[1]
    if m == 0:
        return hidden.new_zeros(hidden.shape[0], 0, weight.shape[-1])
    hidden = torch.nn.functional.pad(hidden, (0, 0, first_slot, (-(m + first_slot)) % num_slots))
    frames = hidden.shape[1] // num_slots
    hidden = hidden.view(hidden.shape[0], frames, num_slots, hidden.shape[-1])
    logits = torch.einsum('bfqd,qdv->bfqv', hidden, weight) + bias
    return logits.reshape(hidden.shape[0], frames * num_slots, -1)[:, first_slot:first_slot + m]
