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


def test_key_masked_causal_fast_path_matches_explicit_mask_and_gradients():
    # causal + (b, n) key mask runs on is_causal via an extra feature; it must equal the explicit boolean mask
    from audiolm_pytorch.nn.attention import attention_with_key_mask
    import torch.nn.functional as F
    q, k, v = (torch.randn(2, 3, 9, 16, requires_grad = True) for _ in range(3))
    keep = torch.rand(2, 9) > 0.4
    keep[:, 0] = True
    fast = attention_with_key_mask(q, k, v, keep)
    grads_fast = torch.autograd.grad(fast.square().sum(), (q, k, v))
    mask = keep[:, None, None, :] & causal_mask(9, 9, 'cpu')
    slow = F.scaled_dot_product_attention(q, k, v, attn_mask = mask)
    grads_slow = torch.autograd.grad(slow.square().sum(), (q, k, v))
    assert torch.allclose(fast, slow, atol = 1e-5)
    for a, b in zip(grads_fast, grads_slow):
        assert torch.allclose(a, b, atol = 1e-4)
    # a query whose whole causal past is hidden stays finite
    keep[:, 0] = False
    assert attention_with_key_mask(q, k, v, keep).isfinite().all()


def test_kv_cache_buffer_stays_a_value_when_an_old_cache_is_extended_again():
    attn = Attention(dim = 32, heads = 2, dim_head = 16, causal = True).eval()
    rotary = RotaryEmbedding(16)
    x = torch.randn(1, 8, 32)
    with torch.no_grad():
        _, cache = attn(x[:, :5], rotary = rotary(5), return_cache = True)
        _, cache6 = attn(x[:, 5:6], rotary = rotary(1, offset = 5), cache = cache, return_cache = True)
        out_a, branch_a = attn(x[:, 6:7], rotary = rotary(1, offset = 6), cache = cache6, return_cache = True)
        assert branch_a.buffer is cache6.buffer           # grown in place
        # extend the older view of the same buffer with a different token: branch_a must be unaffected
        other = torch.randn(1, 1, 32)
        _, branch_b = attn(other, rotary = rotary(1, offset = 6), cache = cache6, return_cache = True)
        assert branch_b.buffer is not cache6.buffer
        out_a_again, _ = attn(x[:, 7:8], rotary = rotary(1, offset = 7), cache = branch_a, return_cache = True)
        out_b, _ = attn(x[:, 7:8], rotary = rotary(1, offset = 7), cache = branch_b, return_cache = True)
        full = attn(x, rotary = rotary(8))
        full_b = attn(torch.cat((x[:, :6], other, x[:, 7:8]), dim = 1), rotary = rotary(8))
    assert branch_a.length == 7 and branch_b.length == 7
    assert torch.allclose(out_a[:, 0], full[:, 6], atol = 1e-5)
    assert torch.allclose(out_a_again[:, 0], full[:, 7], atol = 1e-5)
    assert torch.allclose(out_b[:, 0], full_b[:, 7], atol = 1e-5)


def test_key_masked_cross_and_decode_attention_match_explicit_masks():
    # cross-attention, non-causal self-attention and one-query decoding also take the mask-free path
    import torch.nn.functional as F
    from audiolm_pytorch.nn.attention import Attention, attention_with_key_mask
    q = torch.randn(2, 3, 4, 16, requires_grad = True)
    k, v = (torch.randn(2, 3, 7, 16, requires_grad = True) for _ in range(2))
    keep = torch.rand(2, 7) > 0.5
    keep[:, 0] = True
    fast = attention_with_key_mask(q, k, v, keep, causal = False)
    slow = F.scaled_dot_product_attention(q, k, v, attn_mask = keep[:, None, None, :])
    assert torch.allclose(fast, slow, atol = 1e-5)
    for a, b in zip(torch.autograd.grad(fast.sum(), (q, k, v)), torch.autograd.grad(slow.sum(), (q, k, v))):
        assert torch.allclose(a, b, atol = 1e-4)

    cross = Attention(dim = 32, heads = 2, dim_head = 16, dim_context = 8)
    x, context = torch.randn(2, 4, 32), torch.randn(2, 7, 8)
    padded_context = context.masked_fill(~keep[..., None], 1e3)      # hidden keys carry junk
    assert torch.allclose(cross(x, context = padded_context, mask = keep),
                          torch.stack([cross(x[i:i + 1], context = context[i:i + 1, keep[i]]) for i in range(2)]).squeeze(1),
                          atol = 1e-5)

    # one decoded query against a cache with hidden (padding) keys = the same query without those keys
    self_attn = Attention(dim = 32, heads = 2, dim_head = 16, causal = True)
    seq = torch.randn(1, 6, 32)
    _, cache = self_attn(seq[:, :5], return_cache = True)
    key_keep = torch.tensor([[True, False, True, True, False, True]])
    step = self_attn(seq[:, 5:], cache = cache, mask = key_keep)
    full = self_attn(seq, mask = key_keep)
    assert torch.allclose(step, full[:, 5:], atol = 1e-5)
