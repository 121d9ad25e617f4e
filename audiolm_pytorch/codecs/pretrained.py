"""Pretrained neural codecs from ``transformers`` (EnCodec, DAC, Mimi) behind the codec interface.

Models are built from a local directory (``save_pretrained`` output, loaded with ``local_files_only=True``)
or from a config object (random weights, for tests). Nothing here contacts the model hub. Inference only.

Interface (``audiolm_pytorch.codecs.base.Codec``): ``target_sample_hz``, ``downsample_factor``,
``seq_len_multiple_of``, ``num_quantizers``, ``codebook_size``, ``rq_groups``, ``tokenize(wave) -> (b, frames, q)``,
``decode_from_codebook_indices(codes (b, frames, k <= q)) -> (b, 1, frames * hop)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.audio import check_audio_values, resample
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.utils import exists


def _load_transformers(names: tuple[str, str]):
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - transformers is a core dependency here
        raise ImportError('pretrained codecs need `transformers` (pip install transformers)') from error
    return tuple(getattr(transformers, name) for name in names)


class _PretrainedCodec(nn.Module):
    """Shared plumbing: loading, input checks, (b, frames, q) code layout."""

    model_class_name: str = ''
    config_class_name: str = ''
    hub_example: str = ''
    default_from_cache: bool = False   # called with neither argument: load hub_example from the local HF cache

    def _from_local_cache(self, model_cls):
        try:
            return model_cls.from_pretrained(self.hub_example, local_files_only = True)
        except (OSError, ValueError) as error:
            raise ValueError(
                f'{type(self).__name__}() with no arguments loads {self.hub_example} from the local Hugging Face '
                f'cache, and it is not there ({type(error).__name__}). Download it once with '
                f'`huggingface-cli download {self.hub_example}` (or pass pretrained_path= a local directory, or '
                f'config= for random weights). Nothing is downloaded here.') from error

    def __init__(self, pretrained_path: str | os.PathLike | None = None, config=None, num_quantizers: int | None = None):
        super().__init__()
        model_cls, config_cls = _load_transformers((self.model_class_name, self.config_class_name))
        if not exists(pretrained_path) and not exists(config) and self.default_from_cache:
            self.model = self._from_local_cache(model_cls)
        elif exists(pretrained_path) == exists(config):
            raise ValueError(
                f'{type(self).__name__} needs exactly one of pretrained_path (a local directory holding a '
                f'{self.model_class_name}, e.g. downloaded once with `huggingface-cli download {self.hub_example} '
                f'--local-dir DIR`) or config (a {self.config_class_name}, random weights). Nothing is downloaded here.')
        elif exists(pretrained_path):
            path = Path(pretrained_path)
            if not path.is_dir():
                raise ValueError(f'pretrained_path {path} is not a local directory (hub names are not fetched here)')
            self.model = model_cls.from_pretrained(str(path), local_files_only = True)
        else:
            if not isinstance(config, config_cls):
                raise ValueError(f'config must be a {self.config_class_name}, got {type(config).__name__}')
            self.model = model_cls(config)
        self.model.eval()
        self.rq_groups = 1
        self.codebook_size = int(self.model.config.codebook_size)
        self._setup(num_quantizers)

    # subclasses: set target_sample_hz, downsample_factor, num_quantizers; implement _encode / _decode
    def _setup(self, num_quantizers):
        raise NotImplementedError

    @property
    def seq_len_multiple_of(self) -> int:
        return self.downsample_factor

    def train(self, mode: bool = True):
        return super().train(False)  # inference only: keep the wrapped model in eval mode

    def _prepare(self, wave: Tensor, input_sample_hz: int | None) -> Tensor:
        if not isinstance(wave, Tensor) or not wave.is_floating_point():
            raise ValueError('expected a floating-point waveform tensor')
        if wave.ndim == 1:
            wave = wave[None]
        if wave.ndim == 3:
            if wave.shape[1] != 1:
                raise ValueError(f'{type(self).__name__} takes mono audio (b, 1, n), got {tuple(wave.shape)}')
            wave = wave[:, 0]
        if wave.ndim != 2:
            raise ValueError(f'expected audio (n,), (b, n) or (b, 1, n), got {tuple(wave.shape)}')
        check_audio_values(wave, name = 'audio')
        if exists(input_sample_hz) and input_sample_hz != self.target_sample_hz:
            wave = resample(wave, input_sample_hz, self.target_sample_hz)
        if wave.shape[-1] < self.downsample_factor:
            raise ValueError(f'audio of {wave.shape[-1]} samples is shorter than one frame ({self.downsample_factor})')
        wave = wave[..., :wave.shape[-1] // self.downsample_factor * self.downsample_factor]
        return rearrange(wave, 'b n -> b 1 n').to(next(self.model.parameters()).dtype)

    @torch.no_grad()  # not inference_mode: codes must stay usable in training (embedding lookups, in-place masking)
    def tokenize(self, wave: Tensor, num_quantizers: int | None = None, input_sample_hz: int | None = None) -> Tensor:
        """``(b, n)`` / ``(b, 1, n)`` / ``(n,)`` -> codes ``(b, frames, q)`` (first ``num_quantizers`` levels)."""
        q = num_quantizers if exists(num_quantizers) else self.num_quantizers
        if not 1 <= q <= self.num_quantizers:
            raise ValueError(f'num_quantizers must be in [1, {self.num_quantizers}], got {q}')
        codes = self._encode(self._prepare(wave, input_sample_hz))          # (b, q_all, frames)
        return rearrange(codes[:, :q], 'b q n -> b n q')

    def forward(self, wave: Tensor, input_sample_hz: int | None = None, return_encoded: bool = False):
        """``wave (b, n)`` -> ``(embeddings, codes (b, frames, q), None)`` as in the established EncodecWrapper:
        ``embeddings`` is the sum of the quantized code embeddings ``(b, frames, dim)`` with ``return_encoded=True``,
        else None."""
        codes = self.tokenize(wave, input_sample_hz = input_sample_hz)
        embeddings = self.get_emb_from_indices(codes) if return_encoded else None
        return embeddings, codes, None

    @torch.no_grad()
    def get_emb_from_indices(self, indices: Tensor) -> Tensor:
        """Codes ``(b, frames, q)`` -> summed quantizer embeddings ``(b, frames, dim)`` (the decoder's input)."""
        return rearrange(self._embed_codes(rearrange(indices.long(), 'b n q -> b q n')), 'b c n -> b n c')

    @torch.no_grad()
    def decode(self, emb: Tensor) -> Tensor:
        """Embeddings ``(b, frames, dim)`` (from ``get_emb_from_indices``) -> waveform ``(b, 1, frames * hop)``."""
        return self._decode_embeddings(rearrange(emb, 'b n c -> b c n')).float()

    def _embed_codes(self, codes: Tensor) -> Tensor:
        raise NotImplementedError(f'{type(self).__name__} does not expose its code embeddings')

    def _decode_embeddings(self, emb: Tensor) -> Tensor:
        raise NotImplementedError(f'{type(self).__name__} does not decode embeddings')

    @torch.no_grad()
    def decode_from_codebook_indices(self, codes: Tensor) -> Tensor:
        """``(b, frames, k)`` with ``k <= num_quantizers`` -> waveform ``(b, 1, frames * downsample_factor)``."""
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3 or not 1 <= codes.shape[-1] <= self.num_quantizers:
            raise ValueError(f'expected codes (b, frames, k <= {self.num_quantizers}), got {tuple(codes.shape)}')
        if ((codes < 0) | (codes >= self.codebook_size)).any():
            raise ValueError(f'codes must lie in [0, {self.codebook_size})')
        audio = self._decode(rearrange(codes.long(), 'b n q -> b q n'))
        audio = audio.reshape(codes.shape[0], 1, -1)
        return audio[..., :codes.shape[1] * self.downsample_factor].float()


@reference_compat('EncodecWrapper')
class EncodecWrapper(_PretrainedCodec):
    """EnCodec (arXiv 2210.13438) on ``transformers.EncodecModel``.

    Args:
        pretrained_path: local directory of a saved ``EncodecModel`` (e.g. facebook/encodec_24khz), or
        config: an ``EncodecConfig`` (random weights); with neither, ``facebook/encodec_24khz`` is loaded from
        the local Hugging Face cache (as the established wrapper's default model; never downloaded here).
        bandwidth: kbps, selects how many quantizers are used.
        target_sample_hz / strides / num_quantizers: accepted for compatibility with the established wrapper;
        the model's own config wins and a mismatch raises ``ValueError``.
    """

    model_class_name, config_class_name, hub_example = 'EncodecModel', 'EncodecConfig', 'facebook/encodec_24khz'
    default_from_cache = True

    def __init__(self, target_sample_hz: int | None = None, strides=None, num_quantizers: int | None = None,
                 bandwidth: float = 6., *, pretrained_path=None, config=None):
        self.bandwidth = bandwidth
        self._expected = (target_sample_hz, strides)
        super().__init__(pretrained_path, config, num_quantizers)

    def _setup(self, num_quantizers):
        config = self.model.config
        self.target_sample_hz = int(config.sampling_rate)
        self.downsample_factor = int(math.prod(config.upsampling_ratios))
        # chunked models (e.g. encodec_48khz) give one code sequence per overlapping chunk plus a per-chunk scale
        # (normalize=True); neither fits a single (b, frames, q) code sequence, and keeping only the first chunk
        # or dropping the scales would silently lose audio / loudness
        if exists(config.chunk_length_s) or config.normalize or config.audio_channels != 1:
            raise ValueError(f'EncodecWrapper supports mono, unchunked, unnormalized EnCodec models (such as '
                             f'facebook/encodec_24khz); this one has audio_channels={config.audio_channels}, '
                             f'chunk_length_s={config.chunk_length_s}, normalize={config.normalize}')
        if self.bandwidth not in config.target_bandwidths:
            raise ValueError(f'bandwidth {self.bandwidth} is not one of the model\'s {list(config.target_bandwidths)}')
        available = int(self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))
        self.num_quantizers = available if num_quantizers is None else num_quantizers
        if self.num_quantizers != available:
            raise ValueError(f'bandwidth {self.bandwidth} kbps uses {available} quantizers, not {num_quantizers}')
        target_sample_hz, strides = self._expected
        if exists(target_sample_hz) and target_sample_hz != self.target_sample_hz:
            raise ValueError(f'model runs at {self.target_sample_hz} Hz, not target_sample_hz={target_sample_hz}')
        if exists(strides) and math.prod(strides) != self.downsample_factor:
            raise ValueError(f'model hop is {self.downsample_factor} samples, strides {tuple(strides)} give {math.prod(strides)}')

    def _encode(self, x: Tensor) -> Tensor:
        out = self.model.encode(x, bandwidth = self.bandwidth, return_dict = True)
        return out.audio_codes[0]                                          # (chunks=1, b, q, n) -> (b, q, n)

    def _decode(self, codes: Tensor) -> Tensor:
        return self.model.decode(codes[None], [None], return_dict = True).audio_values

    def _embed_codes(self, codes: Tensor) -> Tensor:
        return self.model.quantizer.decode(rearrange(codes, 'b q n -> q b n'))      # (b, dim, n)

    def _decode_embeddings(self, emb: Tensor) -> Tensor:
        return self.model.decoder(emb.to(next(self.model.parameters()).dtype))


