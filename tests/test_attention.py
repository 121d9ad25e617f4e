import pytest
import torch

from audiolm_pytorch.nn.attention import Attention, causal_mask
from audiolm_pytorch.nn.positions import RotaryEmbedding


def test_kv_cache_equals_full_causal_pass():
    attn = Attention(dim = 32, heads = 2, dim_head = 16, causal = True).eval()
    rotary = RotaryEmbedding(16)
    x = torch.randn(2, 10, 32)
    full = attn(x, rotary = rotary(10))

    out, cache = attn(x[:, :4], rotary = rotary(4), return_cache = True)
    outs = [out]
    for i in range(4, 10):
        out, cache = attn(x[:, i:i + 1], rotary = rotary(1, offset = i), cache = cache, return_cache = True)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, dim = 1), full, atol = 1e-5)


def test_causal_by_gradients():
    attn = Attention(dim = 16, heads = 2, dim_head = 8, causal = True)
    x = torch.randn(1, 8, 16, requires_grad = True)
    attn(x)[0, 3].sum().backward()
    assert x.grad[0, 4:].abs().sum() == 0
    assert x.grad[0, :4].abs().sum() > 0


def test_key_padding_mask_hides_padded_keys_even_when_queries_equal_batch():
    # 2-D masks are always (b, n_k): a batch of 4 with 4 queries must not be read as (n_q, n_k)
    attn = Attention(dim = 16, heads = 2, dim_head = 8).eval()
    x = torch.randn(4, 4, 16)
    mask = torch.tensor([[True, True, False, False]] * 4)
    out = attn(x, mask = mask)
    changed = x.clone()
    changed[:, 2:] = torch.randn(4, 2, 16)
    out_changed = attn(changed, mask = mask)
    assert torch.allclose(out[:, :2], out_changed[:, :2], atol = 1e-6)


def test_bad_mask_shape_is_a_clear_error():
    attn = Attention(dim = 16, heads = 2, dim_head = 8)
    with pytest.raises(ValueError, match = 'key padding'):
        attn(torch.randn(2, 5, 16), mask = torch.ones(5, 5, dtype = torch.bool))


def test_causal_mask_offsets_queries_to_the_end():
    mask = causal_mask(2, 5, 'cpu')
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
