"""SoundStream's causal convolutional encoder and decoder (arXiv 2107.03312, fig. 2): residual units with
dilations 1 / 3 / 9, strided downsampling blocks, transposed-conv upsampling blocks.

Every module is a ``StreamingSequential`` of causal layers (``nn/causal_conv.py``), so the encoder and decoder
also run chunk by chunk with an explicit state. Parameter paths (``encoder.1.0.fn.0...``) are those of
checkpoints: keep the layer order.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from audiolm_pytorch.nn.causal_conv import (CausalConv1d, CausalConvTranspose1d, CausalSqueezeExcite, Residual, Snake,
                                            StreamingSequential)


def _activation(kind: str, dim: int) -> nn.Module:
    return Snake(dim) if kind == 'snake' else nn.ELU(inplace = True)


def residual_unit(dim: int, dilation: int, squeeze_excite: bool = False, kernel_size: int = 7, *,
                  weight_norm: bool = False, activation: str = 'elu') -> Residual:
    layers = [CausalConv1d(dim, dim, kernel_size, dilation = dilation, weight_norm = weight_norm),
              _activation(activation, dim), CausalConv1d(dim, dim, 1, weight_norm = weight_norm),
              _activation(activation, dim)]
    if squeeze_excite:
        layers.append(CausalSqueezeExcite(dim))
    return Residual(StreamingSequential(*layers))


def encoder_block(chan_in: int, chan_out: int, stride: int, dilations: Sequence[int], squeeze_excite: bool, **conv):
    return StreamingSequential(*(residual_unit(chan_in, d, squeeze_excite, **conv) for d in dilations),
                               CausalConv1d(chan_in, chan_out, 2 * stride, stride = stride,
                                            weight_norm = conv['weight_norm']),
                               _activation(conv['activation'], chan_out))


def decoder_block(chan_in: int, chan_out: int, stride: int, dilations: Sequence[int], squeeze_excite: bool, **conv):
    return StreamingSequential(CausalConvTranspose1d(chan_in, chan_out, stride = stride,
                                                     weight_norm = conv['weight_norm']),
                               _activation(conv['activation'], chan_out),
                               *(residual_unit(chan_out, d, squeeze_excite, **conv) for d in dilations))


def build_encoder(*, input_channels: int, channels: int, channel_mults: Sequence[int], strides: Sequence[int],
                  codebook_dim: int, dilations: Sequence[int], squeeze_excite: bool, weight_norm: bool,
                  activation: str) -> StreamingSequential:
    """Waveform ``(b, input_channels, n)`` -> latents ``(b, codebook_dim, n // prod(strides))``."""
    layer_channels = (channels, *(channels * m for m in channel_mults))
    conv = dict(weight_norm = weight_norm, activation = activation)
    return StreamingSequential(
        CausalConv1d(input_channels, channels, 7, weight_norm = weight_norm),
        *(encoder_block(c_in, c_out, s, dilations, squeeze_excite, **conv)
          for c_in, c_out, s in zip(layer_channels[:-1], layer_channels[1:], strides)),
        CausalConv1d(layer_channels[-1], codebook_dim, 3, weight_norm = weight_norm))


def build_decoder(*, input_channels: int, channels: int, channel_mults: Sequence[int], strides: Sequence[int],
                  codebook_dim: int, dilations: Sequence[int], squeeze_excite: bool, weight_norm: bool,
                  activation: str) -> StreamingSequential:
    """Latents ``(b, codebook_dim, frames)`` -> waveform ``(b, input_channels, frames * prod(strides))``: the
    encoder's blocks mirrored."""
    layer_channels = (channels, *(channels * m for m in channel_mults))
    pairs = list(zip(layer_channels[:-1], layer_channels[1:]))
    conv = dict(weight_norm = weight_norm, activation = activation)
    return StreamingSequential(
        CausalConv1d(codebook_dim, layer_channels[-1], 7, weight_norm = weight_norm),
        _activation(activation, layer_channels[-1]),
        *(decoder_block(c_out, c_in, s, dilations, squeeze_excite, **conv)
          for (c_in, c_out), s in zip(reversed(pairs), reversed(strides))),
        CausalConv1d(channels, input_channels, 7, weight_norm = weight_norm))
