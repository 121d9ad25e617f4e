"""The interface every semantic tokenizer satisfies (HuBERT / wav2vec 2.0 / w2v-BERT + k-means, spectral
k-means, vq-wav2vec)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from einops import rearrange
from torch import Tensor

from audiolm_pytorch.audio import check_audio_values, resample
from audiolm_pytorch.utils import curtail_to_multiple, exists


@runtime_checkable
class SemanticTokenizer(Protocol):
    """``forward(wave (b, n), flatten=True, input_sample_hz=None) -> ids (b, frames)`` in ``[0, codebook_size)``.

    Attributes: ``target_sample_hz``, ``downsample_factor`` (input samples per frame), ``seq_len_multiple_of``,
    ``codebook_size``.
    """

    target_sample_hz: int
    downsample_factor: int
    seq_len_multiple_of: int | None
    codebook_size: int

    def __call__(self, wave: Tensor, flatten: bool = True, input_sample_hz: int | None = None) -> Tensor: ...


class WaveInputMixin:
    """Input plumbing shared by the tokenizers: the ``target_sample_hz`` / ``seq_len_multiple_of`` attributes
    (backed by ``self._target_sample_hz`` / ``self._seq_len_multiple_of``), waveform shape checks, resampling
    from ``input_sample_hz`` and cropping to a multiple of ``seq_len_multiple_of``.

    Both attributes are settable, as plain attributes are in the established library: a subclass may assign
    ``self.target_sample_hz = 16000`` in its own ``__init__`` (before or after ``super().__init__``). Values
    are checked on assignment; subclasses hook ``_check_target_sample_hz`` for model-specific checks."""

    _target_sample_hz: int
    _seq_len_multiple_of: int | None

    @property
    def target_sample_hz(self) -> int:
        return self._target_sample_hz

    @target_sample_hz.setter
    def target_sample_hz(self, value: int):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f'target_sample_hz must be a positive int (samples per second), got {value!r}')
        self._check_target_sample_hz(value)
        object.__setattr__(self, '_target_sample_hz', value)

    @property
    def seq_len_multiple_of(self) -> int | None:
        return self._seq_len_multiple_of

    @seq_len_multiple_of.setter
    def seq_len_multiple_of(self, value: int | None):
        if exists(value) and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f'seq_len_multiple_of must be a positive int or None, got {value!r}')
        object.__setattr__(self, '_seq_len_multiple_of', value)

    def _check_target_sample_hz(self, value: int):
        """Raise a ``ValueError`` when this tokenizer cannot run at ``value`` Hz (default: any rate works)."""

    def cropped_num_samples(self, num_samples: int) -> int:
        """``num_samples`` cut down to a multiple of ``seq_len_multiple_of`` (unchanged without one)."""
        if exists(self.seq_len_multiple_of):
            num_samples -= num_samples % self.seq_len_multiple_of
        return num_samples

    @staticmethod
    def as_wave_batch(wave: Tensor) -> Tensor:
        """``(b, n)``, ``(n,)`` or ``(b, 1, n)`` -> ``(b, n)``; anything else is a ``ValueError``."""
        if wave.ndim == 3 and wave.shape[1] == 1:
            wave = rearrange(wave, 'b 1 n -> b n')
        if wave.ndim == 1:
            wave = rearrange(wave, 'n -> 1 n')
        if wave.ndim != 2:
            raise ValueError(f'expected a waveform (b, n), (n,) or (b, 1, n), got shape {tuple(wave.shape)}')
        return check_audio_values(wave, name = 'audio to tokenize')

    def lengths_at_target_rate(self, lengths: Tensor, input_sample_hz: int | None) -> Tensor:
        """Valid samples per row ``(b,)`` at ``input_sample_hz`` -> at ``target_sample_hz``."""
        if exists(input_sample_hz) and input_sample_hz != self.target_sample_hz:
            return lengths * self.target_sample_hz // input_sample_hz
        return lengths

    def to_target_rate(self, wave: Tensor, input_sample_hz: int | None) -> Tensor:
        """Resample ``wave (..., n)`` from ``input_sample_hz`` (default: already at ``target_sample_hz``) and crop
        it to a multiple of ``seq_len_multiple_of``."""
        if exists(input_sample_hz) and input_sample_hz != self.target_sample_hz:
            wave = resample(wave, input_sample_hz, self.target_sample_hz)
        if exists(self.seq_len_multiple_of):
            wave = curtail_to_multiple(wave, self.seq_len_multiple_of)
        return wave
