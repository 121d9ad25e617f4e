"""MusicLM (arXiv 2301.11325): text-conditioned AudioLM whose conditioning tokens come from MuLaN, with
sampling of several candidates per text and MuLaN reranking of them.

Generation goes through the ``MuLaNEmbedQuantizer``: AudioLM is called with the raw texts, and each stage asks
the quantizer for the text embeddings of its own namespace. An AudioLM built without ``audio_conditioner`` (as
musiclm-pytorch requires) is conditioned by MusicLM: while generating, its stages built with
``audio_text_condition=True`` use ``mulan_embed_quantizer`` as their conditioner. One built with the quantizer
as its ``audio_conditioner`` keeps working as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from audiolm_pytorch.audio import resample
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.musiclm.mulan import MuLaNEmbedQuantizer
from audiolm_pytorch.utils import beartype, eval_mode, exists

logger = logging.getLogger(__name__)

Waves = Tensor | list[Tensor]
Scorer = Callable[[list[Tensor], list[str]], Tensor]


class RankedMusic(NamedTuple):
    music: Waves          # best candidate per text: (num_texts, n), or a list of 1-D waves when lengths differ
    scores: Tensor        # (num_texts, num_samples) similarity of every candidate to its text
    best: Tensor          # (num_texts,) index of the kept candidate


def _as_wave_list(generated: Waves, expected: int) -> list[Tensor]:
    """AudioLM output ``(b, n)`` / ``(b, 1, n)`` / list of waves -> list of ``b`` 1-D waves."""
    if isinstance(generated, Tensor):
        if generated.ndim == 3 and generated.shape[1] == 1:
            generated = generated[:, 0]
        if generated.ndim == 1:
            generated = generated[None]
        if generated.ndim != 2:
            raise ValueError(f'audio_lm returned a tensor of shape {tuple(generated.shape)}, expected (b, n)')
        waves = list(generated.unbind(dim = 0))
    else:
        waves = [wave.reshape(-1) for wave in generated]
    if len(waves) != expected:
        raise ValueError(f'audio_lm returned {len(waves)} waves for a batch of {expected}')
    return waves


STAGE_NAMES = ('semantic', 'coarse', 'fine')


def _conditionable_stages(audio_lm) -> list[nn.Module]:
    """The stage wrappers of an AudioLM whose transformer takes MuLaN conditioning (``audio_text_condition``)."""
    stages = [getattr(audio_lm, name, None) for name in STAGE_NAMES]
    return [stage for stage in stages
            if exists(stage) and getattr(getattr(stage, 'transformer', None), 'audio_text_condition', False)]


@contextmanager
def _conditioned_by(audio_lm, quantizer) -> Iterator[None]:
    """Let the conditionable stages of an AudioLM without a conditioner use ``quantizer`` for the duration."""
    stages = [stage for stage in _conditionable_stages(audio_lm) if getattr(stage, 'audio_conditioner', None) is None]
    # object.__setattr__: the quantizer is held by MusicLM, and must not become a submodule of the stages
    for stage in stages:
        object.__setattr__(stage, 'audio_conditioner', quantizer)
    try:
        yield
    finally:
        for stage in stages:
            object.__setattr__(stage, 'audio_conditioner', None)


def _stack_if_possible(waves: list[Tensor]) -> Waves:
    if len({wave.shape[-1] for wave in waves}) == 1:
        return torch.stack(waves)
    return waves


@reference_compat('MusicLM')
class MusicLM(nn.Module):
    """Text -> music with AudioLM conditioned on MuLaN, reranked by MuLaN.

    Args:
        audio_lm: an ``AudioLM`` whose stages were built with ``audio_text_condition=True`` and trained with
            ``mulan_embed_quantizer`` as their ``audio_conditioner``. Built without ``audio_conditioner`` (as in
            musiclm-pytorch), MusicLM conditions it through ``mulan_embed_quantizer``; built with it, it is used
            as is. Called as ``audio_lm(text=list[str], batch_size=b, **kwargs)``.
        mulan_embed_quantizer: the ``MuLaNEmbedQuantizer`` the stages were trained with; its MuLaN scores
            the candidates.
        scorer: optional ``scorer(waves: list[(n,)], texts: list[str]) -> (b,)`` replacing MuLaN similarity.
        audio_lm_sample_hz: sample rate of the generated audio (default: ``audio_lm.codec.target_sample_hz``
            when available). mulan_sample_hz: rate MuLaN was trained at (default: the embed quantizer's
            ``mulan_sample_hz``); candidates are resampled to it for scoring when both rates are known.
        max_batch_size: most candidates generated in one ``audio_lm`` call, and scored in one MuLaN call
            (default: all at once).

    ``forward(texts: str | list[str], num_samples=1, **audio_lm_kwargs)`` -> best candidate per text,
    ``(num_texts, n)`` (a list of 1-D waves when lengths differ).
    """

    @beartype
    def __init__(self, audio_lm: nn.Module | Callable, mulan_embed_quantizer: MuLaNEmbedQuantizer, *,
                 scorer: Scorer | None = None, audio_lm_sample_hz: int | None = None,
                 mulan_sample_hz: int | None = None, max_batch_size: int | None = None):
        super().__init__()
        conditioner = getattr(audio_lm, 'audio_conditioner', None)
        # an AudioLM without a conditioner is conditioned here, through the quantizer (musiclm-pytorch's usage)
        self.conditions_audio_lm = hasattr(audio_lm, 'audio_conditioner') and conditioner is None
        if self.conditions_audio_lm and not _conditionable_stages(audio_lm):
            raise ValueError('none of audio_lm\'s stages takes MuLaN conditioning: build the Semantic / Coarse / '
                             'FineTransformer with audio_text_condition=True (and train them with '
                             'audio_conditioner=mulan_embed_quantizer)')
        if exists(conditioner) and conditioner is not mulan_embed_quantizer:
            logger.warning('audio_lm is conditioned by a different audio_conditioner than the '
                           'mulan_embed_quantizer given to MusicLM; candidates are ranked with the latter')
        if exists(max_batch_size) and max_batch_size < 1:
            raise ValueError(f'max_batch_size must be >= 1, got {max_batch_size}')

        self.audio_lm = audio_lm
        self.mulan_embed_quantizer = mulan_embed_quantizer
        self.scorer = scorer
        codec = getattr(audio_lm, 'codec', None)
        self.audio_lm_sample_hz = audio_lm_sample_hz if exists(audio_lm_sample_hz) else getattr(
            codec, 'target_sample_hz', None)
        # default: the rate the embed quantizer resamples conditioning audio to
        self.mulan_sample_hz = mulan_sample_hz if exists(mulan_sample_hz) else \
            getattr(mulan_embed_quantizer, 'mulan_sample_hz', None)
        self.max_batch_size = max_batch_size

    @property
    def mulan(self):
        return self.mulan_embed_quantizer.mulan

    @torch.no_grad()
    def score(self, waves: list[Tensor], texts: list[str]) -> Tensor:
        """Similarity of each ``waves[i]`` (1-D) to ``texts[i]`` -> ``(b,)``; MuLaN cosine similarity unless a
        ``scorer`` was given."""
        if exists(self.scorer):
            scores = torch.as_tensor(self.scorer(waves, texts))
            if scores.shape != (len(waves),):
                raise ValueError(f'scorer must return one score per wave ({len(waves)},), got {tuple(scores.shape)}')
            return scores.float()

        if exists(self.mulan_sample_hz) and exists(self.audio_lm_sample_hz):
            waves = [resample(wave, self.audio_lm_sample_hz, self.mulan_sample_hz) for wave in waves]

        mulan = self.mulan
        device = next(mulan.parameters()).device
        chunk = self.max_batch_size or len(waves)
        scores = []
        with eval_mode(mulan):
            if len({wave.shape[-1] for wave in waves}) == 1:
                for start in range(0, len(waves), chunk):
                    batch = torch.stack(waves[start:start + chunk]).to(device)
                    scores.append(mulan.similarity(batch, raw_texts = texts[start:start + chunk]).float().cpu())
            else:
                scores = [mulan.similarity(wave[None].to(device), raw_texts = [text]).float().cpu()
                          for wave, text in zip(waves, texts)]
        return torch.cat(scores)

    def generate_candidates(self, texts: list[str], **audio_lm_kwargs) -> list[Tensor]:
        """One AudioLM sample per entry of ``texts`` (chunked by ``max_batch_size``) -> list of 1-D waves."""
        chunk = self.max_batch_size or len(texts)
        waves = []
        with _conditioned_by(self.audio_lm, self.mulan_embed_quantizer) if self.conditions_audio_lm else \
                nullcontext():
            for start in range(0, len(texts), chunk):
                batch_texts = texts[start:start + chunk]
                generated = self.audio_lm(text = batch_texts, batch_size = len(batch_texts), **audio_lm_kwargs)
                waves.extend(_as_wave_list(generated, len(batch_texts)))
        return waves

    @torch.no_grad()
    @beartype
    def forward(self, texts: list[str] | str, num_samples: int = 1, return_scores: bool = False,
                **audio_lm_kwargs) -> Waves | RankedMusic:
        """Args:
            texts: one prompt or a list of prompts.
            num_samples: candidates generated per prompt; the one MuLaN finds most similar is kept.
            return_scores: return ``RankedMusic(music, scores (num_texts, num_samples), best (num_texts,))``.
            audio_lm_kwargs: passed to ``audio_lm`` (e.g. ``max_length``).

        Returns: ``(num_texts, n)`` waves (a list of 1-D waves when their lengths differ).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) == 0:
            raise ValueError('MusicLM needs at least one text prompt')
        if num_samples < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')

        repeated = [text for text in texts for _ in range(num_samples)]      # text-major: (num_texts * k)
        audio_lm_module = self.audio_lm if isinstance(self.audio_lm, nn.Module) else nn.Module()
        # the quantizer too: audio_lm may reach it without holding it as a submodule (a plain callable), and in
        # training mode its codebooks would be refit to the prompts while generating
        with eval_mode(audio_lm_module), eval_mode(self.mulan_embed_quantizer):
            candidates = self.generate_candidates(repeated, **audio_lm_kwargs)

        if num_samples == 1 and not return_scores:
            return _stack_if_possible(candidates)

        scores = self.score(candidates, repeated).reshape(len(texts), num_samples)
        best = scores.argmax(dim = -1)
        music = _stack_if_possible([candidates[row * num_samples + index] for row, index in enumerate(best.tolist())])
        if return_scores:
            return RankedMusic(music, scores, best)
        return music
