"""SoundStorm's generation: level-by-level MaskGIT decoding (arXiv 2202.04200; SoundStorm paper §3.3) with
classifier-free guidance, self-conditioning and an optional acoustic prompt, and decoding codes to audio.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from einops import rearrange
from torch import Tensor

from audiolm_pytorch.lm.sampling import gumbel_noise, top_k_filter
from audiolm_pytorch.utils import default, eval_mode, exists


class MaskGITDecodingMixin:
    """``generate`` / ``decode`` of ``SoundStorm``; uses its ``net``, ``schedule``, ``steps``, ``self_cond``
    parts, the semantic condition (``embed_semantic``, ``_prepare``) and the attached codec."""

    def _steps_per_level(self, steps, num_full_sampling_levels: int) -> list[int]:
        q = self.net.num_quantizers
        if isinstance(steps, int):
            per_level = [steps] * num_full_sampling_levels + [1] * (q - num_full_sampling_levels)
        else:
            per_level = [int(s) for s in steps]
            if len(per_level) != q:
                raise ValueError(f'steps as a sequence needs one entry per residual level ({q}), got {len(per_level)}')
        if min(per_level) < 1:
            raise ValueError(f'every level needs at least one step, got {per_level}')
        return per_level

    def _logits(self, seq: Tensor, mask: Tensor, cond, null_cond, level: int, cond_scale: float,
                previous: Tensor | None = None):
        """Logits ``(b, n, g, c)`` of ``level`` (guided when ``cond_scale != 1``); with self-conditioning,
        ``(logits, embeddings)`` where ``previous`` are the last step's embeddings (None: the null embedding)."""
        codes = rearrange(seq, 'b n g q -> b n (g q)')
        quantizers = self.net.level_quantizers(level)
        extra = {}
        if self.self_cond:
            previous = self.null_embed.expand(*codes.shape[:2], -1) if previous is None else previous
            extra = dict(sum_embeds = self.to_self_cond(previous), return_logits_and_embeddings = True)
        guided = cond_scale != 1. and exists(null_cond)
        if not guided:
            out = self.net(codes, mask = mask, cond = cond, quantizers = quantizers, **extra)
        else:
            extra = {k: torch.cat((v, v)) if k == 'sum_embeds' else v for k, v in extra.items()}
            out = self.net(torch.cat((codes, codes)), mask = torch.cat((mask, mask)),
                           cond = torch.cat((cond, null_cond)), quantizers = quantizers, **extra)
        logits, embeds = out if self.self_cond else (out, None)
        logits = logits.float()
        if guided:
            conditioned, unconditioned = logits.chunk(2)
            logits = unconditioned + (conditioned - unconditioned) * cond_scale
            embeds = embeds.chunk(2)[0] if exists(embeds) else None
        return (logits, embeds) if self.self_cond else logits

    @torch.no_grad()
    def generate(self, num_latents: int | None = None, *, seconds: float | None = None, batch_size: int | None = None,
                 cond_semantic_token_ids: Tensor | None = None, prompt_acoustic_token_ids: Tensor | None = None,
                 mask: Tensor | None = None, texts: list[str] | None = None, steps: int | Sequence[int] | None = None,
                 num_full_sampling_levels: int | None = None, start_temperature: float = 1., filter_thres: float = 0.7,
                 noise_level_scale: float = 1., cond_scale: float = 1., return_codes: bool = False,
                 text_to_semantic_generate_kwargs: dict | None = None):
        """Level-by-level MaskGIT decoding (paper §3.3).

        Args:
            num_latents: frames to generate (prompt included). seconds: length in seconds (needs the codec's
                rate); otherwise taken from ``mask`` or the semantic condition.
            batch_size: defaults to the batch of the condition / prompt / mask, else 1.
            cond_semantic_token_ids: ``(b, m)`` semantic ids (``semantic_pad_id`` = padding -> padded frames).
            prompt_acoustic_token_ids: ``(b, p, g·q)`` codes of the first ``p`` frames; returned unchanged.
            mask: ``(b, n)`` bool, True = frame to generate. texts: via ``spear_tts_text_to_semantic``.
            steps: iterations on the first ``num_full_sampling_levels`` levels (default ``self.steps``), or a
                sequence with one count per level. Levels past ``num_full_sampling_levels`` are greedy.
            start_temperature: sampling temperature at the first step, annealed linearly towards 0 (0 = greedy).
            filter_thres: top-k filter (keep the top ``1 - filter_thres`` fraction; default 0.7 as in the
            reference, 0 keeps all). noise_level_scale: scale of
                the annealed Gumbel noise on confidences. cond_scale: classifier-free guidance scale.
            return_codes: return codes even when a codec is attached.

        Returns codes ``(b, n, g·q)`` in ``[0, codebook_size)`` (``pad_id`` at padded frames), or with a codec
        audio ``(b, samples)`` (``seconds·sample_hz`` samples when ``seconds`` is given), or a list of 1-D waves
        when ``mask`` gives the samples different lengths.
        """
        with eval_mode(self):
            return self._generate(num_latents, seconds, batch_size, cond_semantic_token_ids, prompt_acoustic_token_ids,
                                  mask, texts, steps, num_full_sampling_levels, start_temperature, filter_thres,
                                  noise_level_scale, cond_scale, return_codes, text_to_semantic_generate_kwargs or {})

    def _generate(self, num_latents, seconds, batch_size, semantic, prompt, mask, texts, steps, num_full_sampling_levels,
                  start_temperature, filter_thres, noise_level_scale, cond_scale, return_codes, tts_kwargs):
        device = self.device
        if exists(texts):
            if not exists(self.spear_tts_text_to_semantic):
                raise ValueError('generate(texts=...) needs a text-to-semantic model: pass spear_tts_text_to_semantic= '
                                 'to SoundStorm (or generate semantic tokens yourself and pass cond_semantic_token_ids=)')
            semantic = self.spear_tts_text_to_semantic.generate(source = texts, source_type = 'text',
                                                                target_type = 'speech', **tts_kwargs)
        if exists(semantic) and not exists(self.semantic_token_emb):
            raise ValueError('cond_semantic_token_ids given but the model has no semantic embedding: pass '
                             'num_semantic_token_ids= (or a wav2vec) to SoundStorm')

        batches = {name: t.shape[0] for name, t in (('cond_semantic_token_ids', semantic),
                                                     ('prompt_acoustic_token_ids', prompt), ('mask', mask)) if exists(t)}
        if exists(batch_size):
            batches['batch_size'] = batch_size
        if len(set(batches.values())) > 1:
            raise ValueError(f'batch sizes disagree: {batches}')
        batch = next(iter(batches.values()), 1)
        if batch < 1:
            raise ValueError(f'nothing to generate: batch size {batch} ({batches})')

        codec_hz = self.codec_frame_hz
        if exists(num_latents):
            num_frames = num_latents
        elif exists(seconds):
            if not exists(codec_hz):
                raise ValueError('seconds= needs the codec frame rate: attach soundstream= (or pass codec_target_sample_hz '
                                 'and codec_downsample_factor to SoundStorm), or pass num_latents=')
            num_frames = math.ceil(seconds * codec_hz - 1e-6)
        elif exists(mask):
            num_frames = mask.shape[-1]
        elif exists(semantic):
            num_frames = self.num_frames_for_semantic(semantic.shape[-1])
        else:
            raise ValueError('give the length: num_latents=, seconds=, mask= or cond_semantic_token_ids=')
        if num_frames < 1:
            raise ValueError(f'need at least one frame to generate, got {num_frames}')

        g, q, mask_id = self.net.grouped_quantizers, self.net.num_quantizers, self.net.mask_id
        seq = torch.full((batch, num_frames, g, q), mask_id, device = device, dtype = torch.long)
        prompt_len = 0
        if exists(prompt):
            prompt = prompt.to(device).long()
            self._check_codes(prompt, 'prompt_acoustic_token_ids')
            prompt_len = prompt.shape[1]
            if prompt_len >= num_frames:
                raise ValueError(f'the prompt ({prompt_len} frames) must be shorter than the output ({num_frames} frames)')
            seq[:, :prompt_len] = rearrange(prompt, 'b n (g q) -> b n g q', g = g)

        aligned, mask = self._prepare(seq[..., 0], semantic, mask)
        cond = self.embed_semantic(aligned, batch, num_frames)
        null_cond = self.embed_semantic(None, batch, num_frames) if exists(aligned) and cond_scale != 1. else None
        generate_frames = mask.clone()
        generate_frames[:, :prompt_len] = False

        full_levels = default(num_full_sampling_levels, self.num_full_sampling_levels)
        per_level = self._steps_per_level(default(steps, self.steps), full_levels)

        previous = None   # self-conditioning: the embeddings of the last step
        for level in range(q):
            num_steps, greedy = per_level[level], level >= full_levels or start_temperature <= 0.
            still_masked = generate_frames[..., None].expand(batch, num_frames, g).clone()
            total = still_masked.sum(dim = (1, 2))
            for step in range(num_steps):
                if self.self_cond:
                    logits, previous = self._logits(seq, mask, cond, null_cond, level, cond_scale, previous)
                else:
                    logits = self._logits(seq, mask, cond, null_cond, level, cond_scale)  # (b, n, g, c)
                temperature = start_temperature * (1. - step / num_steps)
                log_probs = logits.log_softmax(dim = -1)
                if greedy:
                    sampled = logits.argmax(dim = -1)
                else:
                    noisy = top_k_filter(logits, filter_thres) / max(temperature, 1e-6) + gumbel_noise(logits)
                    sampled = noisy.argmax(dim = -1)
                confidence = log_probs.gather(-1, sampled[..., None]).squeeze(-1)
                if not greedy and noise_level_scale > 0.:
                    # annealed randomness in which tokens are kept (MaskGIT's choice temperature)
                    confidence = confidence + noise_level_scale * temperature * gumbel_noise(confidence)

                # keep the most confident sampled tokens; the rest stay masked per the schedule
                ratio = torch.tensor((step + 1) / num_steps, device = device)
                num_left = (total.float() * self.schedule(ratio)).floor().long() if step < num_steps - 1 else torch.zeros_like(total)
                if self.can_mask_prev_unmasked:
                    # every generated token competes, revealed ones scored by their current probability: the
                    # least confident are masked again, however early they were revealed
                    candidates = generate_frames[..., None].expand(batch, num_frames, g)
                    tokens = torch.where(still_masked, sampled, seq[..., level])
                    scores = log_probs.gather(-1, tokens.masked_fill(~candidates, 0)[..., None]).squeeze(-1)
                    scores = torch.where(still_masked, confidence, scores)
                    scores = rearrange(scores.masked_fill(~candidates, float('-inf')), 'b n g -> b (n g)')
                    rank = scores.argsort(dim = -1, descending = True, stable = True).argsort(dim = -1, stable = True)
                    keep = rearrange(rank < (total - num_left).clamp(min = 0)[:, None], 'b (n g) -> b n g', g = g) & candidates
                    seq[..., level] = torch.where(keep, tokens, torch.where(candidates, mask_id, seq[..., level]))
                    still_masked = candidates & ~keep
                    continue
                num_reveal = (still_masked.sum(dim = (1, 2)) - num_left).clamp(min = 0)
                confidence = rearrange(confidence.masked_fill(~still_masked, float('-inf')), 'b n g -> b (n g)')
                order = confidence.argsort(dim = -1, descending = True, stable = True)
                rank = order.argsort(dim = -1, stable = True)
                reveal = rearrange(rank < num_reveal[:, None], 'b (n g) -> b n g', g = g) & still_masked
                seq[..., level] = torch.where(reveal, sampled, seq[..., level])
                still_masked = still_masked & ~reveal

        codes = rearrange(seq, 'b n g q -> b n (g q)').masked_fill(~mask[..., None], self.pad_id)
        if return_codes or not exists(self.soundstream):
            return codes
        return self.decode(codes, mask, seconds)

    @torch.no_grad()
    def decode(self, codes: Tensor, mask: Tensor | None = None, seconds: float | None = None):
        """Codes ``(b, n, g·q)`` -> audio ``(b, samples)`` (a list of 1-D waves when ``mask`` lengths differ).
        Without ``mask``, frames holding ``pad_id`` (as ``generate`` writes them) are taken as padding."""
        codec = self.soundstream
        if not exists(codec):
            raise ValueError('decoding needs a codec: attach soundstream=')
        codec.eval()
        if not exists(mask) and not 0 <= self.pad_id < self.net.codebook_size and bool((codes == self.pad_id).any()):
            mask = (codes != self.pad_id).all(dim = -1)   # generate's padded frames: never decode pad_id as a code
        if exists(mask) and not bool(mask.all()):
            lengths = mask.sum(dim = -1)
            waves = [codec.decode_from_codebook_indices(c[m][None]).reshape(-1) for c, m in zip(codes, mask)]
            if len(set(lengths.tolist())) == 1:
                return torch.stack(waves)
            return waves
        wave = codec.decode_from_codebook_indices(codes)
        wave = wave.reshape(wave.shape[0], -1)
        if exists(seconds):
            wave = wave[:, :round(seconds * codec.target_sample_hz)]
        return wave
