"""AudioLM-style generation with SoundStorm: semantic transformer -> SoundStorm -> codec (the AudioLM pipeline
with SoundStorm replacing the coarse and fine stages)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from audiolm_pytorch.lm.transformer import condition_batch_size
from audiolm_pytorch.soundstorm.model import SoundStorm
from audiolm_pytorch.utils import exists


class SemanticToAudio(nn.Module):
    """AudioLM-style pipeline with SoundStorm: semantic transformer -> SoundStorm -> codec.

    Args:
        semantic_transformer: anything with ``generate(max_length=, batch_size=, ...) -> (b, <= max_length)``
            semantic ids padded with -1 (``SemanticTransformerWrapper``). Train it on semantic tokens that keep
            their timing (``unique_consecutive=False``) so they can be aligned with codec frames.
        soundstorm: ``SoundStorm`` with a codec attached (or ``return_codes=True`` at call time).

    ``forward(batch_size=None (one per condition or prime, else 1), max_length=2048, text=None, text_embeds=None, prime_wave=None,
    prime_wave_input_sample_hz=None, semantic_generate_kwargs=None, **soundstorm_generate_kwargs)``
    ``-> wave (b, n)`` (a list when lengths differ) or codes. ``prime_wave`` (at the codec's rate unless
    ``prime_wave_input_sample_hz`` says otherwise) primes the semantic transformer and is the acoustic prompt
    of SoundStorm (the voice / recording conditions are carried over, paper §4).
    """

    def __init__(self, *, semantic_transformer, soundstorm: SoundStorm):
        super().__init__()
        if not callable(getattr(semantic_transformer, 'generate', None)):
            raise ValueError('semantic_transformer must have a generate(...) method (wrap a SemanticTransformer '
                             'in SemanticTransformerWrapper)')
        if not exists(soundstorm.semantic_token_emb):
            raise ValueError('soundstorm must be conditioned on semantic tokens (num_semantic_token_ids= or wav2vec=)')
        if getattr(semantic_transformer, 'unique_consecutive', False):
            warnings.warn('the semantic transformer removes consecutive duplicate tokens (unique_consecutive=True): '
                          'its output loses the timing SoundStorm aligns to; train it with unique_consecutive=False')
        self.semantic_transformer = semantic_transformer
        self.soundstorm = soundstorm

    @torch.no_grad()
    def forward(self, *, batch_size: int | None = None, max_length: int = 2048, text: list[str] | None = None,
                text_embeds: Tensor | None = None, prime_wave: Tensor | None = None,
                prime_wave_input_sample_hz: int | None = None, semantic_generate_kwargs: dict | None = None,
                **soundstorm_kwargs):
        if batch_size is None:       # one sample per condition (texts / text_embeds rows) or prime wave, else 1
            primes = prime_wave.reshape(-1, prime_wave.shape[-1]).shape[0] if exists(prime_wave) else None
            batch_size = condition_batch_size(text, text_embeds) or primes or 1
        kwargs = dict(max_length = max_length, batch_size = batch_size, **(semantic_generate_kwargs or {}))
        if exists(text):
            kwargs['text'] = text
        if exists(text_embeds):
            kwargs['text_embeds'] = text_embeds
        prompt = None
        if exists(prime_wave):
            codec = self.soundstorm.soundstream
            if not exists(codec):
                raise ValueError('prime_wave needs a codec attached to soundstorm (soundstream=)')
            prime_wave = prime_wave.reshape(-1, prime_wave.shape[-1]).to(self.soundstorm.device)
            kwargs.update(prime_wave = prime_wave, prime_wave_input_sample_hz = prime_wave_input_sample_hz)
            wave = prime_wave
            if exists(prime_wave_input_sample_hz) and prime_wave_input_sample_hz != codec.target_sample_hz:
                from audiolm_pytorch.audio import resample
                wave = resample(wave, prime_wave_input_sample_hz, codec.target_sample_hz)
            prompt = self.soundstorm.tokenize(wave)
        semantic = self.semantic_transformer.generate(**kwargs).long()
        pad = self.soundstorm.semantic_pad_id
        # EOS (also when its id lies inside SoundStorm's vocabulary), the transformer's padding and other ids
        # outside the vocabulary end the sequence
        end = (semantic < 0) | (semantic >= self.soundstorm.num_semantic_token_ids)
        for name in ('eos_id', 'pad_id'):
            special = getattr(self.semantic_transformer, name, None)
            if isinstance(special, int):
                end = end | (semantic == special)
        semantic = semantic.masked_fill(end.cumsum(dim = -1) > 0, pad)
        empty = (semantic != pad).sum(dim = -1) == 0
        if bool(empty.any()):
            raise ValueError('the semantic transformer produced an empty sequence for some samples (EOS first); '
                             'generate again or check the semantic model')
        semantic, frames_for = self._align_to_codec_frames(semantic, pad, soundstorm_kwargs)
        if exists(prompt):
            prompt = prompt.expand(semantic.shape[0], -1, -1) if prompt.shape[0] == 1 else prompt
            # the prompt covers the primed semantic tokens; keep it shorter than every output
            shortest = int(frames_for(int((semantic != pad).sum(dim = -1).min())))
            soundstorm_kwargs['prompt_acoustic_token_ids'] = prompt[:, :max(0, min(prompt.shape[1], shortest - 1))]
        return self.soundstorm.generate(cond_semantic_token_ids = semantic, **soundstorm_kwargs)

    def _align_to_codec_frames(self, semantic: Tensor, pad: int, soundstorm_kwargs: dict):
        """When SoundStorm does not know the semantic frame rate (built with ``num_semantic_token_ids`` only) it
        would take one codec frame per semantic token; the semantic transformer's tokenizer knows the rate, so
        align here -> (ids for ``generate``, frames_for(num): the codec frames that ``num`` of those ids cover)."""
        soundstorm = self.soundstorm
        wav2vec = getattr(self.semantic_transformer, 'wav2vec', None)
        codec_hz = soundstorm.codec_frame_hz
        rates = [getattr(wav2vec, attr, None) for attr in ('target_sample_hz', 'downsample_factor')]
        if exists(soundstorm.semantic_frame_hz) or not exists(codec_hz) or not all(map(exists, rates)):
            return semantic, soundstorm.num_frames_for_semantic
        ratio = (rates[0] / rates[1]) / codec_hz                      # semantic tokens per codec frame
        num_frames = max(1, math.ceil(semantic.shape[-1] / ratio - 1e-6))
        # a length asked of SoundStorm wins (ids past the semantic sequence are padding)
        if exists(soundstorm_kwargs.get('num_latents')):
            num_frames = soundstorm_kwargs['num_latents']
        elif exists(soundstorm_kwargs.get('seconds')):
            num_frames = math.ceil(soundstorm_kwargs['seconds'] * codec_hz - 1e-6)
        elif exists(soundstorm_kwargs.get('mask')):
            num_frames = soundstorm_kwargs['mask'].shape[-1]
        aligned = soundstorm.align_semantic(semantic, num_frames, semantic_per_frame = ratio)
        return aligned, lambda num: num                               # already one id per codec frame
