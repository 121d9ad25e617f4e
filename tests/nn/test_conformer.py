import pytest
import torch

from audiolm_pytorch import Conformer


def tiny(**kwargs):
    config = dict(dim = 32, depth = 2, dim_head = 8, heads = 2, conv_kernel_size = 5)
    config.update(kwargs)
    return Conformer(**config)


def test_shape_and_seed_signature():
    model = Conformer(dim = 32, depth = 1, dim_head = 8, heads = 4, ff_mult = 2, conv_expansion_factor = 2,
                      conv_kernel_size = 7, attn_dropout = 0., ff_dropout = 0., conv_dropout = 0., conv_causal = False)
    x = torch.randn(2, 11, 32)
    assert model(x).shape == (2, 11, 32)


def test_padded_frames_do_not_leak():
    model = tiny().eval()
    x = torch.randn(2, 12, 32)
    mask = torch.ones(2, 12, dtype = torch.bool)
    mask[1, 7:] = False

    out = model(x, mask = mask)
    x_other = x.clone()
    x_other[1, 7:] = torch.randn(5, 32) * 10
    out_other = model(x_other, mask = mask)
    assert torch.equal(out[:, :7], out_other[:, :7]) and torch.equal(out[0], out_other[0])

    # same as running the unpadded sequence alone
    alone = model(x[1:, :7])
    assert torch.allclose(alone[0], out[1, :7], atol = 1e-5)


def test_without_mask_every_frame_matters():
    # the masking test above must be able to fail: without a mask, a change at the end reaches the start
    model = tiny().eval()
    x = torch.randn(1, 12, 32)
    x_other = x.clone()
    x_other[0, -1] = torch.randn(32)   # (a constant shift would be removed by the LayerNorms)
    assert (model(x)[0, 0] - model(x_other)[0, 0]).abs().max() > 1e-3


def test_causal_conformer_ignores_future():
    model = tiny(conv_causal = True).eval()
    x = torch.randn(1, 10, 32, requires_grad = True)
    (model(x)[0, 4] * torch.randn(32)).sum().backward()   # a plain sum of LayerNorm outputs has no gradient
    grad_per_frame = x.grad[0].abs().sum(dim = -1)
    assert grad_per_frame[5:].eq(0).all() and grad_per_frame[:5].gt(0).all()


def test_checkpoint_round_trip(tmp_path):
    model = tiny().eval()
    model.save(tmp_path / 'conformer.pt')
    loaded = Conformer.init_and_load_from(tmp_path / 'conformer.pt').eval()
    x = torch.randn(1, 6, 32)
    assert torch.equal(model(x), loaded(x))
    assert loaded.config['conv_kernel_size'] == 5


def test_bad_mask_shape():
    with pytest.raises(ValueError, match = 'mask'):
        tiny()(torch.randn(2, 5, 32), mask = torch.ones(2, 4, dtype = torch.bool))


# ---- left / right padding ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('causal', [False, True])
def test_conformer_padding_left_or_right_equals_unpadded(causal):
    torch.manual_seed(0)
    model = Conformer(dim = 16, depth = 2, dim_head = 8, heads = 2, conv_kernel_size = 5, conv_causal = causal).eval()
    x = torch.randn(1, 7, 16)
    ref = model(x)
    pad = torch.randn(1, 4, 16) * 10
    right = model(torch.cat((x, pad), dim = 1), mask = torch.tensor([[True] * 7 + [False] * 4]))
    left = model(torch.cat((pad, x), dim = 1), mask = torch.tensor([[False] * 4 + [True] * 7]))
    assert torch.allclose(right[:, :7], ref, atol = 1e-5)
    assert torch.allclose(left[:, 4:], ref, atol = 1e-5)
