"""Codec losses and discriminators: values on known inputs, gradients, bf16 autocast, real-valued parameters."""

import pytest
import torch

from audiolm_pytorch.codecs.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator, STFTDiscriminator
from audiolm_pytorch.codecs.losses import (
    MultiResolutionMelLoss,
    feature_matching_loss,
    gradient_penalty,
    hinge_discr_loss,
    hinge_gen_loss,
    waveform_loss,
)


def test_waveform_losses():
    a, b = torch.zeros(2, 1, 8), torch.full((2, 1, 8), 0.5)
    assert waveform_loss(a, b, 'l2').item() == pytest.approx(0.25)
    assert waveform_loss(a, b, 'l1').item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        waveform_loss(a, b, 'l3')


def test_multi_resolution_mel_loss():
    loss_fn = MultiResolutionMelLoss(sample_hz = 16000, window_powers_of_two = range(6, 12), n_mels = 64)
    assert len(loss_fn.transforms) == 6
    target = torch.sin(torch.arange(4000) / 16000 * 2 * torch.pi * 440)[None, None].repeat(2, 1, 1)
    assert loss_fn(target, target).item() == pytest.approx(0., abs = 5e-3)
    # the loss grows with the error: louder by a growing gain, or more noise added
    gains = [loss_fn(target * gain, target).item() for gain in (1.01, 1.1, 2., 4.)]
    assert 0 < gains[0] and gains == sorted(gains) and len(set(gains)) == 4, gains
    noise = torch.randn_like(target)
    noisy = [loss_fn(target + level * noise, target).item() for level in (0.01, 0.05, 0.2)]
    assert 0 < noisy[0] and noisy == sorted(noisy) and len(set(noisy)) == 3, noisy
    louder = (target * 2).requires_grad_()
    loss_fn(louder, target).backward()
    assert torch.isfinite(louder.grad).all() and louder.grad.abs().sum() > 0


def test_hinge_and_feature_losses():
    assert hinge_discr_loss(torch.tensor([-2.]), torch.tensor([2.])).item() == 0      # confident, correct
    assert hinge_discr_loss(torch.tensor([1.]), torch.tensor([-1.])).item() == 4
    assert hinge_gen_loss(torch.tensor([3., 1.])).item() == -2
    real = [torch.ones(2, 3), torch.zeros(4)]
    fake = [torch.zeros(2, 3, requires_grad = True), torch.ones(4, requires_grad = True)]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(1.)
    loss.backward()
    assert fake[0].grad is not None


def test_gradient_penalty_is_zero_centred_r1():
    weight = torch.tensor([[3., 4.]])                       # linear "discriminator": D(x) = w . x, |grad| = 5
    x = torch.randn(6, 2, requires_grad = True)
    penalty = gradient_penalty(x, x @ weight.T, weight = 10.)
    assert penalty.item() == pytest.approx(10. * 25.)
    with pytest.raises(ValueError, match = 'require grad'):
        gradient_penalty(torch.randn(2, 2), torch.randn(2))


@pytest.mark.parametrize('make', [
    lambda: MultiScaleDiscriminator(scales = (1, 0.5, 0.25), channels = 4, chan_max = 32),
    lambda: STFTDiscriminator(channels = 4, n_fft = 128, hop_length = 32, win_length = 128),
    lambda: MultiPeriodDiscriminator(periods = (2, 3), channels = (4, 8)),
], ids = ['multi_scale', 'stft', 'multi_period'])
def test_discriminators_real_valued_and_bf16(make):
    discr = make()
    assert not any(p.is_complex() for p in discr.parameters())
    x = torch.randn(2, 1, 2048, requires_grad = True)
    outputs = discr(x)
    assert outputs and all(logits.shape[0] == 2 and len(feats) > 0 for logits, feats in outputs)
    with torch.autocast(device_type = 'cpu', dtype = torch.bfloat16):
        outputs = discr(x)
        loss = sum(hinge_gen_loss(logits) for logits, _ in outputs)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in discr.parameters())


def test_multi_scale_discriminator_downsamples():
    discr = MultiScaleDiscriminator(scales = (1, 0.5, 0.25), channels = 4, chan_max = 16)
    lengths = [logits.shape[-1] for logits, _ in discr(torch.randn(1, 1, 4096))]
    assert lengths[0] > lengths[1] > lengths[2]


# ---- segments too short for the mel windows ------------------------------------------------------------------------

def test_mel_loss_names_too_short_segments():
    from audiolm_pytorch.codecs.losses import MultiResolutionMelLoss
    loss = MultiResolutionMelLoss(sample_hz = 16000, window_powers_of_two = (6, 11))
    with pytest.raises(ValueError, match = 'too short'):
        loss(torch.randn(1, 1, 800), torch.randn(1, 1, 800))
    with pytest.raises(ValueError, match = 'equal shapes'):
        loss(torch.randn(1, 1, 4000), torch.randn(1, 1, 3999))
    assert loss(torch.randn(1, 1, 1025), torch.randn(1, 1, 1025)) > 0
