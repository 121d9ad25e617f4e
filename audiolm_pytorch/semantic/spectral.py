"""A pretrained-free semantic tokenizer: k-means on standardized log-mel frames (50 per second by default).

It has none of HuBERT's phonetic abstraction, but it needs no download, fits in seconds on a few files, and
satisfies the same ``SemanticTokenizer`` interface, so small experiments, tests and the demo can run the whole
AudioLM pipeline offline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.audio import MelSpectrogram
from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.semantic.base import WaveInputMixin
from audiolm_pytorch.data import list_audio_files
from audiolm_pytorch.semantic.kmeans import KMeans, collect_features, minibatch_kmeans
from audiolm_pytorch.utils import beartype, exists

__all__ = ['SpectralKmeansTokenizer']

PAD_ID = -1


class SpectralKmeansTokenizer(WaveInputMixin, Checkpointable, nn.Module):
    """k-means over log-mel frames, standardized per mel bin with statistics of the fitting data.

    Args:
        codebook_size: number of clusters (tokens).
        target_sample_hz: rate of the waveforms ``forward`` receives.
        frame_hz: tokens per second; ``target_sample_hz / frame_hz`` (the hop, ``downsample_factor``) must be
            an integer.
        n_mels: mel bins (the feature dimension).
        seq_len_multiple_of: cut inputs to a multiple of this many samples first.

    Fit with ``fit(files_or_folder_or_waves)``; save with ``save(path)`` and rebuild with
    ``SpectralKmeansTokenizer.init_and_load_from(path)``.
    ``forward(wave (b, n), flatten=True, input_sample_hz=None) -> ids (b, n // downsample_factor)``.
    """

    @beartype
    def __init__(
        self, *, codebook_size: int = 512, target_sample_hz: int = 16000, frame_hz: int = 50, n_mels: int = 64,
        seq_len_multiple_of: int | None = None,
    ):
        super().__init__()
        if target_sample_hz % frame_hz:
            raise ValueError(f'target_sample_hz ({target_sample_hz}) must be a multiple of frame_hz ({frame_hz})')
        if codebook_size < 2:
            raise ValueError(f'codebook_size must be >= 2, got {codebook_size}')
        hop = target_sample_hz // frame_hz
        win = 2 * hop                                   # 40 ms windows, 50% overlap at 50 Hz
        self.n_fft = 2 ** math.ceil(math.log2(win))
        self.mel = MelSpectrogram(sample_hz = target_sample_hz, n_fft = self.n_fft, win_length = win, hop_length = hop,
                                  n_mels = n_mels, power = 1., center = True, log = True)
        self.kmeans = KMeans(torch.zeros(codebook_size, n_mels))
        self.register_buffer('mean', torch.zeros(n_mels))
        self.register_buffer('std', torch.ones(n_mels))
        self.register_buffer('fitted', torch.tensor(False))

        self.target_sample_hz = target_sample_hz
        self.seq_len_multiple_of = seq_len_multiple_of
        self._hop = hop
        self._codebook_size = codebook_size
        self.n_mels = n_mels

    # interface (target_sample_hz, seq_len_multiple_of: WaveInputMixin) -----------------------------------

    def _check_target_sample_hz(self, value: int):
        built = getattr(self, '_target_sample_hz', None)
        if exists(built) and value != built:       # the mel front-end and the fitted clusters are tied to the rate
            raise ValueError(f'this SpectralKmeansTokenizer is built for target_sample_hz={built}: build a new one '
                             f'with target_sample_hz={value} (and refit it), or pass input_sample_hz={value} '
                             'to resample the input instead')

    @property
    def downsample_factor(self) -> int:
        return self._hop

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    @property
    def dim(self) -> int:
        return self.n_mels

    @property
    def min_samples(self) -> int:
        return max(self._hop, self.n_fft // 2 + 1)     # reflect padding of the centered STFT needs n > n_fft / 2

    def num_frames(self, num_samples: int) -> int:
        return self.cropped_num_samples(num_samples) // self._hop

    # features -------------------------------------------------------------------------------------------

    def _log_mel(self, wave: Tensor) -> Tensor:
        """``(b, n) -> (b, n // hop, n_mels)``: frame ``i`` is centered on sample ``i * hop``."""
        if wave.shape[-1] < self.min_samples:
            raise ValueError(f'input of {wave.shape[-1]} samples is shorter than {self.min_samples} samples')
        mel = self.mel(wave.float())                                  # (b, m, n // hop + 1)
        return rearrange(mel[..., :wave.shape[-1] // self._hop], 'b m t -> b t m')

    def _prepare(self, wave: Tensor, input_sample_hz: int | None) -> Tensor:
        return self.to_target_rate(self.as_wave_batch(wave).to(self.mean.device).float(), input_sample_hz)

    @torch.no_grad()
    def extract_features(self, wave: Tensor, input_sample_hz: int | None = None) -> Tensor:
        """``wave (b, n)`` -> standardized log-mel frames ``(b, frames, n_mels)``."""
        return (self._log_mel(self._prepare(wave, input_sample_hz)) - self.mean) / self.std

    @torch.no_grad()
    def forward(self, wave: Tensor, flatten: bool = True, input_sample_hz: int | None = None, *,
                lengths: Tensor | None = None) -> Tensor:
        """Ids ``(b, frames)`` (``flatten`` kept for interface compatibility). With ``lengths`` (valid samples per
        row, at the input rate) frames past each row's end are ``-1``."""
        if not bool(self.fitted):
            raise RuntimeError('SpectralKmeansTokenizer is not fitted: call .fit(audio) or load a fitted checkpoint')
        ids = self.kmeans(self.extract_features(wave, input_sample_hz))
        if exists(lengths):
            lengths = self.lengths_at_target_rate(torch.as_tensor(lengths, device = ids.device).long(), input_sample_hz)
            ids = ids.masked_fill(torch.arange(ids.shape[-1], device = ids.device) >= (lengths // self._hop)[:, None],
                                  PAD_ID)
        return ids

    # fitting --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(
        self, data: str | os.PathLike | Sequence[str | os.PathLike] | Tensor, *, input_sample_hz: int | None = None,
        max_frames: int = 500_000, batch_size: int = 4096, epochs: float = 20., seed: int = 0,
        segment_seconds: float = 30.,
    ) -> tuple[float, int]:
        """Fit the standardization and the centroids on a folder / list of audio files or a waveform batch
        ``(b, n)`` (at ``input_sample_hz``, default ``target_sample_hz``). Runs on this module's device.

        Returns ``(inertia, num_frames)``: mean squared distance to the nearest centroid, frames used.
        """
        device = self.mean.device
        if isinstance(data, Tensor):
            frames = self._log_mel(self._prepare(data, input_sample_hz))
            frames = rearrange(frames, 'b t m -> (b t) m').cpu()
            if frames.shape[0] > max_frames:
                frames = frames[torch.randperm(frames.shape[0], generator = torch.Generator().manual_seed(seed),
                                               device = 'cpu')[:max_frames]]
        else:
            files = list_audio_files(data)
            frames = collect_features(self._log_mel, files, sample_hz = self.target_sample_hz, device = device,
                                      max_frames = max_frames, segment_seconds = segment_seconds, seed = seed)

        mean, std = frames.mean(0), frames.std(0).clamp(min = 1e-3)
        centroids, inertia = minibatch_kmeans((frames - mean) / std, clusters = self.codebook_size,
                                              batch_size = batch_size, epochs = epochs, seed = seed, device = device)
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.kmeans.centroids.copy_(centroids)
        self.fitted.fill_(True)
        return inertia, frames.shape[0]
