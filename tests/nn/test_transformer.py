"""The shared transformer: kv cache with left padding, grad shrink, context masks, dropout."""
import torch

from audiolm_pytorch.nn.transformer import Transformer


def test_transformer_kv_cache_with_left_padding_matches_full_pass():
    torch.manual_seed(0)
    model = Transformer(dim = 32, depth = 2, heads = 2, dim_head = 16).eval()
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype = torch.bool)
    mask[1, :3] = False
    full = model(x, mask = mask)
    out, cache = model(x[:, :5], mask = mask[:, :5], return_cache = True)
    outs = [out]
    for i in range(5, 9):
        out, cache = model(x[:, i:i + 1], mask = mask[:, :i + 1], cache = cache, return_cache = True)
        outs.append(out)
    assert len(cache) == 2
    assert torch.allclose(torch.cat(outs, dim = 1), full, atol = 1e-5)


def test_transformer_grad_shrink_keeps_value_and_scales_gradient():
    torch.manual_seed(0)
    model = Transformer(dim = 16, depth = 1, heads = 2, dim_head = 8, grad_shrink_alpha = 0.1)
    ref = Transformer(dim = 16, depth = 1, heads = 2, dim_head = 8)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(1, 5, 16, requires_grad = True)
    y = model(x)
    assert torch.allclose(y, ref(x), atol = 1e-6)
    g, = torch.autograd.grad(y.sum(), x)
    g_ref, = torch.autograd.grad(ref(x).sum(), x)
    assert torch.allclose(g, 0.1 * g_ref, atol = 1e-6)


def test_transformer_cross_attention_context_mask_hides_masked_context():
    torch.manual_seed(0)
    model = Transformer(dim = 16, depth = 2, heads = 2, dim_head = 8, cross_attend = True, dim_context = 12).eval()
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 6, 12)
    cmask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    out = model(x, context = ctx, context_mask = cmask)
    ctx2 = ctx.clone()
    ctx2[1, 3:] = 100.
    assert torch.allclose(out, model(x, context = ctx2, context_mask = cmask), atol = 1e-5)
    assert torch.allclose(out[1], model(x[1:], context = ctx[1:, :3]), atol = 1e-5)


def test_transformer_dropout_only_in_training():
    model = Transformer(dim = 16, depth = 1, heads = 2, dim_head = 8, attn_dropout = 0.5, ff_dropout = 0.5)
    x = torch.randn(1, 6, 16)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))
