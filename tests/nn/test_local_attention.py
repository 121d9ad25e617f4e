"""Local attention: window and streaming."""
import pytest
import torch

from audiolm_pytorch.nn.local_attention import LocalTransformer


@pytest.mark.parametrize('window, chunk', [(4, 3), (3, 5), (5, 1), (1, 2)])
def test_local_transformer_window_and_streaming(window, chunk):
    torch.manual_seed(0)
    model = LocalTransformer(dim = 16, depth = 2, heads = 2, dim_head = 8, window_size = window).eval()
    x = torch.randn(1, 23, 16)
    whole = model(x)
    state, outs = model.init_state(1), []
    for piece in x.split(chunk, dim = 1):
        out, state = model.forward_stream(piece, state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, dim = 1), whole, atol = 1e-5)
    # receptive field: depth 2 layers, each sees window positions incl. itself
    x2 = x.clone()
    x2[:, 10] += torch.randn(16)
    changed = (model(x2) - whole).abs().amax(dim = -1)[0] > 1e-6
    reach = 2 * (window - 1)
    expected = torch.zeros(23, dtype = torch.bool)
    expected[10:min(23, 10 + reach + 1)] = True
    assert torch.equal(changed, expected)
