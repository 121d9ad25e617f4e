"""Contrastive losses of MuLaN as modules with their learned temperature (and bias): softmax (InfoNCE, optionally
decoupled) and pairwise sigmoid (SigLIP), for one or several layers at once.

``SoftmaxContrastiveLearning`` / ``SigmoidContrastiveLearning`` keep the names and keywords of musiclm-pytorch:
``forward(audio_latents, text_latents)`` takes L2-normalised latents ``(b, d)`` or ``(layers, b, d)`` (pairs
matched by index) and returns a scalar loss, summed over layers. In distributed training (``torch.distributed``
initialised) the latents of every process are gathered, so each process contrasts against the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.musiclm.distributed import all_gather_with_grad
from audiolm_pytorch.utils import beartype, exists

__all__ = ['SoftmaxContrastiveLearning', 'SigmoidContrastiveLearning', 'HierarchicalContrastiveLoss',
           'softmax_contrastive_loss',
           'sigmoid_contrastive_loss']


def softmax_contrastive_loss(sims: Tensor, decoupled: bool = True) -> Tensor:
    """Symmetric InfoNCE on ``sims (b, b)`` (text rows, audio columns; matches on the diagonal, already scaled
    by the temperature). ``decoupled`` removes the positive pair from the denominator (DCL, arXiv 2110.06848)."""
    eye = torch.eye(sims.shape[0], device = sims.device, dtype = torch.bool)
    positives = sims.diagonal()
    losses = []
    for logits in (sims, sims.t()):
        if decoupled:
            logits = logits.masked_fill(eye, float('-inf'))
        if decoupled and sims.shape[0] == 1:
            denominator = torch.zeros_like(positives)   # nothing to contrast against
        else:
            denominator = logits.logsumexp(dim = -1)
        losses.append((denominator - positives).mean())
    return sum(losses) / 2


def sigmoid_contrastive_loss(sims: Tensor, bias: Tensor) -> Tensor:
    """Pairwise sigmoid loss (SigLIP, arXiv 2303.15343) on scaled ``sims (b, b)``; ``+1`` on the diagonal."""
    labels = 2 * torch.eye(sims.shape[0], device = sims.device, dtype = sims.dtype) - 1
    return -F.logsigmoid(labels * (sims + bias)).sum() / sims.shape[0]


def _layered(audio_latents: Tensor, text_latents: Tensor, layers: int) -> tuple[Tensor, Tensor]:
    if audio_latents.ndim == 2:
        audio_latents = rearrange(audio_latents, 'b d -> 1 b d')
    if text_latents.ndim == 2:
        text_latents = rearrange(text_latents, 'b d -> 1 b d')
    if audio_latents.ndim != 3 or audio_latents.shape != text_latents.shape:
        raise ValueError(f'audio and text latents must both be (b, d) or (layers, b, d) of the same shape, got '
                         f'{tuple(audio_latents.shape)} and {tuple(text_latents.shape)}')
    if audio_latents.shape[0] != layers:
        raise ValueError(f'latents hold {audio_latents.shape[0]} layers, this loss was built with layers={layers}')
    layers = audio_latents.shape[0]
    gather = lambda t: rearrange(all_gather_with_grad(rearrange(t, 'l b d -> b (l d)')), 'b (l d) -> l b d', l = layers)
    return gather(audio_latents), gather(text_latents)


class SoftmaxContrastiveLearning(nn.Module):
    """Softmax (InfoNCE) contrastive loss with a learned temperature per layer.

    Args:
        layers: how many layers of latents it scores (each with its own temperature).
        decoupled_contrastive_learning: leave the positive pair out of the denominator (DCL).
        init_temp: initial similarity scale (stored as its log). max_temperature: cap on the scale (None: none;
            MuLaN uses 100 as CLIP does).
    """

    @beartype
    def __init__(self, *, layers: int = 1, decoupled_contrastive_learning: bool = False, init_temp: float = 10.,
                 max_temperature: float | None = None):
        super().__init__()
        self.layers, self.decoupled_contrastive_learning = layers, decoupled_contrastive_learning
        self.max_temperature = max_temperature
        self.temperatures = nn.Parameter(torch.full((layers, 1, 1), math.log(init_temp)))

    def scale(self) -> Tensor:
        log_scale = self.temperatures
        if exists(self.max_temperature):
            log_scale = log_scale.clamp(max = math.log(self.max_temperature))
        return log_scale.exp()

    def forward(self, audio_latents: Tensor, text_latents: Tensor) -> Tensor:
        audio_latents, text_latents = _layered(audio_latents, text_latents, self.layers)
        sims = torch.einsum('l i d, l j d -> l i j', text_latents, audio_latents) * self.scale()
        return sum(softmax_contrastive_loss(layer_sims, decoupled = self.decoupled_contrastive_learning)
                   for layer_sims in sims)


class SigmoidContrastiveLearning(nn.Module):
    """Pairwise sigmoid contrastive loss (SigLIP) with a learned temperature and bias per layer.

    Args: layers, init_temp (initial scale, stored as its log), init_bias (initial logit bias), max_temperature.
    """

    @beartype
    def __init__(self, *, layers: int = 1, init_temp: float = 10., init_bias: float = -10.,
                 max_temperature: float | None = None):
        super().__init__()
        self.layers, self.max_temperature = layers, max_temperature
        self.temperatures = nn.Parameter(torch.full((layers, 1, 1), math.log(init_temp)))
        self.bias = nn.Parameter(torch.full((layers, 1, 1), float(init_bias)))

    scale = SoftmaxContrastiveLearning.scale

    def forward(self, audio_latents: Tensor, text_latents: Tensor) -> Tensor:
        audio_latents, text_latents = _layered(audio_latents, text_latents, self.layers)
        sims = torch.einsum('l i d, l j d -> l i j', text_latents, audio_latents) * self.scale()
        return sum(sigmoid_contrastive_loss(layer_sims, bias) for layer_sims, bias in zip(sims, self.bias))


class HierarchicalContrastiveLoss(nn.Module):
    """Contrastive loss on intermediate layers of both towers (musiclm-pytorch's ``MultiLayerContrastiveLoss``).

    ``forward(audio_layers=(l, b, n, d_audio), text_layers=(l, b, 1 + t, d_text))``: audio tokens are mean-pooled,
    text layers read at the CLS position; each layer is layer-normalised (learned per-layer gain), projected to
    ``dim_latent`` with its own weights, L2-normalised and scored by a ``layers``-layer contrastive module.
    """

    @beartype
    def __init__(self, *, audio_dim: int, text_dim: int, dim_latent: int, layers: int,
                 decoupled_contrastive_learning: bool = False, sigmoid_contrastive_loss: bool = False):
        super().__init__()
        self.layers = layers
        self.audio_gamma = nn.Parameter(torch.ones(layers, 1, audio_dim))
        self.audio_latent_weight = nn.Parameter(torch.randn(layers, audio_dim, dim_latent) * audio_dim ** -0.5)
        self.audio_latent_bias = nn.Parameter(torch.zeros(layers, 1, dim_latent))
        self.text_gamma = nn.Parameter(torch.ones(layers, 1, text_dim))
        self.text_latent_weight = nn.Parameter(torch.randn(layers, text_dim, dim_latent) * text_dim ** -0.5)
        self.text_latent_bias = nn.Parameter(torch.zeros(layers, 1, dim_latent))
        self.contrast = SigmoidContrastiveLearning(layers = layers, max_temperature = 100.) if sigmoid_contrastive_loss \
            else SoftmaxContrastiveLearning(layers = layers, max_temperature = 100.,
                                            decoupled_contrastive_learning = decoupled_contrastive_learning)

    @staticmethod
    def _project(embeds: Tensor, gamma: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        embeds = F.layer_norm(embeds, embeds.shape[-1:]) * gamma
        return F.normalize(torch.einsum('l b d, l d e -> l b e', embeds, weight) + bias, dim = -1)

    def forward(self, *, audio_layers: Tensor, text_layers: Tensor) -> Tensor:
        if audio_layers.shape[0] != self.layers or text_layers.shape[0] != self.layers:
            raise ValueError(f'expected {self.layers} layers of each tower, got {audio_layers.shape[0]} and '
                             f'{text_layers.shape[0]}')
        audio = self._project(audio_layers.mean(dim = 2), self.audio_gamma, self.audio_latent_weight,
                              self.audio_latent_bias)
        text = self._project(text_layers[:, :, 0], self.text_gamma, self.text_latent_weight, self.text_latent_bias)
        return self.contrast(audio, text)
