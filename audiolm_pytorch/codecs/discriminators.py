"""Real-valued discriminators for codec training: multi-scale waveform (MelGAN, arXiv 1910.06711), STFT
(SoundStream, arXiv 2107.03312, fig. 4; real and imaginary parts as two channels) and multi-period (HiFi-GAN,
arXiv 2010.05646).

Every discriminator here returns a list of ``(logits, features)`` pairs, one per sub-discriminator, so a codec
can combine them freely. No complex-valued parameters (safe for DDP / FSDP collectives); spectra are computed
in float32 even under bf16 autocast.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable

DiscriminatorOutput = list[tuple[Tensor, list[Tensor]]]


def _wn(module: nn.Module, enabled: bool) -> nn.Module:
    # weight normalisation in discriminators as MelGAN / HiFi-GAN / EnCodec / DAC use it
    return nn.utils.parametrizations.weight_norm(module) if enabled else module


class WaveDiscriminator(nn.Module):
    """One MelGAN-style waveform discriminator: grouped strided 1-D convolutions.

    ``forward(x (b, c, n)) -> (logits (b, 1, n'), features [ (b, c_i, n_i) ... ])``. ``weight_norm``: weight
    normalisation on every conv.
    """

    def __init__(self, *, channels: int = 16, layers: int = 4, groups: Sequence[int] = (4, 16, 64, 256),
                 chan_max: int = 1024, input_channels: int = 1, weight_norm: bool = False):
        super().__init__()
        wn = lambda m: _wn(m, weight_norm)
        self.init_conv = nn.Sequential(wn(nn.Conv1d(input_channels, channels, 15, padding = 7)), nn.LeakyReLU(0.1))
        self.conv_layers = nn.ModuleList()
        current = channels
        for _, group in zip(range(layers), groups):
            chan_out = min(current * 4, chan_max)
            group = min(group, current)
            while current % group or chan_out % group:
                group //= 2
            self.conv_layers.append(nn.Sequential(
                wn(nn.Conv1d(current, chan_out, 41, stride = 4, padding = 20, groups = group)), nn.LeakyReLU(0.1)))
            current = chan_out
        self.final_conv = nn.Sequential(wn(nn.Conv1d(current, current, 5, padding = 2)), nn.LeakyReLU(0.1))
        self.to_logits = wn(nn.Conv1d(current, 1, 3, padding = 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = []
        x = self.init_conv(x)
        for layer in self.conv_layers:
            x = layer(x)
            features.append(x)
        x = self.final_conv(x)
        features.append(x)
        return self.to_logits(x), features


class MultiScaleDiscriminator(nn.Module):
    """Waveform discriminators on the signal average-pooled to each scale (e.g. ``(1, 0.5, 0.25)``).

    ``forward(x (b, c, n)) -> [(logits, features) per scale]``.
    """

    def __init__(self, *, scales: Sequence[float | int] = (1, 0.5, 0.25), input_channels: int = 1, **discr_kwargs):
        super().__init__()
        scales = tuple(scales)
        if not scales or scales[0] != 1:
            raise ValueError(f'discriminator scales must start at 1 (the input rate), got {scales}')
        factors = []
        for previous, current in zip(scales[:-1], scales[1:]):
            factor = previous / current
            if factor < 1 or abs(factor - round(factor)) > 1e-6:
                raise ValueError(f'each discriminator scale must divide the previous by an integer, got {scales}')
            factors.append(int(round(factor)))
        self.scales = scales
        self.discriminators = nn.ModuleList(
            [WaveDiscriminator(input_channels = input_channels, **discr_kwargs) for _ in scales])
        self.downsamples = nn.ModuleList(
            [nn.Identity()] + [nn.AvgPool1d(2 * f, stride = f, padding = f, count_include_pad = False) for f in factors])

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        outputs = []
        for discr, downsample in zip(self.discriminators, self.downsamples):
            x = downsample(x)
            outputs.append(discr(x))
        return outputs


class STFTDiscriminator(Checkpointable, nn.Module):
    """SoundStream's STFT discriminator with real and imaginary parts as input channels.

    A 7x7 conv, then blocks of (3x3 conv, strided ``(s_t + 2) x (s_f + 2)`` conv) over (time, frequency).

    Args:
        channels: width of the first layer; block ``i`` has ``channels * channel_mults[i]``.
        strides: ``(time, frequency)`` stride per block. n_fft, hop_length, win_length: STFT settings
        (paper: window 1024, hop 256). input_channels: audio channels. weight_norm: weight normalisation on
        every conv.

    ``forward(x (b, c, n)) -> [(logits (b, 1, t', f'), features)]``.
    """

    def __init__(self, *, channels: int = 32, strides: Sequence[Sequence[int]] = ((1, 2), (2, 2), (1, 2), (2, 2), (1, 2), (2, 2)),
                 channel_mults: Sequence[int] = (1, 2, 4, 4, 8, 8), n_fft: int = 1024, hop_length: int = 256,
                 win_length: int = 1024, input_channels: int = 1, weight_norm: bool = False):
        super().__init__()
        wn = lambda m: _wn(m, weight_norm)
        if len(strides) != len(channel_mults):
            raise ValueError(f'STFT discriminator needs one stride per channel multiple, got {len(strides)} and {len(channel_mults)}')
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer('window', torch.hann_window(win_length), persistent = False)
        self.init_conv = nn.Sequential(wn(nn.Conv2d(2 * input_channels, channels, 7, padding = 3)), nn.LeakyReLU(0.1))
        layer_channels = [channels, *(channels * m for m in channel_mults)]
        self.blocks = nn.ModuleList()
        for (chan_in, chan_out), stride in zip(zip(layer_channels[:-1], layer_channels[1:]), strides):
            stride = tuple(stride)
            kernel = tuple(s + 2 for s in stride)
            self.blocks.append(nn.Sequential(
                wn(nn.Conv2d(chan_in, chan_in, 3, padding = 1)), nn.LeakyReLU(0.1),
                wn(nn.Conv2d(chan_in, chan_out, kernel, stride = stride, padding = tuple(k // 2 for k in kernel))),
                nn.LeakyReLU(0.1)))
        self.to_logits = wn(nn.Conv2d(layer_channels[-1], 1, 3, padding = 1))

    def spectrogram(self, x: Tensor) -> Tensor:
        """``(b, c, n) -> (b, 2c, frames, freqs)`` real/imag channels, in float32."""
        batch = x.shape[0]
        with torch.autocast(device_type = x.device.type, enabled = False):
            spec = torch.stft(rearrange(x.float(), 'b c n -> (b c) n'), self.n_fft, hop_length = self.hop_length,
                              win_length = self.win_length, window = self.window.float(), center = True,
                              return_complex = True)
            spec = torch.view_as_real(spec)                                 # (bc, f, t, 2)
        return rearrange(spec, '(b c) f t ri -> b (c ri) t f', b = batch)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        spec = self.spectrogram(x)            # float32; under autocast the convs cast it themselves
        features = []
        h = self.init_conv(spec)
        features.append(h)
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return [(self.to_logits(h), features)]


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN period discriminator: the waveform folded to ``(n / period, period)`` and 2-D convs over time."""

    def __init__(self, period: int, *, channels: Sequence[int] = (32, 64, 128, 256), input_channels: int = 1,
                 weight_norm: bool = False):
        super().__init__()
        wn = lambda m: _wn(m, weight_norm)
        self.period = period
        layers, current = [], input_channels
        for chan_out in channels:
            layers.append(nn.Sequential(wn(nn.Conv2d(current, chan_out, (5, 1), stride = (3, 1), padding = (2, 0))),
                                        nn.LeakyReLU(0.1)))
            current = chan_out
        layers.append(nn.Sequential(wn(nn.Conv2d(current, current, (5, 1), padding = (2, 0))), nn.LeakyReLU(0.1)))
        self.layers = nn.ModuleList(layers)
        self.to_logits = wn(nn.Conv2d(current, 1, (3, 1), padding = (1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        n = x.shape[-1]
        if n % self.period:
            x = F.pad(x, (0, self.period - n % self.period), mode = 'reflect' if n > self.period else 'constant')
        x = rearrange(x, 'b c (t p) -> b c t p', p = self.period)
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return self.to_logits(x), features


class MultiPeriodDiscriminator(nn.Module):
    """``forward(x (b, c, n)) -> [(logits, features) per period]``."""

    def __init__(self, *, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: Sequence[int] = (32, 64, 128, 256),
                 input_channels: int = 1, weight_norm: bool = False):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(p, channels = channels, input_channels = input_channels, weight_norm = weight_norm)
             for p in periods])

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        return [discr(x) for discr in self.discriminators]
