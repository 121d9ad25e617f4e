"""SoundStream's causal convolutional encoder and decoder (arXiv 2107.03312, fig. 2): residual units with
dilations 1 / 3 / 9, strided downsampling blocks, transposed-conv upsampling blocks.

Every module is a ``StreamingSequential`` of causal layers (``nn/causal_conv.py``), so the encoder and decoder
also run chunk by chunk with an explicit state. Parameter paths (``encoder.1.0.fn.0...``) are those of
checkpoints: keep the layer order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from audiolm_pytorch.nn.causal_conv import (CausalConv1d, CausalConvTranspose1d, CausalSqueezeExcite, Residual, Snake,
                                            StreamingSequential)
from audiolm_pytorch.nn.istft_head import CausalISTFTHead
from audiolm_pytorch.nn.stft_front import CausalSTFTFront


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
                  activation: str, stft_hop: int | None = None, stft_n_fft: int | None = None
                  ) -> StreamingSequential:
    """Waveform ``(b, input_channels, n)`` -> latents ``(b, codebook_dim, n // prod(strides))``. With ``stft_hop``,
    a ``CausalSTFTFront`` (window ``stft_n_fft``, default ``4 * stft_hop``) replaces the first blocks, those that
    would downsample by ``stft_hop``."""
    layer_channels = (channels, *(channels * m for m in channel_mults))
    conv = dict(weight_norm = weight_norm, activation = activation)
    replaced = stft_blocks(strides, stft_hop, 'stft_encoder_hop') if stft_hop is not None else 0
    if replaced:
        stem = [CausalSTFTFront(layer_channels[replaced], hop = stft_hop, n_fft = stft_n_fft or 4 * stft_hop,
                                channels = input_channels), _activation(activation, layer_channels[replaced])]
    else:
        stem = [CausalConv1d(input_channels, channels, 7, weight_norm = weight_norm)]
    blocks = list(zip(layer_channels[:-1], layer_channels[1:], strides))[replaced:]
    return StreamingSequential(*stem,
                               *(encoder_block(c_in, c_out, s, dilations, squeeze_excite, **conv)
                                 for c_in, c_out, s in blocks),
                               CausalConv1d(layer_channels[-1], codebook_dim, 3, weight_norm = weight_norm))


# the last conv of each residual unit's branch starts at this fraction of its variance-preserving scale, so the
# 12-odd residual sums of the encoder / decoder grow the signal by ~1% each instead of doubling its variance
RESIDUAL_BRANCH_SCALE = 0.1
CONV_INITS = ('variance_preserving', 'torch_default')


def _set_weight(conv: nn.Module, weight: torch.Tensor):
    """Assign ``weight`` to a conv, through its weight-norm parametrization if it has one (right inverse)."""
    with torch.no_grad():
        if nn.utils.parametrize.is_parametrized(conv, 'weight'):
            conv.weight = weight
        else:
            conv.weight.copy_(weight)


@torch.no_grad()
def init_variance_preserving(network: nn.Module, residual_branch_scale: float = RESIDUAL_BRANCH_SCALE):
    """Re-initialise every conv of an encoder / decoder so the signal keeps its scale from input to output: weights
    ``N(0, 1 / fan_in)`` (fan-in per output sample: ``in_channels * kernel / stride`` for transposed convs), zero
    biases, and the last conv of each residual branch scaled by ``residual_branch_scale``.

    Why (issue 13, benchmarks/RESULTS.md "Codec init and the bottleneck attention"): with PyTorch's default init
    the time-varying part of the signal shrinks ~x0.7 per block while uniform biases add a constant, so the small
    codec's latents varied over time by a quarter of their spread at step 0 (0.020 against 0.083) and the first
    quantizer level saw nearly one vector.
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            fan_in = module.in_channels * module.kernel_size[0]
            if isinstance(module, nn.ConvTranspose1d):
                fan_in = fan_in / module.stride[0]
            _set_weight(module, torch.randn_like(module.weight) / math.sqrt(fan_in))
            if module.bias is not None:
                module.bias.zero_()
    for module in network.modules():
        if isinstance(module, Residual):
            # the branch's own last conv (a squeeze-excitation after it keeps its init)
            last = [m for m in module.fn.children() if isinstance(m, CausalConv1d)][-1].conv
            _set_weight(last, last.weight * residual_branch_scale)
    for module in network.modules():
        if isinstance(module, CausalISTFTHead):
            module.reset_parameters()


def stft_blocks(strides: Sequence[int], hop: int, name: str) -> int:
    """How many of the encoder's first (decoder's last) blocks an STFT front (iSTFT head) of ``hop`` samples per
    frame replaces: ``hop`` must be the product of the first ``k`` strides (40 = 2 * 4 * 5 for (2, 4, 5, 8): k = 3)."""
    product = 1
    for k, stride in enumerate(strides, start = 1):
        product *= stride
        if product == hop:
            return k
    prefixes = [math.prod(strides[:k]) for k in range(1, len(strides) + 1)]
    raise ValueError(f'{name} must be a product of the first encoder strides {tuple(strides)}: one of {prefixes}, '
                     f'got {hop}')


def build_decoder(*, input_channels: int, channels: int, channel_mults: Sequence[int], strides: Sequence[int],
                  codebook_dim: int, dilations: Sequence[int], squeeze_excite: bool, weight_norm: bool,
                  activation: str, istft_hop: int | None = None, istft_n_fft: int | None = None
                  ) -> StreamingSequential:
    """Latents ``(b, codebook_dim, frames)`` -> waveform ``(b, input_channels, frames * prod(strides))``: the
    encoder's blocks mirrored. With ``istft_hop``, the blocks that would upsample the last ``istft_hop`` samples per
    step are replaced by a ``CausalISTFTHead`` (window ``istft_n_fft``, default ``4 * istft_hop``)."""
    layer_channels = (channels, *(channels * m for m in channel_mults))
    pairs = list(zip(layer_channels[:-1], layer_channels[1:]))
    conv = dict(weight_norm = weight_norm, activation = activation)
    replaced = stft_blocks(strides, istft_hop, 'istft_decoder_hop') if istft_hop is not None else 0
    kept = len(strides) - replaced
    blocks = [decoder_block(c_out, c_in, s, dilations, squeeze_excite, **conv)
              for (c_in, c_out), s in list(zip(reversed(pairs), reversed(strides)))[:kept]]
    if replaced:   # the kept blocks end at layer_channels[replaced] channels
        head = CausalISTFTHead(layer_channels[replaced], hop = istft_hop, n_fft = istft_n_fft or 4 * istft_hop,
                               channels = input_channels)
    else:
        head = CausalConv1d(channels, input_channels, 7, weight_norm = weight_norm)
    return StreamingSequential(
        CausalConv1d(codebook_dim, layer_channels[-1], 7, weight_norm = weight_norm),
        _activation(activation, layer_channels[-1]),
        *blocks,
        head)
