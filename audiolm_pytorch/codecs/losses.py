"""Codec training losses: waveform, multi-resolution mel, hinge adversarial, feature matching, gradient penalty.

All reductions run in float32, also under bf16 autocast.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiolm_pytorch.audio import MelSpectrogram


def waveform_loss(pred: Tensor, target: Tensor, kind: str = 'l2') -> Tensor:
    """Sample-wise reconstruction: ``'l2'`` (mean squared error) or ``'l1'`` (mean absolute error)."""
    pred, target = pred.float(), target.float()
    if kind == 'l2':
        return F.mse_loss(pred, target)
    if kind == 'l1':
        return F.l1_loss(pred, target)
    raise ValueError(f"waveform loss kind must be 'l1' or 'l2', got {kind!r}")


class MultiResolutionMelLoss(nn.Module):
    """Multi-resolution mel reconstruction loss, averaged over resolutions.

    ``kind='log_l1'`` (default): per resolution, the mean absolute difference of ``log10`` mel magnitudes (floor
    ``eps``), as DAC (arXiv 2306.06546) and EnCodec (arXiv 2210.13438) normalise it: every term is O(1) whatever
    the window, the number of mel bins or the clip length, so a weight means the same at any resolution.

    ``kind='soundstream'``: SoundStream's eq. 4-5 (arXiv 2107.03312) as first implemented here: per frame, the L1
    distance of mel spectra summed over mel bins plus ``sqrt(s / 2)`` times the L2 distance of log-mel spectra.
    Its value is ~100-500 on speech at initialisation (the ``sqrt(s / 2)`` factor reaches 32 at ``s = 2048``), so
    at weight 1 it drowns the waveform term; kept for old configurations.

    For each window ``s = 2^p`` the hop is ``s / 4``.

    Args:
        sample_hz: audio rate. window_powers_of_two: ``p`` values (default 6..11, windows 64..2048).
        n_mels: mel bins per resolution. min_n_fft: FFT size is ``max(window, min_n_fft)`` so small windows keep
        enough frequency bins for ``n_mels`` filters. kind: ``'log_l1'`` or ``'soundstream'``. eps: magnitude
        floor before the log.

    ``forward(pred (b, ..., n), target (b, ..., n)) -> scalar``.
    """

    KINDS = ('log_l1', 'soundstream')

    def __init__(self, *, sample_hz: int, window_powers_of_two: Sequence[int] = tuple(range(6, 12)),
                 n_mels: int = 64, min_n_fft: int = 512, eps: float = 1e-5, kind: str = 'log_l1'):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f'mel loss kind must be one of {self.KINDS}, got {kind!r}')
        self.kind = kind
        self.transforms = nn.ModuleList()
        self.alphas = []
        for power in window_powers_of_two:
            window = 2 ** power
            self.transforms.append(MelSpectrogram(
                sample_hz = sample_hz, n_fft = max(window, min_n_fft), win_length = window, hop_length = window // 4,
                n_mels = n_mels, power = 1.))
            self.alphas.append((window / 2) ** 0.5)
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f'mel loss needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}')
        longest = max((t.n_fft for t in self.transforms), default = 0)
        if self.transforms and pred.shape[-1] <= longest // 2:
            raise ValueError(f'mel loss: {pred.shape[-1]} samples is too short for its largest FFT ({longest}); train on '
                             f'segments longer than {longest // 2} samples or lower multi_spectral_window_powers_of_two')
        batch = pred.shape[0]
        both = torch.cat((pred.float(), target.detach().float()), dim = 0)
        total = torch.zeros((), device = pred.device)
        for transform, alpha in zip(self.transforms, self.alphas):
            mel_pred, mel_target = transform(both).split(batch, dim = 0)            # (b, ..., mels, frames)
            log_diff = mel_pred.clamp(min = self.eps).log10() - mel_target.clamp(min = self.eps).log10()
            if self.kind == 'log_l1':
                total = total + log_diff.abs().mean()
                continue
            l1 = (mel_pred - mel_target).abs().sum(dim = -2).mean()
            l2_log = (log_diff * math.log(10)).pow(2).sum(dim = -2).add(1e-8).sqrt().mean()
            total = total + l1 + alpha * l2_log
        return total / max(len(self.transforms), 1)


def hinge_discr_loss(fake_logits: Tensor, real_logits: Tensor) -> Tensor:
    """Discriminator hinge loss: ``relu(1 + D(fake)) + relu(1 - D(real))``."""
    return F.relu(1 + fake_logits.float()).mean() + F.relu(1 - real_logits.float()).mean()


def hinge_gen_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss: ``-D(fake)``."""
    return -fake_logits.float().mean()


def feature_matching_loss(real_features: Sequence[Tensor], fake_features: Sequence[Tensor]) -> Tensor:
    """Mean over layers of the L1 distance between discriminator features (real ones are targets, detached)."""
    losses = [F.l1_loss(fake.float(), real.detach().float()) for real, fake in zip(real_features, fake_features)]
    if not losses:
        raise ValueError('feature matching needs at least one discriminator feature map')
    return torch.stack(losses).mean()


def gradient_penalty(inputs: Tensor, outputs: Tensor | Sequence[Tensor], weight: float = 10.,
                     per_logit: bool = False) -> Tensor:
    """Zero-centred R1 penalty (arXiv 1801.04406): ``weight * mean_b ||d D(x) / d x||^2`` on real ``x``.

    ``D(x)`` is the sum of every logit of every discriminator in ``outputs`` (each ``(b, ...)``, computed from
    ``inputs``, which must require grad). With ``per_logit=True`` each discriminator's logits are averaged over
    their positions instead of summed, so the penalty no longer grows with the clip length (a patch discriminator
    has more logits on a longer clip).
    """
    if not inputs.requires_grad:
        raise ValueError('gradient_penalty needs inputs that require grad (call inputs.requires_grad_() first)')
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    total = sum(out.float().sum() / (out[0].numel() if per_logit and out.ndim > 1 else 1) for out in outputs)
    (gradients,) = torch.autograd.grad(total, inputs, create_graph = True)
    return weight * gradients.float().pow(2).reshape(gradients.shape[0], -1).sum(dim = -1).mean()