class DacWrapper(_PretrainedCodec):
    """Descript Audio Codec (arXiv 2306.06546) on ``transformers.DacModel``; same interface as ``EncodecWrapper``."""

    model_class_name, config_class_name, hub_example = 'DacModel', 'DacConfig', 'descript/dac_16khz'

    def __init__(self, *, pretrained_path=None, config=None, num_quantizers: int | None = None):
        super().__init__(pretrained_path, config, num_quantizers)

    def _setup(self, num_quantizers):
        config = self.model.config
        self.target_sample_hz = int(config.sampling_rate)
        self.downsample_factor = int(config.hop_length)
        self.num_quantizers = num_quantizers if exists(num_quantizers) else int(config.n_codebooks)
        if not 1 <= self.num_quantizers <= config.n_codebooks:
            raise ValueError(f'num_quantizers must be in [1, {config.n_codebooks}]')

    def _encode(self, x: Tensor) -> Tensor:
        return self.model.encode(x, n_quantizers = self.num_quantizers, return_dict = True).audio_codes

    def _decode(self, codes: Tensor) -> Tensor:
        return self.model.decode(audio_codes = codes, return_dict = True).audio_values


class MimiWrapper(_PretrainedCodec):
    """Mimi (Kyutai, arXiv 2410.00037) on ``transformers.MimiModel``; same interface as ``EncodecWrapper``."""

    model_class_name, config_class_name, hub_example = 'MimiModel', 'MimiConfig', 'kyutai/mimi'

    def __init__(self, *, pretrained_path=None, config=None, num_quantizers: int | None = None):
        super().__init__(pretrained_path, config, num_quantizers)

    def _setup(self, num_quantizers):
        config = self.model.config
        self.target_sample_hz = int(config.sampling_rate)
        self.downsample_factor = int(round(config.sampling_rate / config.frame_rate))
        self.num_quantizers = num_quantizers if exists(num_quantizers) else int(config.num_quantizers)
        if not 1 <= self.num_quantizers <= config.num_quantizers:
            raise ValueError(f'num_quantizers must be in [1, {config.num_quantizers}]')

    def _encode(self, x: Tensor) -> Tensor:
        return self.model.encode(x, num_quantizers = self.num_quantizers, return_dict = True).audio_codes

    def _decode(self, codes: Tensor) -> Tensor:
        return self.model.decode(codes, return_dict = True).audio_values
