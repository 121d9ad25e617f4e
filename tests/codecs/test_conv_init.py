"""SoundStream's conv init (issue 13): a fresh codec passes the audio's content to its bottleneck at the audio's
own scale. With PyTorch's default init (``conv_init='torch_default'``, versions <= 0.1.0) the encoder output of
the small config is mostly a constant (its variation over time ~25% of its spread), and training collapsed the
first quantizer level onto a handful of codes."""

import pytest
import torch

from audiolm_pytorch import SoundStream, load_audio
from tests.helpers import ASSETS

SMALL = dict(channels = 8, codebook_size = 64, rq_num_quantizers = 2, strides = (2, 4, 5, 8), codebook_dim = 64,
             discr_multi_scales = (), stft_discriminator = False, use_local_attn = False)


def speech(n = 16000):
    path = sorted(ASSETS.glob('*_16k.wav'))[0]
    return load_audio(path, target_sample_hz = 16000).wave[:, :n][None]           # (1, 1, n)


def content_share(model, x):
    """(latent std over time, averaged over channels) / (latent std over everything) of the conv encoder."""
    with torch.no_grad():
        latents = model.encoder(x)                                                  # (1, d, frames)
    return (latents.std(dim = -1).mean() / latents.std()).item(), latents.std().item()


@pytest.mark.parametrize('weight_norm', [False, True])
def test_encoder_passes_content_at_the_input_scale(weight_norm):
    torch.manual_seed(0)
    x = speech()
    share, spread = content_share(SoundStream(**SMALL, use_weight_norm = weight_norm), x)
    assert share > 0.8, share                                 # nearly all of the latent spread varies with the audio
    assert 0.3 < spread / x.std().item() < 3, (spread, x.std().item())

    torch.manual_seed(0)
    old_share, _ = content_share(SoundStream(**SMALL, use_weight_norm = weight_norm, conv_init = 'torch_default'), x)
    assert old_share < 0.5, old_share                         # the former init: mostly a constant


def test_init_keeps_weight_norm_parametrization_and_zero_biases():
    model = SoundStream(**SMALL, use_weight_norm = True)
    conv = model.encoder[0].conv
    assert torch.nn.utils.parametrize.is_parametrized(conv, 'weight')
    assert torch.count_nonzero(conv.bias) == 0
    fan_in = conv.in_channels * conv.kernel_size[0]
    assert conv.weight.std().item() == pytest.approx(fan_in ** -0.5, rel = 0.35)


def test_residual_branches_start_small():
    model = SoundStream(**SMALL)
    unit = model.encoder[1][0]                                # first residual unit of the first encoder block
    branch_out = unit.fn[2].conv                              # its 1x1 conv, the branch's last conv
    fan_in = branch_out.in_channels
    assert branch_out.weight.std().item() == pytest.approx(0.1 * fan_in ** -0.5, rel = 0.35)


def test_unknown_conv_init_is_a_clear_error():
    with pytest.raises(ValueError, match = 'conv_init'):
        SoundStream(**SMALL, conv_init = 'xavier')
