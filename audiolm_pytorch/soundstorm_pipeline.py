"""AudioLM-style generation with SoundStorm: semantic transformer -> SoundStorm -> codec (the AudioLM pipeline
with SoundStorm replacing the coarse and fine stages)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from audiolm_pytorch.lm.transformer import condition_batch_size
from audiolm_pytorch.utils import exists

if TYPE_CHECKING:  # annotation only: importing soundstorm here at run time would be circular (it re-exports us)
    from audiolm_pytorch.soundstorm import SoundStorm


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
        # EOS or other ids outside the vocabulary end the sequence
        semantic = semantic.masked_fill((semantic < 0) | (semantic >= self.soundstorm.num_semantic_token_ids), pad)
        semantic = semantic.masked_fill((semantic == pad).cumsum(dim = -1) > 0, pad)
        empty = (semantic != pad).sum(dim = -1) == 0
        if bool(empty.any()):
            raise ValueError('the semantic transformer produced an empty sequence for some samples (EOS first); '
                             'generate again or check the semantic model')
        if exists(prompt):
            prompt = prompt.expand(semantic.shape[0], -1, -1) if prompt.shape[0] == 1 else prompt
            # the prompt covers the primed semantic tokens; keep it shorter than every output
            shortest = int(self.soundstorm.num_frames_for_semantic(int((semantic != pad).sum(dim = -1).min())))
            soundstorm_kwargs['prompt_acoustic_token_ids'] = prompt[:, :max(0, min(prompt.shape[1], shortest - 1))]
        return self.soundstorm.generate(cond_semantic_token_ids = semantic, **soundstorm_kwargs)
