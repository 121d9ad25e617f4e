"""Adversarial review probes of the shared nn building blocks (rotary, transformer, local attention,
conformer, causal convs)."""


import pytest
import torch

from audiolm_pytorch.nn.causal_conv import CausalConv1d, CausalConvTranspose1d, CausalSqueezeExcite
from audiolm_pytorch.nn.conformer import Conformer
from audiolm_pytorch.nn.local_attention import LocalTransformer
from audiolm_pytorch.nn.positions import RotaryEmbedding, apply_rotary
from audiolm_pytorch.nn.transformer import Transformer


def test_rotary_angles_stay_exact_after_casting_the_module_to_bfloat16():
    # model.to(bfloat16) casts buffers: rotary frequencies must not be rounded to bf16 (at position 1000 that
    # turns angles by radians, i.e. scrambles positions of a model trained in float32)
    ref = RotaryEmbedding(64)
    cast = RotaryEmbedding(64).to(torch.bfloat16)
    cos_ref, sin_ref = ref(1024)
    cos, sin = cast(1024)
    assert cos.dtype == torch.float32
    assert torch.allclose(cos, cos_ref, atol = 1e-4) and torch.allclose(sin, sin_ref, atol = 1e-4)


def test_rotary_far_positions_are_accurate_and_do_not_grow_an_unbounded_table():
    rotary = RotaryEmbedding(32)
    pos = 3_000_000
    cos, sin = rotary(4, offset = pos)
    positions = torch.arange(pos, pos + 4, dtype = torch.float64)
    inv = 1. / (10000. ** (torch.arange(0, 32, 2, dtype = torch.float64) / 32))
    freqs = positions[:, None] * inv
    freqs = torch.cat((freqs, freqs), dim = -1)
    assert torch.allclose(cos.double(), freqs.cos(), atol = 1e-5)
    assert torch.allclose(sin.double(), freqs.sin(), atol = 1e-5)
    table = rotary._table
    assert table is None or table[0].shape[0] <= 1 << 17, 'a far offset must not allocate a table up to it'


def test_rotary_tensor_positions_match_integer_positions():
    rotary = RotaryEmbedding(16)
    cos_a, sin_a = rotary(10, offset = 5)
    cos_b, sin_b = rotary(torch.arange(5, 15))
    assert torch.allclose(cos_a, cos_b, atol = 1e-6) and torch.allclose(sin_a, sin_b, atol = 1e-6)


def test_partial_rotary_keeps_passthrough_and_relative_scores():
    rotary = RotaryEmbedding(10, rotary_fraction = 0.5)     # rotary_dim 4 of 10
    assert rotary.rotary_dim == 4
    q, k = torch.randn(1, 1, 1, 10), torch.randn(1, 1, 1, 10)

    def score(pq, pk):
        cq, sq = rotary(torch.tensor([pq]))
        ck, sk = rotary(torch.tensor([pk]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    assert torch.allclose(score(7, 3), score(107, 103), atol = 1e-4)
    cq, sq = rotary(torch.tensor([7]))
    assert torch.equal(apply_rotary(q, cq, sq)[..., 4:], q[..., 4:])


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
