"""Aligning semantic tokens with codec frames in SoundStorm: frame rates from the constructor or the attached
modules, and the per-frame lookup of the semantic token covering each codec frame's start time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from audiolm_pytorch.utils import exists


class RateAlignmentMixin:
    """Uses the model's ``_rates`` (the four rate keywords), ``soundstream``, ``wav2vec`` and ``semantic_pad_id``."""

    def _rate_values(self) -> dict:
        codec, wav2vec = self.soundstream, self.wav2vec
        rates = dict(self._rates)
        for prefix, module in (('codec', codec), ('wav2vec', wav2vec)):
            for attr in ('target_sample_hz', 'downsample_factor'):
                key = f'{prefix}_{attr}'
                if not exists(rates[key]) and exists(module):
                    rates[key] = int(getattr(module, attr))
        return rates

    @property
    def codec_frame_hz(self) -> float | None:
        r = self._rate_values()
        if exists(r['codec_target_sample_hz']) and exists(r['codec_downsample_factor']):
            return r['codec_target_sample_hz'] / r['codec_downsample_factor']
        return None

    @property
    def semantic_frame_hz(self) -> float | None:
        r = self._rate_values()
        if exists(r['wav2vec_target_sample_hz']) and exists(r['wav2vec_downsample_factor']):
            return r['wav2vec_target_sample_hz'] / r['wav2vec_downsample_factor']
        return None

    def _semantic_ratio(self, num_semantic: int, num_frames: int) -> float:
        semantic_hz, codec_hz = self.semantic_frame_hz, self.codec_frame_hz
        if exists(semantic_hz) and exists(codec_hz):
            return semantic_hz / codec_hz
        return num_semantic / num_frames

    def num_frames_for_semantic(self, num_semantic: int) -> int:
        semantic_hz, codec_hz = self.semantic_frame_hz, self.codec_frame_hz
        if exists(semantic_hz) and exists(codec_hz):
            return max(1, math.ceil(num_semantic * codec_hz / semantic_hz - 1e-6))
        return num_semantic

    def align_semantic(self, semantic_token_ids: Tensor, num_frames: int,
                       semantic_per_frame: float | None = None) -> Tensor:
        """Semantic ids ``(b, m)`` -> ``(b, num_frames)``: each codec frame takes the semantic token covering
        its start time (repeats when the semantic rate is lower, decimates when higher). Frames past the end
        of the semantic sequence get ``semantic_pad_id``. ``semantic_per_frame``: the rate ratio, when this
        model was built without the rates (default: from the rates, else ``m / num_frames``)."""
        num_semantic = semantic_token_ids.shape[-1]
        ratio = semantic_per_frame if exists(semantic_per_frame) else self._semantic_ratio(num_semantic, num_frames)
        if num_semantic == num_frames and ratio == 1.:
            return semantic_token_ids
        index = torch.floor(torch.arange(num_frames, device = semantic_token_ids.device) * ratio + 1e-6).long()
        beyond = index >= num_semantic
        aligned = semantic_token_ids[:, index.clamp(max = num_semantic - 1)]
        return aligned.masked_fill(beyond, self.semantic_pad_id)
