"""Stage 1: semantic token language model (next-token over ``num_semantic_tokens + 1``, the last id is EOS)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolm_pytorch.audio import check_audio_values
from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.lm.conditioning import DEFAULT_T5_NAME
from audiolm_pytorch.lm.sampling import (append_eos, batch_unique_consecutive, file_end_mask, forgetful_causal_mask,
                                         init_eos_bias, lengths_from_padding, mask_after_eos, sample_logits)
from audiolm_pytorch.lm.transformer import (DecoderCache, GuidanceMixin, condition_batch_size, resolve_condition,
                                            stage_decoder)
from audiolm_pytorch.utils import beartype, default, eval_mode, exists


@reference_compat('SemanticTransformer')
class SemanticTransformer(Checkpointable, GuidanceMixin, nn.Module):
    """Autoregressive model of semantic tokens.

    Args:
        num_semantic_tokens: semantic vocabulary (the tokenizer's ``codebook_size``); EOS id = this value.
        dim, depth, heads, dim_head, ff_mult, attn_dropout, ff_dropout, grad_shrink_alpha: transformer sizes.
        has_condition, cond_dim, t5_name, audio_text_condition, cond_as_self_attn_prefix, cond_drop_prob:
        conditioning (see ``ConditionedDecoder``). flash_attn, rel_pos_bias: accepted for compatibility
        (attention always runs on SDPA with rotary positions). attn_kv_heads: key/value heads shared by the query
        heads (default 1, multi-query attention as in audiolm-pytorch; ``None`` = one per query head, the layout of
        versions <= 0.1.0, which their checkpoints rebuild automatically).
    """

    # checkpoints of versions <= 0.1.0 hold one key/value head per query head
    legacy_defaults = dict(attn_kv_heads = None)

    def __init__(self, *, num_semantic_tokens: int, dim: int, depth: int, heads: int = 8, dim_head: int = 64,
                 ff_mult: float = 4., attn_dropout: float = 0., ff_dropout: float = 0.,
                 grad_shrink_alpha: float = 0.1, t5_name: str = DEFAULT_T5_NAME, cond_dim: int | None = None,
                 has_condition: bool = False, audio_text_condition: bool = False,
                 cond_as_self_attn_prefix: bool = False, cond_drop_prob: float = 0.5, flash_attn: bool = True,
                 rel_pos_bias: bool = True,
                 attn_kv_heads: int | None = 1):
        super().__init__()
        self.num_semantic_tokens = num_semantic_tokens
        self.eos_id = num_semantic_tokens
        self.audio_text_condition = audio_text_condition
        self.start_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.semantic_embedding = nn.Embedding(num_semantic_tokens + 1, dim)
        self.decoder = stage_decoder(
            dim = dim, depth = depth, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
            ff_dropout = ff_dropout, ff_mult = ff_mult, grad_shrink_alpha = grad_shrink_alpha, t5_name = t5_name,
            cond_dim = cond_dim, has_condition = has_condition, audio_text_condition = audio_text_condition,
            cond_as_self_attn_prefix = cond_as_self_attn_prefix, cond_drop_prob = cond_drop_prob,
            attn_kv_heads = attn_kv_heads)
        self.to_logits = nn.Linear(dim, num_semantic_tokens + 1)
        init_eos_bias(self.to_logits.bias, self.eos_id, num_semantic_tokens)

    @property
    def device(self):
        return self.start_token.device

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        return self.decoder.embed_text(texts)[0]

    def forward(self, *, ids: Tensor, text=None, text_embeds: Tensor | None = None,
                text_mask: Tensor | None = None, self_attn_mask: Tensor | None = None,
                cond_drop_prob: float | None = None, drop_cond: Tensor | None = None,
                kv_cache: DecoderCache | None = None, return_kv_cache: bool = False):
        """Args:
            ids: ``(b, n)`` semantic ids (EOS allowed, padding ``< 0`` allowed at the end).
            self_attn_mask: ``(b, n)`` True = visible as a key.
        Returns logits ``(b, n + 1, num_semantic_tokens + 1)`` (position 0 is the start token); with a
        ``kv_cache`` only the positions not yet cached. With ``return_kv_cache``: ``(logits, cache)``.
        """
        batch = ids.shape[0]
        cached = kv_cache.length if exists(kv_cache) else 0
        if cached == 0:
            tokens = self.semantic_embedding(ids.clamp(min = 0))
            tokens = torch.cat((self.start_token.expand(batch, 1, -1), tokens), dim = 1)
        else:   # embed only the positions not cached yet (position p holds ids[:, p - 1])
            tokens = self.semantic_embedding(ids[:, cached - 1:].clamp(min = 0))
        key_mask = None
        if exists(self_attn_mask):
            key_mask = F.pad(self_attn_mask.bool(), (1, 0), value = True)

        hidden, cache = self.decoder(
            tokens, text = text, text_embeds = text_embeds, text_mask = text_mask,
            cond_drop_prob = cond_drop_prob, drop_cond = drop_cond,
            key_mask = key_mask[:, cached:] if exists(key_mask) else None,
            cache = kv_cache, return_cache = return_kv_cache)
        logits = self.to_logits(hidden)
        return (logits, cache) if return_kv_cache else logits


# input checks shared by the three stage wrappers (run once per call at the public entry points)

def check_token_ids(ids, *, name: str, vocab: int, pad_id: int, slots: int | None = None,
                    hint: str = '') -> Tensor:
    """Check integer token ids at a wrapper's entry and return them as ``long``.

    Args:
        ids: ``(b, n)`` (``slots=None``) or ``(b, frames, slots)``; values in ``[0, vocab)`` or ``pad_id``.
        hint: what to check when values are out of range (e.g. which constructor argument must match).
    """
    shape = '(b, n)' if slots is None else f'(b, frames, {slots})'
    if not torch.is_tensor(ids):
        raise ValueError(f'{name} must be a tensor of integer token ids {shape}, got {type(ids).__name__}')
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f'{name} must hold integer token ids (torch.long), got dtype {ids.dtype}: pass ids from a '
                         'tokenizer / codec (raw audio goes in raw_wave / prime_wave)')
    ndim = 2 if slots is None else 3
    if ids.ndim != ndim or (slots is not None and ids.shape[-1] != slots):
        one_sequence = ids.ndim == ndim - 1 and (slots is None or ids.shape[-1] == slots)
        extra = f' (for a single sequence add the batch dimension: {name}[None])' if one_sequence else ''
        raise ValueError(f'{name} must be {shape}, got shape {tuple(ids.shape)}{extra}')
    if ids.shape[0] == 0:
        raise ValueError(f'{name} is an empty batch (shape {tuple(ids.shape)}): pass at least one sequence')
    bad = (ids != pad_id) & ((ids < 0) | (ids >= vocab))
    if bool(bad.any()):
        raise ValueError(f'{name} must lie in [0, {vocab}) (or be pad_id={pad_id} for padding), found '
                         f'{int(ids[bad][0])}{hint}')
    return ids.long()


def check_wave(wave, *, name: str) -> Tensor:
    """Check a raw waveform ``(n,)``, ``(b, n)`` or ``(b, 1, n)`` handed to a tokenizer by a wrapper."""
    if torch.is_tensor(wave) and not (wave.ndim in (1, 2) or (wave.ndim == 3 and wave.shape[1] == 1)):
        raise ValueError(f'{name} must be a mono waveform (n,), (b, n) or (b, 1, n), got shape {tuple(wave.shape)}')
    return check_audio_values(wave, name = name)


def semantic_ids_from_wave(wav2vec, wave: Tensor, input_sample_hz: int | None = None) -> Tensor:
    """Run a semantic tokenizer without gradients -> ids ``(b, frames)``."""
    if not exists(wav2vec):
        raise ValueError('raw audio was given but no semantic tokenizer: pass wav2vec= to the wrapper, or token ids')
    check_wave(wave, name = 'raw audio for the semantic tokenizer')
    if exists(input_sample_hz) and input_sample_hz <= 0:
        raise ValueError(f'input_sample_hz must be a positive rate in Hz, got {input_sample_hz}')
    with torch.no_grad(), eval_mode(wav2vec):
        ids = wav2vec(wave, flatten = True, input_sample_hz = input_sample_hz)
    return ids.long()


@reference_compat('SemanticTransformerWrapper')
class SemanticTransformerWrapper(nn.Module):
    """Loss and generation for a ``SemanticTransformer``.

    Args:
        transformer: the model. wav2vec: semantic tokenizer (``SemanticTokenizer``), needed for raw audio.
        audio_conditioner: MuLaN-style conditioner (namespace ``'semantic'``). pad_id: padding id.
        unique_consecutive: collapse repeated ids. mask_prob: forgetful causal masking probability in training.
    """

    @beartype
    def __init__(self, *, transformer: SemanticTransformer, wav2vec = None,
                 audio_conditioner=None, pad_id: int = -1, unique_consecutive: bool = True,
                 mask_prob: float = 0.15):
        super().__init__()
        self.transformer, self.wav2vec, self.audio_conditioner = transformer, wav2vec, audio_conditioner
        self.pad_id, self.unique_consecutive, self.mask_prob = pad_id, unique_consecutive, mask_prob
        self.eos_id = transformer.eos_id
        if exists(audio_conditioner) and not transformer.audio_text_condition:
            raise ValueError('an audio_conditioner was given: build the SemanticTransformer with audio_text_condition=True')
        if exists(wav2vec) and wav2vec.codebook_size != transformer.num_semantic_tokens:
            raise ValueError(f'semantic tokenizer has {wav2vec.codebook_size} clusters but the transformer has '
                             f'num_semantic_tokens={transformer.num_semantic_tokens}: they must match')

    @property
    def device(self):
        return self.transformer.device

    def _check_ids(self, ids, name: str, allow_eos: bool) -> Tensor:
        vocab = self.transformer.num_semantic_tokens + int(allow_eos)
        return check_token_ids(ids, name = name, vocab = vocab, pad_id = self.pad_id,
                               hint = f' (num_semantic_tokens={self.transformer.num_semantic_tokens} must match the '
                                      'semantic tokenizer\'s codebook_size' + (f'; {vocab - 1} is EOS' if allow_eos else '')
                                      + ')')

    def _condition(self, *, text, text_embeds, wavs = None, batch_size = None):
        return resolve_condition(self.transformer.decoder, audio_conditioner = self.audio_conditioner,
                                 namespace = 'semantic', text = text, text_embeds = text_embeds,
                                 wavs = wavs if exists(self.audio_conditioner) else None,
                                 wavs_sample_hz = getattr(self.wav2vec, 'target_sample_hz', None), batch_size = batch_size)

    def forward(self, *, semantic_token_ids: Tensor | None = None, raw_wave: Tensor | None = None,
                text=None, text_embeds: Tensor | None = None, return_loss: bool = False,
                input_sample_hz: int | None = None, file_end: Tensor | bool | None = None, **kwargs):
        """Args:
            semantic_token_ids: ``(b, n)``, right-padded with ``pad_id`` (-1) — padding is never a target and
                has no effect on the loss or its gradient — or raw_wave ``(b, samples)``.
            file_end: ``(b,)`` bool (or one bool for the batch): True where the sequence ends at the real end of
                its file, so EOS is a target after its last real token; False for a crop that its file goes on
                after (no EOS target: a model trained on random crops must not learn to stop at crop ends).
                ``None`` = True (whole files). Rows with no real token never get an EOS target.
        Returns the cross-entropy loss (``return_loss``) or logits ``(b, n + 1, vocab)``.
        """
        if not exists(semantic_token_ids):
            if not exists(raw_wave):
                raise ValueError('pass semantic_token_ids=(b, n) or raw_wave=(b, samples)')
            semantic_token_ids = semantic_ids_from_wave(self.wav2vec, raw_wave, input_sample_hz)
        semantic_token_ids = self._check_ids(semantic_token_ids, 'semantic_token_ids', allow_eos = True)
        if return_loss and not bool((semantic_token_ids != self.pad_id).any()):
            raise ValueError('semantic_token_ids hold no tokens (every row is padding or empty): nothing to train on')
        text_embeds, text_mask = self._condition(text = text, text_embeds = text_embeds, wavs = raw_wave,
                                                 batch_size = semantic_token_ids.shape[0])

        ids = semantic_token_ids.long()
        if self.unique_consecutive:
            ids = batch_unique_consecutive(ids, self.pad_id)

        if not return_loss:
            return self.transformer(ids = ids, text_embeds = text_embeds, text_mask = text_mask, **kwargs)

        ends = file_end_mask(file_end, ids.shape[0], ids.device) & (lengths_from_padding(ids, self.pad_id) > 0)
        ids = append_eos(ids, self.eos_id, self.pad_id, where = ends)
        inputs, targets = ids[:, :-1], ids
        self_attn_mask = None
        if self.training and self.mask_prob > 0.:
            self_attn_mask = forgetful_causal_mask(inputs.shape, self.mask_prob, inputs.device)
        logits = self.transformer(ids = inputs, text_embeds = text_embeds, text_mask = text_mask,
                                  self_attn_mask = self_attn_mask, **kwargs)
        return F.cross_entropy(logits.transpose(1, 2), targets, ignore_index = self.pad_id)

    @torch.no_grad()
    def generate(self, *, max_length: int, text=None, text_embeds: Tensor | None = None,
                 prime_wave: Tensor | None = None, prime_wave_input_sample_hz: int | None = None,
                 prime_ids: Tensor | None = None, batch_size: int | None = None, cond_scale: float = 3.,
                 filter_thres: float = 0.9, temperature: float = 1., use_kv_cache: bool = True,
                 include_eos_in_output: bool = False, min_new_tokens: int = 0) -> Tensor:
        """Sample semantic ids.

        Returns ``(b, <= max_length)`` ids (primes included), padded with ``pad_id`` from the first EOS on
        (the EOS itself is kept only with ``include_eos_in_output``). ``min_new_tokens``: EOS is not sampled before
        this many tokens follow the prime. ``batch_size`` defaults to the number of conditions (texts or
        ``text_embeds``) or primes, else 1; one condition or prime is repeated over a larger batch.
        Runs to ``max_length`` unless EOS is sampled; a model trained with ``file_end`` (crops without EOS) samples
        it only where it predicts the real end of a recording.
        Sampling: ``temperature`` (<= 0: greedy), ``filter_thres`` (keep the top ``1 - filter_thres`` of ids),
        ``cond_scale`` (classifier-free guidance). The defaults 1.0 / 0.9 / 3.0 are audiolm-pytorch's; 1.0 is also
        MusicLM's semantic temperature (sources: ``lm.sampling.STAGE_SAMPLING_DEFAULTS``, which ``AudioLM`` uses).
        """
        if max_length < 1:
            raise ValueError(f'max_length must be >= 1 (semantic tokens to return, primes included), got {max_length}')
        if exists(batch_size) and batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        # a single condition is repeated over the batch (primes may set its size), like a single prime
        conditions = condition_batch_size(text, text_embeds)
        requested = batch_size if exists(batch_size) else (conditions if conditions != 1 else None)
        if exists(prime_wave):
            prime_ids = semantic_ids_from_wave(self.wav2vec, prime_wave, prime_wave_input_sample_hz)
        if exists(prime_ids):
            prime_ids = self._check_ids(prime_ids, 'prime_ids', allow_eos = False).to(self.device)
            if self.unique_consecutive:
                prime_ids = batch_unique_consecutive(prime_ids, self.pad_id)
            if prime_ids.shape[0] == 1 and exists(requested) and requested > 1:
                prime_ids = prime_ids.expand(requested, -1)
            if exists(requested) and prime_ids.shape[0] != requested:
                raise ValueError(f'{prime_ids.shape[0]} primes for a batch of {requested}: give one prime per sample '
                                 'or a single one for the whole batch')
            if (prime_ids == self.pad_id).any():
                raise ValueError('prime ids of different lengths are not supported; prime one length per call')
            batch_size = prime_ids.shape[0]
        else:
            batch_size = default(requested, 1)
            prime_ids = torch.empty(batch_size, 0, dtype = torch.long, device = self.device)

        text_embeds, text_mask = self._condition(text = text, text_embeds = text_embeds, batch_size = batch_size)

        ids, cache = prime_ids, None
        min_length = prime_ids.shape[1] + min_new_tokens
        finished = torch.zeros(ids.shape[0], dtype = torch.bool, device = self.device)
        with eval_mode(self.transformer):
            for _ in range(max(0, max_length - ids.shape[1])):
                logits, new_cache = self.transformer.forward_with_cond_scale(
                    ids = ids, text_embeds = text_embeds, text_mask = text_mask, cond_scale = cond_scale,
                    kv_cache = cache, return_kv_cache = True)
                cache = new_cache if use_kv_cache else None
                logits = logits[:, -1]
                if ids.shape[1] < min_length:
                    logits[:, self.eos_id] = float('-inf')
                sampled = sample_logits(logits, filter_thres = filter_thres, temperature = temperature)
                sampled = sampled.masked_fill(finished, self.eos_id)
                ids = torch.cat((ids, sampled[:, None]), dim = 1)
                finished |= sampled == self.eos_id
                if finished.all():
                    break

        ids = mask_after_eos(ids, self.eos_id, self.pad_id, include_eos = not include_eos_in_output)
        valid = (ids != self.pad_id).any(dim = 0)
        last = int(valid.nonzero().max()) + 1 if valid.any() else 0
        return ids[:, :last]
