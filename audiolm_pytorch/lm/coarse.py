"""Stage 2: coarse acoustic tokens conditioned on semantic tokens.

Sequence: ``[semantic start, semantic ids (+ EOS), coarse start, coarse codes flattened frame-major]``. Each
quantizer slot (``num_coarse_quantizers * rq_groups`` per frame, group-major like the codec) has its own
embedding range of ``codebook_size + 1`` ids (its codes and its EOS), so no two slots share an embedding. The
coarse EOS (id ``codebook_size``) is only allowed at a frame boundary (slot 0).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.lm.conditioning import DEFAULT_T5_NAME
from audiolm_pytorch.lm.sampling import (append_eos, batch_unique_consecutive, file_end_mask, forgetful_causal_mask,
                                         init_eos_bias, lengths_from_padding, sample_logits)
from audiolm_pytorch.lm.semantic import check_token_ids, check_wave, semantic_ids_from_wave
from audiolm_pytorch.lm.transformer import (DecoderCache, GuidanceMixin, aligned_prefix, resolve_condition,
                                            slot_logits, stage_decoder)
from audiolm_pytorch.utils import beartype, eval_mode, exists


# codec helpers shared by the coarse and fine wrappers

def check_codec(codec, *, codebook_size: int, num_quantizers_needed: int, rq_groups: int, stage: str):
    if codec.codebook_size != codebook_size:
        raise ValueError(f'codec codebook_size={codec.codebook_size} but the {stage} transformer has '
                         f'codebook_size={codebook_size}: they must match')
    if getattr(codec, 'rq_groups', 1) != rq_groups:
        raise ValueError(f'codec has rq_groups={codec.rq_groups} but the {stage} transformer has rq_groups={rq_groups}: '
                         'build the transformer with the same rq_groups')
    if codec.num_quantizers < num_quantizers_needed:
        raise ValueError(f'the {stage} transformer needs {num_quantizers_needed} quantizers per group but the codec '
                         f'has {codec.num_quantizers}')


def codec_codes(codec, wave: Tensor, *, start: int, stop: int, groups: int) -> Tensor:
    """Tokenize ``wave`` without gradients and keep quantizer levels ``[start, stop)`` of every group.
    Returns ``(b, frames, groups * (stop - start))``, group-major."""
    if not exists(codec):
        raise ValueError('raw audio was given but no codec: pass codec= to the wrapper, or token ids')
    check_wave(wave, name = 'raw audio for the codec')
    with torch.no_grad(), eval_mode(codec):   # tokenizing must not update the codec (k-means / EMA codebooks)
        codes = codec.tokenize(wave).long()
    codes = rearrange(codes, 'b n (g q) -> b n g q', g = groups)[..., start:stop]
    return rearrange(codes, 'b n g q -> b n (g q)')


def flat_code_prime(prime: Tensor, *, batch: int, slots: int, name: str, rows: str,
                    codebook_size: int | None = None) -> Tensor:
    """Check a code prime ``(1 | batch, frames, slots)`` and flatten it to ``(batch, frames * slots)``; a single
    prime is repeated over the batch. Padded primes (-1) are refused: they would be read as real codes."""
    if exists(codebook_size):   # integer codes in [0, codebook_size) (-1 passes here: refused below with its reason)
        prime = check_token_ids(prime, name = name, vocab = codebook_size, pad_id = -1, slots = slots)
    if prime.ndim != 3 or prime.shape[-1] != slots:
        raise ValueError(f'{name} must be (b, frames, {slots}), got {tuple(prime.shape)}')
    if prime.shape[0] == 1 and batch > 1:
        prime = prime.expand(batch, -1, -1)
    if prime.shape[0] != batch:
        raise ValueError(f'{prime.shape[0]} primes ({name}) for {batch} {rows}: give one prime per row or a single '
                         'one for the whole batch')
    if (prime < 0).any():
        raise ValueError(f'padded {name} (rows of different lengths) are not supported: they would be read as real '
                         'codes; prime rows of one length per call')
    return rearrange(prime, 'b n q -> b (n q)')


def decode_codes(codec, levels: Sequence[Tensor], *, groups: int) -> Tensor:
    """Join per-group levels (each ``(b, n, groups * q_i)``) into full codes, padding missing levels with -1
    (the codec treats them as absent), and decode -> ``(b, n * downsample_factor)``."""
    codes = torch.cat([rearrange(t, 'b n (g q) -> b n g q', g = groups) for t in levels], dim = -1)
    missing = codec.num_quantizers - codes.shape[-1]
    if missing > 0:
        codes = F.pad(codes, (0, missing), value = -1)
    codes = rearrange(codes, 'b n g q -> b n (g q)')
    with torch.no_grad(), eval_mode(codec):
        wave = codec.decode_from_codebook_indices(codes)
    return rearrange(wave, 'b 1 n -> b n') if wave.ndim == 3 else wave


@reference_compat('CoarseTransformer')
class CoarseTransformer(Checkpointable, GuidanceMixin, nn.Module):
    """Coarse acoustic token model.

    Args:
        num_semantic_tokens: semantic vocabulary. codebook_size: codec codebook size.
        num_coarse_quantizers: coarse levels per group. rq_groups: codec quantizer groups.
        dim, depth, ...: as ``SemanticTransformer``.
    """

    # checkpoints of versions <= 0.1.0 hold one key/value head per query head
    legacy_defaults = dict(attn_kv_heads = None)

    def __init__(self, *, num_semantic_tokens: int, codebook_size: int, num_coarse_quantizers: int, dim: int,
                 depth: int, rq_groups: int = 1, heads: int = 8, dim_head: int = 64, ff_mult: float = 4.,
                 attn_dropout: float = 0., ff_dropout: float = 0., grad_shrink_alpha: float = 0.1,
                 t5_name: str = DEFAULT_T5_NAME, cond_dim: int | None = None, has_condition: bool = False,
                 audio_text_condition: bool = False, cond_as_self_attn_prefix: bool = False,
                 cond_drop_prob: float = 0.5, flash_attn: bool = True, rel_pos_bias: bool = True,
                 attn_kv_heads: int | None = 1):
        super().__init__()
        self.num_semantic_tokens, self.codebook_size = num_semantic_tokens, codebook_size
        self.num_coarse_quantizers, self.rq_groups = num_coarse_quantizers, rq_groups
        self.num_slots = num_coarse_quantizers * rq_groups
        self.semantic_eos_id, self.eos_id = num_semantic_tokens, codebook_size
        self.audio_text_condition = audio_text_condition

        self.semantic_start = nn.Parameter(torch.randn(dim) * 0.02)
        self.coarse_start = nn.Parameter(torch.randn(dim) * 0.02)
        self.semantic_embedding = nn.Embedding(num_semantic_tokens + 1, dim)
        self.coarse_embedding = nn.Embedding(self.num_slots * (codebook_size + 1), dim)
        self.register_buffer('slot_offsets', torch.arange(self.num_slots) * (codebook_size + 1), persistent = False)
        self.decoder = stage_decoder(
            dim = dim, depth = depth, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
            ff_dropout = ff_dropout, ff_mult = ff_mult, grad_shrink_alpha = grad_shrink_alpha, t5_name = t5_name,
            cond_dim = cond_dim, has_condition = has_condition, audio_text_condition = audio_text_condition,
            cond_as_self_attn_prefix = cond_as_self_attn_prefix, cond_drop_prob = cond_drop_prob,
            attn_kv_heads = attn_kv_heads)
        self.semantic_head = nn.Linear(dim, num_semantic_tokens + 1)
        self.coarse_head_weight = nn.Parameter(torch.randn(self.num_slots, dim, codebook_size + 1) * dim ** -0.5)
        self.coarse_head_bias = nn.Parameter(torch.zeros(self.num_slots, codebook_size + 1))
        init_eos_bias(self.semantic_head.bias, self.semantic_eos_id, num_semantic_tokens)
        init_eos_bias(self.coarse_head_bias, self.eos_id, codebook_size)   # EOS is only sampled at slot 0

    @property
    def device(self):
        return self.coarse_start.device

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        return self.decoder.embed_text(texts)[0]

    def forward(self, *, semantic_token_ids: Tensor, coarse_token_ids: Tensor, text=None,
                text_embeds: Tensor | None = None, text_mask: Tensor | None = None,
                self_attn_mask: Tensor | None = None, cond_drop_prob: float | None = None,
                drop_cond: Tensor | None = None, kv_cache: DecoderCache | None = None,
                return_kv_cache: bool = False, return_only_coarse_logits: bool = False):
        """Args:
            semantic_token_ids: ``(b, s)`` (padding ``< 0`` allowed at the end of each row).
            coarse_token_ids: ``(b, n, Q)`` or flattened ``(b, m)`` (a partial last frame is allowed).
            self_attn_mask: ``(b, m + 1)`` key keep-mask for the coarse part (forgetful causal masking).
        Returns ``(semantic_logits (b, s, S + 1), coarse_logits (b, m + 1, K + 1))``: ``semantic_logits[:, i]``
        predicts ``semantic_token_ids[:, i]``, ``coarse_logits[:, j]`` predicts flat coarse token ``j``.
        With a ``kv_cache`` only the uncached coarse positions are returned (semantic logits ``None``).
        """
        batch = semantic_token_ids.shape[0]
        coarse = coarse_token_ids if coarse_token_ids.ndim == 2 else rearrange(coarse_token_ids, 'b n q -> b (n q)')
        m = coarse.shape[1]
        coarse_keep = self_attn_mask.bool() if exists(self_attn_mask) else None

        sem_keep = F.pad(semantic_token_ids >= 0, (1, 0), value = True)
        prefix_len = sem_keep.shape[1]
        semantic_logits = None

        if exists(kv_cache):
            start = kv_cache.length - prefix_len          # coarse-part position; position p > 0 holds flat p - 1
            new = coarse[:, max(start - 1, 0):]
            slots = torch.arange(max(start - 1, 0), m, device = coarse.device) % self.num_slots
            coarse_tokens = self.coarse_embedding(new.clamp(min = 0) + self.slot_offsets[slots])
            if start == 0:
                coarse_tokens = torch.cat((self.coarse_start.expand(batch, 1, -1), coarse_tokens), dim = 1)
            hidden, cache = self.decoder(coarse_tokens, key_mask = coarse_keep[:, start:] if exists(coarse_keep) else None,
                                         cache = kv_cache, return_cache = return_kv_cache)
            first = start
        else:
            slots = torch.arange(m, device = coarse.device) % self.num_slots
            coarse_tokens = self.coarse_embedding(coarse.clamp(min = 0) + self.slot_offsets[slots])
            coarse_tokens = torch.cat((self.coarse_start.expand(batch, 1, -1), coarse_tokens), dim = 1)
            coarse_keep = coarse_keep if exists(coarse_keep) else torch.ones(
                batch, m + 1, dtype = torch.bool, device = coarse.device)
            sem_tokens = self.semantic_embedding(semantic_token_ids.clamp(min = 0))
            sem_tokens = torch.cat((self.semantic_start.expand(batch, 1, -1), sem_tokens), dim = 1)
            sem_tokens, sem_keep, where = aligned_prefix(sem_tokens, sem_keep)
            tokens = torch.cat((sem_tokens, coarse_tokens), dim = 1)
            hidden, cache = self.decoder(
                tokens, text = text, text_embeds = text_embeds, text_mask = text_mask,
                cond_drop_prob = cond_drop_prob, drop_cond = drop_cond,
                key_mask = torch.cat((sem_keep, coarse_keep), dim = 1), return_cache = return_kv_cache)
            if not return_only_coarse_logits:
                sem_hidden = hidden[:, :prefix_len].gather(1, where[:, :-1, None].expand(-1, -1, hidden.shape[-1]))
                semantic_logits = self.semantic_head(sem_hidden)
            hidden = hidden[:, prefix_len:]
            first = 0

        coarse_logits = slot_logits(hidden, self.coarse_head_weight, self.coarse_head_bias,
                                    first_slot = first % self.num_slots)
        out = coarse_logits if return_only_coarse_logits else (semantic_logits, coarse_logits)
        return (out, cache) if return_kv_cache else out


@reference_compat('CoarseTransformerWrapper')
class CoarseTransformerWrapper(nn.Module):
    """Loss and generation for a ``CoarseTransformer``.

    Args:
        transformer, codec (``Codec``), wav2vec (``SemanticTokenizer``), audio_conditioner (namespace
        ``'coarse'``), pad_id, unique_consecutive (semantic ids), semantic_cross_entropy_loss_weight, mask_prob.
    """

    @beartype
    def __init__(self, *, transformer: CoarseTransformer, codec = None, wav2vec = None, audio_conditioner = None,
                 pad_id: int = -1, unique_consecutive: bool = True, semantic_cross_entropy_loss_weight: float = 1.,
                 mask_prob: float = 0.15):
        super().__init__()
        self.transformer, self.codec, self.wav2vec, self.audio_conditioner = transformer, codec, wav2vec, audio_conditioner
        self.pad_id, self.unique_consecutive, self.mask_prob = pad_id, unique_consecutive, mask_prob
        self.semantic_cross_entropy_loss_weight = semantic_cross_entropy_loss_weight
        t = transformer
        if exists(codec):
            check_codec(codec, codebook_size = t.codebook_size, num_quantizers_needed = t.num_coarse_quantizers,
                        rq_groups = t.rq_groups, stage = 'coarse')
        if exists(wav2vec) and wav2vec.codebook_size != t.num_semantic_tokens:
            raise ValueError(f'semantic tokenizer has {wav2vec.codebook_size} clusters but the coarse transformer has '
                             f'num_semantic_tokens={t.num_semantic_tokens}')
        if exists(audio_conditioner) and not t.audio_text_condition:
            raise ValueError('an audio_conditioner was given: build the CoarseTransformer with audio_text_condition=True')

    @property
    def device(self):
        return self.transformer.device

    def _check_semantic(self, ids, name: str = 'semantic_token_ids') -> Tensor:
        t = self.transformer
        return check_token_ids(ids, name = name, vocab = t.num_semantic_tokens + 1, pad_id = self.pad_id,
                               hint = f' (num_semantic_tokens={t.num_semantic_tokens} must match the semantic '
                                      f'tokenizer\'s codebook_size; {t.num_semantic_tokens} is EOS)')

    def _check_coarse(self, ids, name: str = 'coarse_token_ids') -> Tensor:
        t = self.transformer
        return check_token_ids(ids, name = name, vocab = t.codebook_size, pad_id = self.pad_id, slots = t.num_slots,
                               hint = f' (codebook_size={t.codebook_size} must match the codec\'s)')

    def _semantic(self, ids: Tensor) -> Tensor:
        ids = ids.long()
        if self.unique_consecutive:
            ids = batch_unique_consecutive(ids, self.pad_id)
        return append_eos(ids, self.transformer.semantic_eos_id, self.pad_id)

    def forward(self, *, semantic_token_ids: Tensor | None = None, raw_wave: Tensor | None = None,
                raw_wave_for_codec: Tensor | None = None, text=None, text_embeds: Tensor | None = None,
                coarse_token_ids: Tensor | None = None, return_loss: bool = False,
                file_end: Tensor | bool | None = None, **kwargs):
        """Args: semantic_token_ids ``(b, s)``, coarse_token_ids ``(b, n, Q)`` (both right-padded with ``pad_id``,
        -1: padding is never a target and has no effect on the loss or its gradient), or raw_wave ``(b, samples)``
        (at the semantic tokenizer's rate; ``raw_wave_for_codec`` at the codec's, defaulting to ``raw_wave``).
        file_end: ``(b,)`` bool (or one bool): True where the clip ends at the real end of its file, so the
        semantic EOS (after the last semantic id) and the coarse EOS (after the last real frame) are targets;
        False for a crop that its file goes on after — no EOS target, so a model trained on random crops does
        not learn to stop at crop ends (the semantic EOS still closes the semantic prefix as an input, as in
        generation). ``None`` = True (whole files).
        Returns the loss (``return_loss``) or ``(semantic_logits, coarse_logits)``."""
        t = self.transformer
        if not exists(semantic_token_ids):
            if not exists(raw_wave):
                raise ValueError('pass semantic_token_ids or raw_wave')
            semantic_token_ids = semantic_ids_from_wave(self.wav2vec, raw_wave)
        if not exists(coarse_token_ids):
            wave = raw_wave_for_codec if exists(raw_wave_for_codec) else raw_wave
            if not exists(wave):
                raise ValueError('pass coarse_token_ids or raw_wave / raw_wave_for_codec')
            coarse_token_ids = codec_codes(self.codec, wave, start = 0, stop = t.num_coarse_quantizers, groups = t.rq_groups)
        semantic_token_ids = self._check_semantic(semantic_token_ids)
        coarse_token_ids = self._check_coarse(coarse_token_ids)
        if semantic_token_ids.shape[0] != coarse_token_ids.shape[0]:
            raise ValueError(f'semantic_token_ids has {semantic_token_ids.shape[0]} rows but coarse_token_ids '
                             f'{coarse_token_ids.shape[0]}: give one row of each per sample')

        # the audio condition: the wave at the semantic tokenizer's rate, else the one at the codec's (rate said)
        cond_wave, cond_hz = (raw_wave, getattr(self.wav2vec, 'target_sample_hz', None)) if exists(raw_wave) else \
            (raw_wave_for_codec, getattr(self.codec, 'target_sample_hz', None))
        text_embeds, text_mask = resolve_condition(
            t.decoder, audio_conditioner = self.audio_conditioner, namespace = 'coarse', text = text,
            text_embeds = text_embeds, wavs = cond_wave if exists(self.audio_conditioner) else None,
            wavs_sample_hz = cond_hz, batch_size = coarse_token_ids.shape[0])
        semantic = self._semantic(semantic_token_ids)
        coarse = coarse_token_ids.long()

        if not return_loss:
            return t(semantic_token_ids = semantic, coarse_token_ids = coarse, text_embeds = text_embeds,
                     text_mask = text_mask, **kwargs)

        # targets: flat coarse codes with EOS at the first padded frame (slot 0) where the clip ends its file
        lengths = lengths_from_padding(coarse, self.pad_id)
        ends = file_end_mask(file_end, coarse.shape[0], coarse.device) & (lengths > 0)
        flat = F.pad(rearrange(coarse, 'b n q -> b (n q)'), (0, t.num_slots), value = self.pad_id)
        flat = flat.scatter(1, (lengths * t.num_slots)[:, None], torch.where(ends, t.eos_id, self.pad_id)[:, None])
        m = coarse.shape[1] * t.num_slots
        inputs, targets = flat[:, :m], flat[:, :m + 1]
        # the semantic EOS stays in the prefix (it closes it, as in generation) but is a target only at a file end
        is_sem_eos = semantic == t.semantic_eos_id
        sem_ends = file_end_mask(file_end, semantic.shape[0], semantic.device) & \
            ((semantic != self.pad_id) & ~is_sem_eos).any(dim = -1)
        sem_targets = semantic.masked_fill(is_sem_eos & ~sem_ends[:, None], self.pad_id)

        self_attn_mask = None
        if self.training and self.mask_prob > 0.:
            self_attn_mask = forgetful_causal_mask((inputs.shape[0], m + 1), self.mask_prob, inputs.device)
        semantic_logits, coarse_logits = t(
            semantic_token_ids = semantic, coarse_token_ids = inputs, text_embeds = text_embeds,
            text_mask = text_mask, self_attn_mask = self_attn_mask, **kwargs)

        sem_loss = F.cross_entropy(semantic_logits.transpose(1, 2), sem_targets, ignore_index = self.pad_id, reduction = 'sum')
        coarse_loss = F.cross_entropy(coarse_logits.transpose(1, 2), targets, ignore_index = self.pad_id, reduction = 'sum')
        w = self.semantic_cross_entropy_loss_weight
        num_sem, num_coarse = (sem_targets != self.pad_id).sum(), (targets != self.pad_id).sum()
        return (sem_loss * w + coarse_loss) / (num_sem * w + num_coarse).clamp(min = 1)

    @torch.no_grad()
    def generate(self, *, semantic_token_ids: Tensor, prime_wave: Tensor | None = None,
                 prime_coarse_token_ids: Tensor | None = None, text=None, text_embeds: Tensor | None = None,
                 max_time_steps: int = 512, cond_scale: float = 3., filter_thres: float = 0.9,
                 temperature: float = 1., reconstruct_wave: bool = False, use_kv_cache: bool = True,
                 min_new_time_steps: int = 0):
        """Sample coarse codes for ``semantic_token_ids (b, s)`` (right-padded with ``pad_id``; the full
        semantic sequence, primes included). ``min_new_time_steps``: EOS is not sampled before this many frames
        follow the prime.

        Returns ``(b, T, Q)`` codes (prime frames included, ``T <= max_time_steps``), frames from a row's EOS on
        filled with ``pad_id``; with ``reconstruct_wave`` the coarse-only audio ``(b, T * hop)``, or a list of
        1-D waves when rows end at different frames. A model trained with ``file_end`` (crops without EOS) runs to
        ``max_time_steps`` unless it predicts the real end of a recording.
        Sampling defaults (temperature 1.0, filter_thres 0.9, cond_scale 3.0) are audiolm-pytorch's; MusicLM
        samples this stage at temperature 0.95, which ``AudioLM`` uses (``lm.sampling.STAGE_SAMPLING_DEFAULTS``).
        """
        t = self.transformer
        if max_time_steps < 1:
            raise ValueError(f'max_time_steps must be >= 1, got {max_time_steps}')
        semantic_token_ids = self._check_semantic(semantic_token_ids)
        if (semantic_token_ids != self.pad_id).sum(dim = -1).min() == 0:
            raise ValueError(f'semantic_token_ids must be (b, s) with at least one semantic token per row, got '
                             f'shape {tuple(semantic_token_ids.shape)}: there is nothing to condition the coarse codes on')
        semantic = self._semantic(semantic_token_ids.to(self.device))
        batch = semantic.shape[0]
        if exists(prime_wave):
            prime_coarse_token_ids = codec_codes(self.codec, prime_wave.to(self.device), start = 0,
                                                 stop = t.num_coarse_quantizers, groups = t.rq_groups)
        if exists(prime_coarse_token_ids):
            flat = flat_code_prime(prime_coarse_token_ids.to(self.device), batch = batch, slots = t.num_slots,
                                   name = 'prime_coarse_token_ids', rows = 'semantic rows',
                                   codebook_size = t.codebook_size)
        else:
            flat = torch.empty(batch, 0, dtype = torch.long, device = self.device)

        text_embeds, text_mask = resolve_condition(t.decoder, audio_conditioner = self.audio_conditioner,
                                                   namespace = 'coarse', text = text, text_embeds = text_embeds,
                                                   batch_size = batch)
        lengths = torch.full((batch,), max_time_steps, device = self.device)
        finished = torch.zeros(batch, dtype = torch.bool, device = self.device)
        cache = None
        min_frames = flat.shape[1] // t.num_slots + min_new_time_steps
        with eval_mode(t):
            for index in range(flat.shape[1], max_time_steps * t.num_slots):
                slot = index % t.num_slots
                logits, new_cache = t.forward_with_cond_scale(
                    semantic_token_ids = semantic, coarse_token_ids = flat, text_embeds = text_embeds,
                    text_mask = text_mask, cond_scale = cond_scale, kv_cache = cache, return_kv_cache = True,
                    return_only_coarse_logits = True)
                cache = new_cache if use_kv_cache else None
                logits = logits[:, -1]
                if slot != 0 or index // t.num_slots < min_frames:
                    logits[:, t.eos_id] = float('-inf')   # EOS only at a frame boundary, after min_new_time_steps
                sampled = sample_logits(logits, filter_thres = filter_thres, temperature = temperature)
                if slot == 0:
                    newly = (sampled == t.eos_id) & ~finished
                    lengths = torch.where(newly, torch.full_like(lengths, index // t.num_slots), lengths)
                    finished |= newly
                    if finished.all():
                        break
                sampled = sampled.masked_fill(finished, t.eos_id if slot == 0 else 0)
                flat = torch.cat((flat, sampled[:, None]), dim = 1)

        frames = min(flat.shape[1] // t.num_slots, max_time_steps)
        codes = rearrange(flat[:, :frames * t.num_slots], 'b (n q) -> b n q', q = t.num_slots)
        codes = codes.masked_fill(torch.arange(frames, device = self.device)[None, :, None] >= lengths[:, None, None], self.pad_id)
        if not reconstruct_wave:
            return codes
        if not exists(self.codec):
            raise ValueError('reconstruct_wave=True needs a codec')
        return waves_from_codes(self.codec, [codes], lengths.clamp(max = frames), groups = t.rq_groups)


def waves_from_codes(codec, levels: Sequence[Tensor], lengths: Tensor, *, groups: int):
    """Decode per-row valid frames; a tensor ``(b, n)`` when all rows have the same length, else a list."""
    hop = codec.downsample_factor
    if bool((lengths == lengths[0]).all()):
        n = int(lengths[0])
        return decode_codes(codec, [lv[:, :n] for lv in levels], groups = groups)[:, :n * hop]
    return [decode_codes(codec, [lv[i:i + 1, :int(n)] for lv in levels], groups = groups)[0, :int(n) * hop]
            for i, n in enumerate(lengths)]
