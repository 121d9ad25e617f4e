"""A causal STFT front end for an encoder: waveform -> per-frame spectral features at ``hop`` samples per frame.

Frame ``k`` windows the ``n_fft`` samples that end with its own hop, ``[(k + 1) * hop - n_fft, (k + 1) * hop)``
(zeros before the start), so a frame depends on no sample after its end. Features per frame: log-magnitudes and
the power-law compressed real and imaginary parts (``X / |X| * |X| ** 0.3``), projected by a 1x1 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

LOG_MAGNITUDE_FLOOR = 1e-4
COMPRESSION = 0.3


class CausalSTFTFront(nn.Module):
    """``(b, channels, n)`` (or time-major ``(b, channels, 1, n)``) -> ``(b, dim, n // hop)`` (same layout)."""

    def __init__(self, dim: int, *, hop: int, n_fft: int, channels: int = 1):
        super().__init__()
        if hop < 1 or n_fft < hop:
            raise ValueError(f'the STFT front needs n_fft >= hop >= 1, got n_fft={n_fft}, hop={hop}')
        self.hop, self.n_fft, self.channels = hop, n_fft, channels
        self.bins = n_fft // 2 + 1
        self.proj = nn.Conv1d(3 * channels * self.bins, dim, 1)
        self.register_buffer('window', torch.hann_window(n_fft, periodic = True), persistent = False)

    def spectral_features(self, padded: Tensor) -> Tensor:
        """``(b, c, n_fft - hop + frames * hop)`` -> ``(b, c, frames, 3 * bins)``: per frame, ``log10`` magnitudes
        (floor ``LOG_MAGNITUDE_FLOOR``), then the compressed real parts, then the compressed imaginary parts."""
        segments = padded.unfold(-1, self.n_fft, self.hop) * self.window       # (b, c, frames, n_fft)
        spectrum = torch.fft.rfft(segments.float(), dim = -1, norm = 'ortho')
        magnitude = spectrum.abs()
        scale = magnitude.clamp(min = 1e-8).pow(COMPRESSION - 1)
        return torch.cat(((magnitude + LOG_MAGNITUDE_FLOOR).log10(), spectrum.real * scale, spectrum.imag * scale),
                         dim = -1).to(padded.dtype)

    def _project(self, padded: Tensor) -> Tensor:
        return self.proj(rearrange(self.spectral_features(padded), 'b c t f -> b (c f) t'))

    def forward(self, x: Tensor) -> Tensor:
        time_major = x.ndim == 4
        if time_major:
            x = x.squeeze(2)
        frames = x.shape[-1] // self.hop
        if frames == 0:
            out = x.new_zeros(x.shape[0], self.proj.out_channels, 0)
        else:
            out = self._project(F.pad(x[..., :frames * self.hop], (self.n_fft - self.hop, 0)))
        return out.unsqueeze(2).contiguous(memory_format = torch.channels_last) if time_major else out

    def init_state(self, batch_size: int, device = None, dtype = None) -> Tensor:
        """The last ``n_fft - hop`` samples seen (zeros at the start)."""
        return torch.zeros(batch_size, self.channels, self.n_fft - self.hop, device = device, dtype = dtype)

    def forward_stream(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % self.hop:
            raise ValueError(f'the STFT front streams whole hops: {x.shape[-1]} samples is not a multiple of {self.hop}')
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.proj.out_channels, 0), state
        padded = torch.cat((state, x), dim = -1)
        return self._project(padded), padded[..., padded.shape[-1] - (self.n_fft - self.hop):]
