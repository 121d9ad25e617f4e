"""A causal inverse-STFT output head: features -> per-frame log-magnitude and phase spectra -> windowed inverse
FFT -> overlap-add. A decoder with this head emits spectra instead of learning the last upsampling octaves with
transposed convs (Vocos, arXiv 2306.00814, made causal here).

Causality: frame ``j`` of the features synthesises samples ``[j * hop, j * hop + n_fft)`` (its window starts at its
own frame instead of being centred on it), so an output sample depends on frames at or before its own. The part
of the last frames that reaches past the chunk is the streaming state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# a magnitude is exp(log-magnitude) capped here (as Vocos caps it) so one large activation cannot blow up the output
MAX_LOG_MAGNITUDE = math.log(1e2)
INIT_LOG_MAGNITUDE = math.log(0.1)


class CausalISTFTHead(nn.Module):
    """``(b, dim, frames)`` (or the time-major ``(b, dim, 1, frames)``) -> waveform ``(b, channels, frames * hop)``.

    A 1x1 conv maps each frame to ``channels * (n_fft // 2 + 1)`` log-magnitudes and as many phases; the spectrum
    ``exp(log_mag) * (cos(phase) + i sin(phase))`` goes through an inverse real FFT, a periodic Hann window and an
    overlap-add with ``hop`` samples between frames."""

    def __init__(self, dim: int, *, hop: int, n_fft: int, channels: int = 1):
        super().__init__()
        if hop < 1 or n_fft < hop or n_fft % 2:
            raise ValueError(f'the iSTFT head needs an even n_fft >= hop >= 1, got n_fft={n_fft}, hop={hop}')
        self.hop, self.n_fft, self.channels = hop, n_fft, channels
        self.bins = n_fft // 2 + 1
        self.proj = nn.Conv1d(dim, 2 * channels * self.bins, 1)
        self.register_buffer('window', torch.hann_window(n_fft, periodic = True), persistent = False)
        # overlap-added periodic Hann windows sum to n_fft / (2 hop) in the steady state (hop <= n_fft / 2): divide it out
        self.gain = 1. / max(1., n_fft / (2 * hop))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Random spectra at the start: log-magnitudes around ``INIT_LOG_MAGNITUDE``, spread by the input features
        (weights ``N(0, 1 / fan_in)``), phases likewise. A near-flat start (log-magnitude weights at 0.1 of that
        scale) learned slower on the demo's codec: held-out log-mel L1 1.117 against 0.968 after 600 steps."""
        nn.init.normal_(self.proj.weight, std = 1. / math.sqrt(self.proj.in_channels))
        self.proj.bias.zero_()
        self.proj.bias[:self.channels * self.bins] = INIT_LOG_MAGNITUDE

    def frames_to_segments(self, x: Tensor) -> Tensor:
        """``(b, dim, frames)`` -> windowed time segments ``(b * channels, n_fft, frames)`` in ``x``'s dtype."""
        if x.ndim == 4:                       # the time-major layout of nn/causal_conv.py
            x = x.squeeze(2)
        log_mag, phase = rearrange(self.proj(x.contiguous()), 'b (two c f) n -> two (b c) n f', two = 2,
                                   c = self.channels)
        # the FFT runs in float32 whatever the model's dtype or autocast (no complex bfloat16)
        mag = log_mag.float().clamp(max = MAX_LOG_MAGNITUDE).exp()
        phase = phase.float()
        spectrum = torch.complex(mag * phase.cos(), mag * phase.sin())
        segments = torch.fft.irfft(spectrum, n = self.n_fft, dim = -1, norm = 'ortho') * (self.window * self.gain)
        return rearrange(segments, 'b n t -> b t n').to(x.dtype)

    def _overlap_add(self, segments: Tensor) -> Tensor:
        """``(b, n_fft, frames)`` -> ``(b, frames * hop + n_fft - hop)``: segment ``j`` starts at ``j * hop``."""
        length = (segments.shape[-1] - 1) * self.hop + self.n_fft
        out = F.fold(segments, output_size = (1, length), kernel_size = (1, self.n_fft), stride = (1, self.hop))
        return rearrange(out, 'b 1 1 n -> b n')

    def _unflatten(self, wave: Tensor) -> Tensor:
        return rearrange(wave, '(b c) n -> b c n', c = self.channels)

    def forward(self, x: Tensor) -> Tensor:
        frames = x.shape[-1]
        if frames == 0:
            return x.new_zeros(x.shape[0], self.channels, 0)
        return self._unflatten(self._overlap_add(self.frames_to_segments(x))[:, :frames * self.hop])

    def init_state(self, batch_size: int, device = None, dtype = None) -> Tensor:
        """The overlap still to be added to the next chunk's first ``n_fft - hop`` samples."""
        return torch.zeros(batch_size * self.channels, self.n_fft - self.hop, device = device, dtype = dtype)

    def forward_stream(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        frames = x.shape[-1]
        if frames == 0:
            return x.new_zeros(x.shape[0], self.channels, 0), state
        wave = self._overlap_add(self.frames_to_segments(x))
        wave = torch.cat((wave[:, :state.shape[-1]] + state, wave[:, state.shape[-1]:]), dim = -1)
        emitted = frames * self.hop
        return self._unflatten(wave[:, :emitted]), wave[:, emitted:]
