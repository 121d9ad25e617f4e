"""The interface every acoustic tokenizer (codec) satisfies. Language models depend on this, never on a
concrete codec."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Codec(Protocol):
    """Acoustic tokenizer: waveform <-> residual-quantizer codes.

    Attributes: ``target_sample_hz``, ``downsample_factor`` (samples per code frame), ``seq_len_multiple_of``,
    ``num_quantizers`` (levels per group), ``codebook_size``, ``rq_groups``.
    ``tokenize(wave (b, n) | (b, 1, n)) -> codes (b, frames, num_quantizers * rq_groups)``;
    ``decode_from_codebook_indices(codes (b, frames, q)) -> wave (b, 1, frames * downsample_factor)``.
    """

    target_sample_hz: int
    downsample_factor: int
    seq_len_multiple_of: int
    num_quantizers: int
    codebook_size: int
    rq_groups: int

    def tokenize(self, wave: Tensor) -> Tensor: ...

    def decode_from_codebook_indices(self, codes: Tensor) -> Tensor: ...
