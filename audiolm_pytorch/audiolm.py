"""AudioLM (Borsos et al., arXiv 2209.03143): semantic -> coarse -> fine -> codec."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from audiolm_pytorch.audio import load_audio, resample
from audiolm_pytorch.lm.coarse import CoarseTransformer, CoarseTransformerWrapper
from audiolm_pytorch.lm.fine import FineTransformer, FineTransformerWrapper
from audiolm_pytorch.lm.sampling import stage_sampling
from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper
from audiolm_pytorch.lm.transformer import condition_batch_size
from audiolm_pytorch.utils import beartype, default, exists


def check_stages(*, wav2vec, codec, semantic: SemanticTransformer, coarse: CoarseTransformer,
                 fine: FineTransformer):
    """Raise a ``ValueError`` naming the mismatch when the stages cannot be chained."""
    problems = []
    if semantic.num_semantic_tokens != coarse.num_semantic_tokens:
        problems.append(f'semantic transformer has num_semantic_tokens={semantic.num_semantic_tokens} but the coarse '
                        f'transformer {coarse.num_semantic_tokens}')
    if exists(wav2vec) and wav2vec.codebook_size != semantic.num_semantic_tokens:
        problems.append(f'wav2vec has codebook_size={wav2vec.codebook_size} but num_semantic_tokens='
                        f'{semantic.num_semantic_tokens}')
    if coarse.codebook_size != fine.codebook_size:
        problems.append(f'coarse codebook_size={coarse.codebook_size} but fine codebook_size={fine.codebook_size}')
    if coarse.num_coarse_quantizers != fine.num_coarse_quantizers:
        problems.append(f'coarse transformer has num_coarse_quantizers={coarse.num_coarse_quantizers} but the fine '
                        f'transformer {fine.num_coarse_quantizers}')
    if coarse.rq_groups != fine.rq_groups:
        problems.append(f'coarse rq_groups={coarse.rq_groups} but fine rq_groups={fine.rq_groups}')
    if exists(codec):
        if codec.codebook_size != coarse.codebook_size:
            problems.append(f'codec codebook_size={codec.codebook_size} but the transformers use {coarse.codebook_size}')
        if getattr(codec, 'rq_groups', 1) != coarse.rq_groups:
            problems.append(f'codec rq_groups={codec.rq_groups} but the transformers use {coarse.rq_groups}')
        needed = fine.num_coarse_quantizers + fine.num_fine_quantizers
        if codec.num_quantizers < needed:
            problems.append(f'coarse + fine quantizers ({needed}) exceed the codec\'s num_quantizers={codec.num_quantizers}')
    if problems:
        raise ValueError('AudioLM stages are incompatible: ' + '; '.join(problems))


UNIQUE_CONSECUTIVE_SPAN = 3   # tokenizer frames allowed per deduplicated semantic token (see _coarse_steps_for)


class AudioLM(nn.Module):
    """Generate audio with the three stages and a codec.

    Args:
        wav2vec: semantic tokenizer (needed for prime waves). codec: acoustic tokenizer (``Codec``).
        semantic_transformer, coarse_transformer, fine_transformer: the stage models.
        audio_conditioner: MuLaN-style conditioner shared by the stages. unique_consecutive: collapse repeated
        semantic ids.
    """

    @beartype
    def __init__(self, *, wav2vec = None, codec, semantic_transformer: SemanticTransformer,
                 coarse_transformer: CoarseTransformer, fine_transformer: FineTransformer, audio_conditioner = None,
                 unique_consecutive: bool = True):
        super().__init__()
        check_stages(wav2vec = wav2vec, codec = codec, semantic = semantic_transformer, coarse = coarse_transformer,
                     fine = fine_transformer)
        self.wav2vec, self.codec, self.audio_conditioner = wav2vec, codec, audio_conditioner
        self.semantic_has_condition = semantic_transformer.decoder.has_condition
        self.coarse_has_condition = coarse_transformer.decoder.has_condition
        self.fine_has_condition = fine_transformer.decoder.has_condition
        self.semantic = SemanticTransformerWrapper(
            transformer = semantic_transformer, wav2vec = wav2vec, unique_consecutive = unique_consecutive,
            audio_conditioner = audio_conditioner if semantic_transformer.audio_text_condition else None)
        self.coarse = CoarseTransformerWrapper(
            transformer = coarse_transformer, codec = codec, wav2vec = wav2vec, unique_consecutive = unique_consecutive,
            audio_conditioner = audio_conditioner if coarse_transformer.audio_text_condition else None)
        self.fine = FineTransformerWrapper(
            transformer = fine_transformer, codec = codec,
            audio_conditioner = audio_conditioner if fine_transformer.audio_text_condition else None)

    @property
    def device(self):
        return self.semantic.device

    def _coarse_steps_for(self, semantic_len: int) -> int:
        """Upper bound on codec frames for ``semantic_len`` semantic tokens (the coarse stage's EOS normally stops
        earlier; ``max_coarse_time_steps`` overrides it). Tokens deduplicated by ``unique_consecutive`` each stand
        for one or more tokenizer frames (HuBERT k-means units repeat ~1.5-2.5x on speech), so the bound then allows
        ``UNIQUE_CONSECUTIVE_SPAN`` frames per token instead of cutting the audio short."""
        if not exists(self.wav2vec):
            return 512
        seconds = semantic_len * self.wav2vec.downsample_factor / self.wav2vec.target_sample_hz
        if self.semantic.unique_consecutive:
            seconds *= UNIQUE_CONSECUTIVE_SPAN
        return max(1, math.ceil(seconds * self.codec.target_sample_hz / self.codec.downsample_factor))

    @torch.no_grad()
    def forward(self, *, batch_size: int | None = None, text=None, text_embeds: Tensor | None = None,
                prime_wave: Tensor | None = None, prime_wave_input_sample_hz: int | None = None,
                prime_wave_path: str | Path | None = None, max_length: int = 2048,
                return_coarse_generated_wave: bool = False, mask_out_generated_fine_tokens: bool = False,
                max_coarse_time_steps: int | None = None, cond_scale: float | Sequence[float] | None = None,
                filter_thres: float | Sequence[float] | None = None,
                temperature: float | Sequence[float] | None = None, use_kv_cache: bool = True):
        """Generate audio.

        Args:
            text / text_embeds: condition for the stages built with ``has_condition``.
            prime_wave: ``(n,)`` or ``(b, n)`` prompt at ``prime_wave_input_sample_hz`` (default: the codec's rate),
            or ``prime_wave_path`` to an audio file. max_length: semantic tokens (prime included); the semantic
            stage stops earlier only where it samples EOS (a model trained with ``file_end`` does so only where it
            predicts the real end of a recording). max_coarse_time_steps: codec frames (prime included); default
            an upper bound from ``max_length`` (see ``_coarse_steps_for``) — a coarse stage trained on crops never
            learnt to stop at a crop end, so pass it to get a given duration.
            batch_size: default: one sample per text / ``text_embeds`` row or prime wave, else 1; a single
            condition or prime is repeated over a larger batch.
            temperature, filter_thres, cond_scale: None = each stage's default (semantic / coarse / fine
            temperature 1.0 / 0.95 / 0.4 as in MusicLM, top 10% of ids, guidance 3.0; sources in
            ``lm.sampling.STAGE_SAMPLING_DEFAULTS``), one number for every stage, or a ``(semantic, coarse, fine)``
            triple.
        Returns audio ``(b, n)`` at the codec's rate, or a list of 1-D waves when lengths differ.
        """
        sampling = stage_sampling(temperature = temperature, filter_thres = filter_thres, cond_scale = cond_scale)
        if exists(prime_wave_path):
            if exists(prime_wave):
                raise ValueError('pass prime_wave or prime_wave_path, not both')
            loaded = load_audio(prime_wave_path)
            prime_wave, prime_wave_input_sample_hz = loaded.wave[:1], loaded.sample_hz

        # one sample per condition (texts / text_embeds) or prime unless batch_size says otherwise
        # a single condition is repeated over the batch (primes may set its size), like a single prime
        conditions = condition_batch_size(text, text_embeds)
        requested = batch_size if exists(batch_size) else (conditions if conditions != 1 else None)
        semantic_prime = codec_prime = None
        if exists(prime_wave):
            if not prime_wave.is_floating_point():
                raise ValueError(f'prime_wave must be floating-point audio in [-1, 1], got {prime_wave.dtype}: convert '
                                 'with .float() (and divide int16 PCM by 32768)')
            if exists(prime_wave_input_sample_hz) and prime_wave_input_sample_hz <= 0:
                raise ValueError(f'prime_wave_input_sample_hz must be a positive rate, got {prime_wave_input_sample_hz}')
            prime_wave = prime_wave.to(self.device).float()
            if prime_wave.ndim == 1:
                prime_wave = prime_wave[None]
            if prime_wave.ndim == 3:
                if prime_wave.shape[1] != 1:
                    raise ValueError(f'prime_wave must be mono (n,), (b, n) or (b, 1, n), got {tuple(prime_wave.shape)}: '
                                     'mix the channels down first (e.g. prime_wave.mean(dim = 1))')
                prime_wave = prime_wave[:, 0]
            hz = prime_wave_input_sample_hz if exists(prime_wave_input_sample_hz) else self.codec.target_sample_hz
            if not exists(self.wav2vec):
                raise ValueError('priming with audio needs the semantic tokenizer: pass wav2vec= to AudioLM')
            semantic_prime = resample(prime_wave, hz, self.wav2vec.target_sample_hz)
            codec_prime = resample(prime_wave, hz, self.codec.target_sample_hz)
            if codec_prime.shape[0] == 1 and exists(requested) and requested > 1:
                codec_prime = codec_prime.expand(requested, -1)
                semantic_prime = semantic_prime.expand(requested, -1)
            if exists(requested) and codec_prime.shape[0] != requested:
                raise ValueError(f'{codec_prime.shape[0]} prime waves for a batch of {requested}: give one prime per '
                                 'sample or a single one for the whole batch')
            batch_size = codec_prime.shape[0]
        else:
            batch_size = default(requested, 1)

        def condition(has_condition):
            if not has_condition:
                return dict()
            return dict(text = text, text_embeds = text_embeds)

        semantic_ids = self.semantic.generate(
            max_length = max_length, batch_size = batch_size, prime_wave = semantic_prime,
            prime_wave_input_sample_hz = self.wav2vec.target_sample_hz if exists(semantic_prime) else None,
            min_new_tokens = 1, use_kv_cache = use_kv_cache, **sampling['semantic'],
            **condition(self.semantic_has_condition or exists(self.semantic.audio_conditioner)))

        max_time_steps = max_coarse_time_steps or self._coarse_steps_for(max_length)
        if exists(codec_prime):
            prime_frames = codec_prime.shape[-1] // self.codec.downsample_factor
            max_time_steps = max(max_time_steps, prime_frames + 1)
        coarse_ids = self.coarse.generate(
            semantic_token_ids = semantic_ids, prime_wave = codec_prime, max_time_steps = max_time_steps,
            min_new_time_steps = 1, use_kv_cache = use_kv_cache, **sampling['coarse'],
            **condition(self.coarse_has_condition or exists(self.coarse.audio_conditioner)))

        if return_coarse_generated_wave:
            from audiolm_pytorch.lm.sampling import lengths_from_padding
            from audiolm_pytorch.lm.coarse import waves_from_codes
            lengths = lengths_from_padding(coarse_ids, -1)
            return waves_from_codes(self.codec, [coarse_ids], lengths, groups = self.coarse.transformer.rq_groups)

        return self.fine.generate(
            coarse_token_ids = coarse_ids, prime_wave = codec_prime, reconstruct_wave = True,
            mask_out_generated_fine_tokens = mask_out_generated_fine_tokens,
            use_kv_cache = use_kv_cache, **sampling['fine'],
            **condition(self.fine_has_condition or exists(self.fine.audio_conditioner)))
