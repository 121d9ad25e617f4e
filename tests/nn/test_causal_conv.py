"""Causal convolutions and squeeze-excite: streaming equals the full pass."""
import pytest
import torch

from audiolm_pytorch.nn.causal_conv import CausalConv1d, CausalConvTranspose1d, CausalSqueezeExcite


@pytest.mark.parametrize('stride, kernel', [(2, 3), (3, 5), (2, 2), (4, 7), (3, 3)])
def test_transposed_conv_streams_with_odd_kernels(stride, kernel):
    torch.manual_seed(0)
    conv = CausalConvTranspose1d(3, 4, stride = stride, kernel_size = kernel)
    x = torch.randn(2, 3, 11)
    whole = conv(x)
    state, outs = conv.init_state(2), []
    for piece in x.split(3, dim = -1):
        out, state = conv.forward_stream(piece, state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, dim = -1), whole, atol = 1e-5)


def test_causal_conv_stride_dilation_streams():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 4, 3, stride = 2, dilation = 3)
    x = torch.randn(1, 3, 24)
    whole = conv(x)
    state, outs = conv.init_state(1), []
    for piece in x.split(6, dim = -1):
        out, state = conv.forward_stream(piece, state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, dim = -1), whole, atol = 1e-5)


def test_squeeze_excite_running_mean_does_not_drift_on_long_streams():
    torch.manual_seed(0)
    se = CausalSqueezeExcite(8)
    # the state after ~17M frames of constant input: float32 counts stop at 2 ** 24
    n = (1 << 24) + 1
    past_sum, past_count = se.init_state(1)
    past_sum = past_sum + 3. * n
    past_count = past_count + n
    x = torch.full((1, 8, 16), 3.)
    x_ref = torch.full((1, 8, 1), 3.)
    out, (new_sum, new_count) = se.forward_stream(x, (past_sum, past_count))
    assert float(new_count) == n + 16
    ref = se(x_ref)
    assert torch.allclose(out, ref.expand_as(out), atol = 1e-6)
    # small values added to a large running sum are not lost
    state = se.init_state(1)
    big = torch.full((1, 8, 1000), 1000.)
    _, state = se.forward_stream(big, state)
    tiny = torch.full((1, 8, 1), 1e-2)
    for _ in range(300):
        _, state = se.forward_stream(tiny, state)
    expected = 1000. * 1000 + 1e-2 * 300
    assert abs(float(state[0][0, 0]) - expected) / expected < 1e-9
