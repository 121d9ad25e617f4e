"""SoundStream's adversarial training: its discriminators, their hinge losses (with the optional R1 penalty)
and the generator loss (reconstruction, multi-scale mel, adversarial, feature matching, commitment).

``AdversarialCodecMixin`` holds these parts of ``SoundStream`` (``soundstream.py``): ``_build_discriminators``
registers ``discriminators``, ``stft_discriminator``, ``period_discriminator`` and ``mel_loss`` on the model
itself, so parameter paths and checkpoints are those of a single class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from audiolm_pytorch.codecs.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator, STFTDiscriminator
from audiolm_pytorch.codecs.losses import (MultiResolutionMelLoss, feature_matching_loss, gradient_penalty,
                                           hinge_discr_loss, hinge_gen_loss, waveform_loss)
from audiolm_pytorch.utils import exists


class LossBreakdown(NamedTuple):
    """Generator loss terms (unweighted), reconstruction first as in the established API."""
    recon: Tensor
    multi_spectral: Tensor
    adversarial: Tensor
    feature: Tensor
    commitment: Tensor


class TrainingLosses(NamedTuple):
    """Everything one training step needs from a single encoder/decoder pass (``return_all_losses=True``).

    ``generator`` only has gradients w.r.t. ``non_discr_parameters()`` and ``discriminator`` only w.r.t.
    ``discriminator_parameters()``, so ``(generator + discriminator).backward()`` is one DDP-friendly backward.
    """
    generator: Tensor
    discriminator: Tensor
    breakdown: LossBreakdown
    discr_breakdown: dict


def _frozen(module: nn.Module, *args):
    """Call ``module`` with its parameters out of autograd: gradients reach the inputs but not the module.

    Done by switching ``requires_grad`` off for the call, not by swapping in detached copies: FSDP2 puts its own
    unsharded parameters back on the module before each forward (which would undo a swap and leak the
    generator's gradients into a discriminator that is its own FSDP unit), but it carries ``requires_grad`` over.
    With ``requires_grad`` off, autocast also makes a fresh cast instead of reusing its cached (differentiable)
    low-precision copy of the weight.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    for param in params:
        param.requires_grad_(False)
    try:
        return module(*args)
    finally:
        for param in params:
            param.requires_grad_(True)


class AdversarialCodecMixin:
    """Discriminators and training losses of ``SoundStream``; the loss weights (``recon_loss_weight``, ...) and
    ``recon_loss_type`` are attributes the model sets."""

    def _build_discriminators(self, *, input_channels: int, target_sample_hz: int,
                              discr_multi_scales: Sequence[float | int], multi_scale_discr_kwargs: dict | None,
                              stft_discriminator: nn.Module | dict | bool | None, use_multi_period_discr: bool,
                              multi_period_discr_periods: Sequence[int], discr_weight_norm: bool,
                              multi_spectral_window_powers_of_two: Sequence[int], multi_spectral_n_mels: int,
                              multi_spectral_loss_kind: str):
        self.discr_multi_scales = tuple(discr_multi_scales)
        self.discriminators = MultiScaleDiscriminator(scales = discr_multi_scales, input_channels = input_channels,
                                                      **{'weight_norm': discr_weight_norm,
                                                         **(multi_scale_discr_kwargs or {})}) \
            if len(self.discr_multi_scales) > 0 else None
        if stft_discriminator is None or stft_discriminator is True or isinstance(stft_discriminator, dict):
            stft_kwargs = stft_discriminator if isinstance(stft_discriminator, dict) else {}
            stft_discriminator = STFTDiscriminator(input_channels = input_channels,
                                                   **{'weight_norm': discr_weight_norm, **stft_kwargs})
        self.stft_discriminator = stft_discriminator if isinstance(stft_discriminator, nn.Module) else None
        self.period_discriminator = MultiPeriodDiscriminator(periods = multi_period_discr_periods,
                                                             input_channels = input_channels,
                                                             weight_norm = discr_weight_norm) \
            if use_multi_period_discr else None
        self.mel_loss = MultiResolutionMelLoss(sample_hz = target_sample_hz,
                                               window_powers_of_two = tuple(multi_spectral_window_powers_of_two),
                                               n_mels = multi_spectral_n_mels, kind = multi_spectral_loss_kind)

    # ------------------------------------------------------------------------------------------------------
    # parameter groups
    # ------------------------------------------------------------------------------------------------------

    def _discriminator_modules(self) -> list[nn.Module]:
        return [m for m in (self.discriminators, self.stft_discriminator, self.period_discriminator) if exists(m)]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for m in self._discriminator_modules() for p in m.parameters()]

    def non_discr_parameters(self) -> list[nn.Parameter]:
        discr = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in discr]

    # ------------------------------------------------------------------------------------------------------
    # discriminators and losses
    # ------------------------------------------------------------------------------------------------------

    def _discriminate(self, x: Tensor, frozen: bool = False) -> list[tuple[str, Tensor, list[Tensor]]]:
        """Run every discriminator -> ``[(name, logits, features), ...]``."""
        call = _frozen if frozen else (lambda module, *args: module(*args))
        results = []
        if exists(self.discriminators):
            for scale, (logits, feats) in zip(self.discr_multi_scales, call(self.discriminators, x)):
                results.append((f'scale:{scale}', logits, feats))
        if exists(self.stft_discriminator):
            out = call(self.stft_discriminator, x)
            if isinstance(out, Tensor):
                out = [(out, [])]
            elif isinstance(out, tuple):
                out = [out]
            results.extend(('stft', logits, feats) for logits, feats in out)
        if exists(self.period_discriminator):
            for period, (logits, feats) in zip([d.period for d in self.period_discriminator.discriminators],
                                               call(self.period_discriminator, x)):
                results.append((f'period:{period}', logits, feats))
        return results

    def _discriminator_losses(self, real: Tensor, fake: Tensor, apply_grad_penalty: bool):
        """Hinge losses on ``real`` vs detached ``fake`` -> ``(total, [(name, loss)], real_features)``."""
        real = real.detach().requires_grad_(apply_grad_penalty)
        batch = real.shape[0]
        outputs = self._discriminate(torch.cat((real, fake.detach()), dim = 0))
        named, real_features, real_logits = [], [], []
        for name, logits, feats in outputs:
            real_l, fake_l = logits.split(batch, dim = 0)
            named.append((name, hinge_discr_loss(fake_l, real_l)))
            real_logits.append(real_l)
            real_features.append([f[:batch].detach() for f in feats])
        total = torch.stack([loss for _, loss in named]).sum() if named else real.new_zeros(())
        if apply_grad_penalty and named:
            penalty = gradient_penalty(real, real_logits, weight = self.grad_penalty_weight,
                                       per_logit = self.grad_penalty_per_logit)
            named.append(('grad_penalty', penalty))
            total = total + penalty
        return total, named, real_features

    def _generator_losses(self, real: Tensor, recon: Tensor, commit_loss: Tensor, real_features=None):
        zero = recon.new_zeros((), dtype = torch.float32)
        recon_loss = waveform_loss(recon, real, self.recon_loss_type)
        multi_spectral = self.mel_loss(recon, real) if self.multi_spectral_recon_loss_weight > 0 else zero
        adversarial = feature = zero
        use_discr = (self.adversarial_loss_weight > 0 or self.feature_loss_weight > 0) and self._discriminator_modules()
        if use_discr:
            if real_features is None:
                with torch.no_grad():
                    real_features = [feats for _, _, feats in self._discriminate(real)]
            fake_outputs = self._discriminate(recon, frozen = True)
            adversarial = torch.stack([hinge_gen_loss(logits) for _, logits, _ in fake_outputs]).mean()
            pairs = [(r, f) for real_feats, (_, _, fake_feats) in zip(real_features, fake_outputs)
                     for r, f in zip(real_feats, fake_feats)]
            if pairs:
                feature = feature_matching_loss([r for r, _ in pairs], [f for _, f in pairs])
        breakdown = LossBreakdown(recon_loss, multi_spectral, adversarial, feature, commit_loss.float())
        total = (recon_loss * self.recon_loss_weight + multi_spectral * self.multi_spectral_recon_loss_weight
                 + adversarial * self.adversarial_loss_weight + feature * self.feature_loss_weight + breakdown.commitment)
        return total, breakdown