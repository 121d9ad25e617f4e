"""The interface every semantic tokenizer satisfies (HuBERT / wav2vec 2.0 / w2v-BERT + k-means, spectral
k-means, vq-wav2vec)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


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
