"""Stage 3: fine acoustic tokens conditioned on the coarse ones.

Sequence: ``[start, coarse codes flattened (n * Qc), fine codes flattened (n * Qf)]`` (frame-major, slots
group-major like the codec), each slot with its own embedding range and output head.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.lm.coarse import check_codec, codec_codes, flat_code_prime, waves_from_codes
from audiolm_pytorch.lm.semantic import check_token_ids
from audiolm_pytorch.lm.conditioning import DEFAULT_T5_NAME
from audiolm_pytorch.lm.sampling import file_end_mask, forgetful_causal_mask, lengths_from_padding, sample_logits
from audiolm_pytorch.lm.transformer import (DecoderCache, GuidanceMixin, aligned_prefix, resolve_condition,
                                            slot_logits, stage_decoder)
from audiolm_pytorch.utils import beartype, eval_mode, exists


@reference_compat('FineTransformer')
class FineTransformer(Checkpointable, GuidanceMixin, nn.Module):
    """Fine acoustic token model.

    Args:
        num_coarse_quantizers, num_fine_quantizers: levels per group. codebook_size: codec codebook size.
        rq_groups: codec quantizer groups. dim, depth, ...: as ``SemanticTransformer``.
    """

    # checkpoints of versions <= 0.1.0 hold one key/value head per query head
    legacy_defaults = dict(attn_kv_heads = None)

    def __init__(self, *, num_coarse_quantizers: int, num_fine_quantizers: int, codebook_size: int, dim: int,
                 depth: int, rq_groups: int = 1, heads: int = 8, dim_head: int = 64, ff_mult: float = 4.,
                 attn_dropout: float = 0., ff_dropout: float = 0., grad_shrink_alpha: float = 0.1,
                 t5_name: str = DEFAULT_T5_NAME, cond_dim: int | None = None, has_condition: bool = False,
                 audio_text_condition: bool = False, cond_as_self_attn_prefix: bool = False,
                 cond_drop_prob: float = 0.5, flash_attn: bool = True, rel_pos_bias: bool = True,
                 attn_kv_heads: int | None = 1):
        super().__init__()
        self.num_coarse_quantizers, self.num_fine_quantizers = num_coarse_quantizers, num_fine_quantizers
        self.codebook_size, self.rq_groups = codebook_size, rq_groups
        self.coarse_slots, self.fine_slots = num_coarse_quantizers * rq_groups, num_fine_quantizers * rq_groups
        self.audio_text_condition = audio_text_condition

        self.start_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.embedding = nn.Embedding((self.coarse_slots + self.fine_slots) * codebook_size, dim)
        self.register_buffer('coarse_offsets', torch.arange(self.coarse_slots) * codebook_size, persistent = False)
        self.register_buffer('fine_offsets', (torch.arange(self.fine_slots) + self.coarse_slots) * codebook_size,
                             persistent = False)
        self.decoder = stage_decoder(
            dim = dim, depth = depth, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
            ff_dropout = ff_dropout, ff_mult = ff_mult, grad_shrink_alpha = grad_shrink_alpha, t5_name = t5_name,
            cond_dim = cond_dim, has_condition = has_condition, audio_text_condition = audio_text_condition,
            cond_as_self_attn_prefix = cond_as_self_attn_prefix, cond_drop_prob = cond_drop_prob,
            attn_kv_heads = attn_kv_heads)
        scale = dim ** -0.5
        self.coarse_head_weight = nn.Parameter(torch.randn(self.coarse_slots, dim, codebook_size) * scale)
        self.coarse_head_bias = nn.Parameter(torch.zeros(self.coarse_slots, codebook_size))
        self.fine_head_weight = nn.Parameter(torch.randn(self.fine_slots, dim, codebook_size) * scale)
        self.fine_head_bias = nn.Parameter(torch.zeros(self.fine_slots, codebook_size))

    @property
    def device(self):
        return self.start_token.device

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        return self.decoder.embed_text(texts)[0]

    def _embed(self, ids: Tensor, offsets: Tensor, start: int = 0) -> Tensor:
        """Embed flat ids whose first entry is flat position ``start`` (slots cycle with the position)."""
        slots = torch.arange(start, start + ids.shape[1], device = ids.device) % offsets.shape[0]
        return self.embedding(ids.clamp(min = 0) + offsets[slots])

    def forward(self, *, coarse_token_ids: Tensor, fine_token_ids: Tensor, text=None,
                text_embeds: Tensor | None = None, text_mask: Tensor | None = None,
                self_attn_mask: Tensor | None = None, cond_drop_prob: float | None = None,
                drop_cond: Tensor | None = None, kv_cache: DecoderCache | None = None,
                return_kv_cache: bool = False, return_only_fine_logits: bool = False):
        """Args:
            coarse_token_ids: ``(b, n, Qc)`` (padding frames ``< 0`` allowed at the end).
            fine_token_ids: ``(b, n', Qf)`` or flattened ``(b, m)``, ``m <= n * Qf``.
            self_attn_mask: ``(b, m)`` key keep-mask over the fine tokens (forgetful causal masking).
        Returns ``(coarse_logits (b, n * Qc, K), fine_logits (b, m + 1, K))``: ``coarse_logits[:, j]`` predicts
        flat coarse token ``j``; ``fine_logits[:, j]`` predicts flat fine token ``j``. With a ``kv_cache`` only
        the uncached fine positions are returned (coarse logits ``None``).
        """
        batch = coarse_token_ids.shape[0]
        coarse = rearrange(coarse_token_ids, 'b n q -> b (n q)')
        fine = fine_token_ids if fine_token_ids.ndim == 2 else rearrange(fine_token_ids, 'b n q -> b (n q)')
        m = fine.shape[1]
        fine_keep = self_attn_mask.bool() if exists(self_attn_mask) else None
        prefix_len = coarse.shape[1] + 1
        coarse_logits = None

        if exists(kv_cache):
            start = kv_cache.length - prefix_len
            # the last prefix position (the last coarse token) predicted fine token 0: it is cached already
            hidden, cache = self.decoder(self._embed(fine[:, start:], self.fine_offsets, start),
                                         key_mask = fine_keep[:, start:] if exists(fine_keep) else None,
                                         cache = kv_cache, return_cache = return_kv_cache)
            first = start + 1
        else:
            fine_tokens = self._embed(fine, self.fine_offsets)
            fine_keep = fine_keep if exists(fine_keep) else torch.ones(batch, m, dtype = torch.bool, device = fine.device)
            prefix = torch.cat((self.start_token.expand(batch, 1, -1), self._embed(coarse, self.coarse_offsets)), dim = 1)
            prefix_keep = F.pad(coarse >= 0, (1, 0), value = True)
            prefix, prefix_keep, where = aligned_prefix(prefix, prefix_keep)
            hidden, cache = self.decoder(
                torch.cat((prefix, fine_tokens), dim = 1), text = text, text_embeds = text_embeds,
                text_mask = text_mask, cond_drop_prob = cond_drop_prob, drop_cond = drop_cond,
                key_mask = torch.cat((prefix_keep, fine_keep), dim = 1), return_cache = return_kv_cache)
            if not return_only_fine_logits:
                coarse_hidden = hidden[:, :prefix_len].gather(1, where[:, :-1, None].expand(-1, -1, hidden.shape[-1]))
                coarse_logits = slot_logits(coarse_hidden, self.coarse_head_weight, self.coarse_head_bias)
            hidden = hidden[:, prefix_len - 1:]
            first = 0

        fine_logits = slot_logits(hidden, self.fine_head_weight, self.fine_head_bias,
                                  first_slot = first % self.fine_slots)
        out = fine_logits if return_only_fine_logits else (coarse_logits, fine_logits)
        return (out, cache) if return_kv_cache else out


@reference_compat('FineTransformerWrapper')
class FineTransformerWrapper(nn.Module):
    """Loss and generation for a ``FineTransformer``.

    Args:
        transformer, codec (``Codec``; ``soundstream=`` is accepted as an alias), audio_conditioner (namespace
        ``'fine'``), coarse_cross_entropy_loss_weight, pad_id, mask_prob.
    """

    @beartype
    def __init__(self, *, transformer: FineTransformer, codec = None, soundstream = None, audio_conditioner = None,
                 coarse_cross_entropy_loss_weight: float = 1., pad_id: int = -1, mask_prob: float = 0.15):
        super().__init__()
        if exists(codec) and exists(soundstream) and codec is not soundstream:
            raise ValueError('pass the codec once: codec= or soundstream=, not both')
        codec = codec if exists(codec) else soundstream
        self.transformer, self.codec, self.audio_conditioner = transformer, codec, audio_conditioner
        self.coarse_cross_entropy_loss_weight, self.pad_id, self.mask_prob = coarse_cross_entropy_loss_weight, pad_id, mask_prob
        t = transformer
        if exists(codec):
            check_codec(codec, codebook_size = t.codebook_size, rq_groups = t.rq_groups, stage = 'fine',
                        num_quantizers_needed = t.num_coarse_quantizers + t.num_fine_quantizers)
        if exists(audio_conditioner) and not t.audio_text_condition:
            raise ValueError('an audio_conditioner was given: build the FineTransformer with audio_text_condition=True')

    @property
    def device(self):
        return self.transformer.device

    def _check_codes(self, ids, name: str, slots: int) -> Tensor:
        size = self.transformer.codebook_size
        return check_token_ids(ids, name = name, vocab = size, pad_id = self.pad_id, slots = slots,
                               hint = f' (codebook_size={size} must match the codec\'s)')

    def forward(self, *, raw_wave: Tensor | None = None, token_ids: Tensor | None = None,
                coarse_token_ids: Tensor | None = None, fine_token_ids: Tensor | None = None, text=None,
                text_embeds: Tensor | None = None, return_loss: bool = False,
                file_end: Tensor | bool | None = None, **kwargs):
        """Args: ``raw_wave (b, samples)`` at the codec's rate, or ``token_ids (b, n, Q)`` (all codec levels), or
        ``coarse_token_ids (b, n, Qc)`` + ``fine_token_ids (b, n, Qf)``. Frames padded with ``pad_id`` (-1, at
        any level) are never targets and have no effect on the loss or its gradient.
        file_end: accepted like the other stages' (``(b,)`` bool, a bool or None) and checked; the fine stage
        has no EOS (it fills exactly the frames of its coarse codes), so it changes nothing.
        Returns the loss (``return_loss``) or ``(coarse_logits, fine_logits)``."""
        t = self.transformer
        if not exists(coarse_token_ids) or not exists(fine_token_ids):
            if not exists(token_ids):
                if not exists(raw_wave):
                    raise ValueError('pass raw_wave, token_ids, or coarse_token_ids and fine_token_ids')
                if not exists(self.codec):
                    raise ValueError('raw audio was given but no codec: pass codec= to the wrapper, or token ids')
                token_ids = codec_codes(self.codec, raw_wave, start = 0, stop = self.codec.num_quantizers,
                                        groups = t.rq_groups)
            qc, qf = t.num_coarse_quantizers, t.num_fine_quantizers
            levels = token_ids.shape[-1] if torch.is_tensor(token_ids) and token_ids.ndim == 3 else 0
            if levels % t.rq_groups or levels // t.rq_groups < qc + qf:
                raise ValueError(f'token_ids must be (b, frames, rq_groups * levels) with at least {qc + qf} levels per '
                                 f'group ({t.rq_groups} group(s): {qc} coarse + {qf} fine), got shape '
                                 f'{tuple(getattr(token_ids, "shape", ()))}')
            token_ids = self._check_codes(token_ids, 'token_ids', levels)
            grouped = rearrange(token_ids, 'b n (g q) -> b n g q', g = t.rq_groups)
            coarse_token_ids = rearrange(grouped[..., :qc], 'b n g q -> b n (g q)')
            fine_token_ids = rearrange(grouped[..., qc:qc + qf], 'b n g q -> b n (g q)')
        coarse = self._check_codes(coarse_token_ids, 'coarse_token_ids', t.coarse_slots)
        fine = self._check_codes(fine_token_ids, 'fine_token_ids', t.fine_slots)
        file_end_mask(file_end, coarse.shape[0], coarse.device)   # checked only: no EOS in the fine stage
        if coarse.shape[:2] != fine.shape[:2]:
            raise ValueError(f'expected coarse (b, n, {t.coarse_slots}) and fine (b, n, {t.fine_slots}) codes with the '
                             f'same batch and frames, got {tuple(coarse.shape)} and {tuple(fine.shape)}')

        text_embeds, text_mask = resolve_condition(
            t.decoder, audio_conditioner = self.audio_conditioner, namespace = 'fine', text = text,
            text_embeds = text_embeds, wavs = raw_wave if exists(self.audio_conditioner) else None,
            wavs_sample_hz = getattr(self.codec, 'target_sample_hz', None), batch_size = coarse.shape[0])
        if not return_loss:
            return t(coarse_token_ids = coarse, fine_token_ids = fine, text_embeds = text_embeds,
                     text_mask = text_mask, **kwargs)

        # padded frames (either level) are ignored as targets
        pad_frames = (coarse == self.pad_id).any(dim = -1) | (fine == self.pad_id).any(dim = -1)
        coarse = coarse.masked_fill(pad_frames[..., None], self.pad_id)
        fine_targets = rearrange(fine.masked_fill(pad_frames[..., None], self.pad_id), 'b n q -> b (n q)')
        inputs = fine_targets[:, :-1]
        self_attn_mask = None
        if self.training and self.mask_prob > 0.:
            self_attn_mask = forgetful_causal_mask(inputs.shape, self.mask_prob, inputs.device)
        coarse_logits, fine_logits = t(coarse_token_ids = coarse, fine_token_ids = inputs, text_embeds = text_embeds,
                                       text_mask = text_mask, self_attn_mask = self_attn_mask, **kwargs)

        coarse_targets = rearrange(coarse, 'b n q -> b (n q)')
        coarse_loss = F.cross_entropy(coarse_logits.transpose(1, 2), coarse_targets, ignore_index = self.pad_id, reduction = 'sum')
        fine_loss = F.cross_entropy(fine_logits.transpose(1, 2), fine_targets, ignore_index = self.pad_id, reduction = 'sum')
        w = self.coarse_cross_entropy_loss_weight
        num_coarse, num_fine = (coarse_targets != self.pad_id).sum(), (fine_targets != self.pad_id).sum()
        return (coarse_loss * w + fine_loss) / (num_coarse * w + num_fine).clamp(min = 1)

    @torch.no_grad()
    def generate(self, *, coarse_token_ids: Tensor, prime_wave: Tensor | None = None,
                 prime_fine_token_ids: Tensor | None = None, text=None, text_embeds: Tensor | None = None,
                 cond_scale: float = 3., filter_thres: float = 0.9, temperature: float = 1.,
                 reconstruct_wave: bool = False, use_kv_cache: bool = True,
                 mask_out_generated_fine_tokens: bool = False):
        """Sample fine codes for ``coarse_token_ids (b, n, Qc)`` (frames from a row's end padded with ``pad_id``).

        Returns ``(b, n, Qf)`` fine codes (``pad_id`` on padded frames; generated ones too with
        ``mask_out_generated_fine_tokens``), or with ``reconstruct_wave`` the audio ``(b, n * hop)`` decoded from
        coarse + fine codes (a list of 1-D waves when rows have different lengths).
        Sampling defaults (temperature 1.0, filter_thres 0.9, cond_scale 3.0) are audiolm-pytorch's; MusicLM
        samples this stage at temperature 0.4, which ``AudioLM`` uses (``lm.sampling.STAGE_SAMPLING_DEFAULTS``).
        """
        t = self.transformer
        coarse = self._check_codes(coarse_token_ids, 'coarse_token_ids', t.coarse_slots).to(self.device)
        if coarse.shape[1] == 0:
            raise ValueError(f'coarse_token_ids must be (b, frames >= 1, num_coarse_quantizers), got shape '
                             f'{tuple(coarse.shape)}')
        batch, frames = coarse.shape[:2]
        if exists(prime_wave):
            prime_fine_token_ids = codec_codes(self.codec, prime_wave.to(self.device), start = t.num_coarse_quantizers,
                                               stop = t.num_coarse_quantizers + t.num_fine_quantizers, groups = t.rq_groups)
        if exists(prime_fine_token_ids):
            flat = flat_code_prime(prime_fine_token_ids.to(self.device)[:, :frames], batch = batch,
                                   slots = t.fine_slots, name = 'prime_fine_token_ids', rows = 'coarse rows',
                                   codebook_size = t.codebook_size)
        else:
            flat = torch.empty(batch, 0, dtype = torch.long, device = self.device)
        num_prime = flat.shape[1]

        text_embeds, text_mask = resolve_condition(t.decoder, audio_conditioner = self.audio_conditioner,
                                                   namespace = 'fine', text = text, text_embeds = text_embeds,
                                                   batch_size = batch)
        cache = None
        with eval_mode(t):
            for _ in range(num_prime, frames * t.fine_slots):
                logits, new_cache = t.forward_with_cond_scale(
                    coarse_token_ids = coarse, fine_token_ids = flat, text_embeds = text_embeds, text_mask = text_mask,
                    cond_scale = cond_scale, kv_cache = cache, return_kv_cache = True, return_only_fine_logits = True)
                cache = new_cache if use_kv_cache else None
                sampled = sample_logits(logits[:, -1], filter_thres = filter_thres, temperature = temperature)
                flat = torch.cat((flat, sampled[:, None]), dim = 1)

        if mask_out_generated_fine_tokens:
            flat[:, num_prime:] = self.pad_id
        fine = rearrange(flat, 'b (n q) -> b n q', q = t.fine_slots)
        lengths = lengths_from_padding(coarse, self.pad_id)
        padded = torch.arange(frames, device = self.device)[None, :, None] >= lengths[:, None, None]
        fine = fine.masked_fill(padded, self.pad_id)
        if not reconstruct_wave:
            return fine
        if not exists(self.codec):
            raise ValueError('reconstruct_wave=True needs a codec')
        return waves_from_codes(self.codec, [coarse, fine], lengths, groups = t.rq_groups)
