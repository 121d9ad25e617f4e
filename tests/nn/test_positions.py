"""Rotary positions: exact angles in bf16 models, far positions, tensor positions, partial rotary."""
import torch

from audiolm_pytorch.nn.positions import RotaryEmbedding, apply_rotary


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
