"""vq-wav2vec (arXiv:1910.05453) codebook indices as semantic tokens, through fairseq.

Unlike HuBERT, vq-wav2vec's quantizer (gumbel / k-means vector quantization with groups) has no counterpart in
``transformers``, so this tokenizer needs fairseq itself. fairseq is imported lazily, only when the class is
constructed; it does not import on Python >= 3.11 (its dataclass configs use mutable defaults that 3.11
rejects), in which case a clear error says so.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
from audiolm_pytorch.utils import beartype
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.semantic.base import WaveInputMixin

__all__ = ['FairseqVQWav2Vec']


def _import_fairseq():
    try:
        import fairseq  # lazy: only when a vq-wav2vec checkpoint is loaded
    except Exception as error:  # ImportError, or the ValueError fairseq raises at import on Python >= 3.11
        python = f'{sys.version_info.major}.{sys.version_info.minor}'
        hint = (f'fairseq does not import on Python >= 3.11 (this is Python {python}); run vq-wav2vec tokenization '
                'in a Python 3.10 environment with fairseq installed, or use HubertWithKmeans, which reads fairseq '
                'HuBERT / wav2vec 2.0 checkpoints without fairseq')
        if sys.version_info < (3, 11):
            hint = 'install it with pip install fairseq (Python <= 3.10)'
        raise ImportError(f'FairseqVQWav2Vec needs fairseq, which could not be imported ({type(error).__name__}: '
                          f'{error}): {hint}') from error
    return fairseq


class FairseqVQWav2Vec(WaveInputMixin, nn.Module):
    """vq-wav2vec codebook ids from a fairseq checkpoint (e.g. ``vq-wav2vec_kmeans.pt``).

    Args:
        checkpoint_path: fairseq vq-wav2vec checkpoint.
        target_sample_hz: rate of the waveforms ``forward`` receives (the established default, 24 kHz, is kept;
            vq-wav2vec itself was trained at 16 kHz).
        seq_len_multiple_of: cut inputs to a multiple of this many samples first.

    ``forward(wav_input (b, n), flatten=True, input_sample_hz=None)`` -> ids ``(b, frames * groups)`` with the
    groups interleaved per frame, or ``(b, frames, groups)`` with ``flatten=False``.
    """

    @beartype
    def __init__(self, checkpoint_path: str | os.PathLike, target_sample_hz: int = 24000,
                 seq_len_multiple_of: int | None = None):
        super().__init__()
        path = Path(checkpoint_path)
        fairseq = _import_fairseq()
        if not path.is_file():
            raise FileNotFoundError(f'vq-wav2vec checkpoint not found: {path}')

        models, _, _ = fairseq.checkpoint_utils.load_model_ensemble_and_task([str(path)])
        self.model = models[0].eval().requires_grad_(False)
        if not hasattr(self.model, 'vector_quantizer'):
            raise ValueError(f'{path} is not a vq-wav2vec checkpoint (its model has no vector_quantizer)')
        self.target_sample_hz = target_sample_hz
        self.seq_len_multiple_of = seq_len_multiple_of

    @property
    def downsample_factor(self) -> int:
        """Product of the conv feature extractor's strides (160 for the released models)."""
        strides = [layer[0].stride[0] for layer in self.model.feature_extractor.conv_layers]
        return math.prod(strides)

    @property
    def codebook_size(self) -> int:
        return self.model.vector_quantizer.embedding.shape[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, wav_input: Tensor, flatten: bool = True, input_sample_hz: int | None = None) -> Tensor:
        wav_input = self.as_wave_batch(wav_input)     # (b, n); clear errors for bad shapes, dtypes, NaN
        device = next(self.model.parameters()).device
        wav_input = wav_input.to(device).float()
        wav_input = self.to_target_rate(wav_input, input_sample_hz)

        embed = self.model.feature_extractor(wav_input)
        _, codebook_indices = self.model.vector_quantizer.forward_idx(embed)           # (b, frames, groups)
        if not flatten:
            return codebook_indices
        return rearrange(codebook_indices, 'b ... -> b (...)')
