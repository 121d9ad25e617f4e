"""Decoder stack and conditioned decoder: causality, kv cache, guidance, padding, conditioning offline."""

import pytest
import torch

from audiolm_pytorch.lm.conditioning import t5_embed_dim
from audiolm_pytorch.lm.sampling import append_eos, batch_unique_consecutive, mask_after_eos, top_k_filter
from audiolm_pytorch.lm.semantic import SemanticTransformer
from audiolm_pytorch.lm.transformer import ConditionedDecoder, left_align
from audiolm_pytorch.nn.transformer import Transformer

TINY = dict(dim = 32, depth = 2, heads = 2, dim_head = 16)


def test_transformer_is_causal_by_gradients():
    net = Transformer(cross_attend = True, **TINY)
    x = torch.randn(2, 10, 32, requires_grad = True)
    context = torch.randn(2, 3, 32)
    out = net(x, context = context)
    # a random projection, not a plain sum: the final LayerNorm's outputs sum to zero, whose gradient is 0
    (out[:, 4] * torch.randn(32)).sum().backward()
    grad_per_position = x.grad.abs().sum(dim = (0, 2))
    assert (grad_per_position[5:] == 0).all()
    assert (grad_per_position[:5] > 0).all()


def test_transformer_kv_cache_matches_full_pass():
    net = Transformer(**TINY).eval()
    x = torch.randn(2, 9, 32)
    full = net(x)
    out, cache = net(x[:, :4], return_cache = True)
    steps = [out]
    for i in range(4, 9):
        out, cache = net(x[:, i:i + 1], cache = cache, return_cache = True)
        steps.append(out)
    assert torch.allclose(torch.cat(steps, dim = 1), full, atol = 1e-5)


@pytest.mark.parametrize('prefix', [False, True])
def test_decoder_padding_does_not_change_real_tokens(prefix):
    """Left padding of the tokens (masked) leaves the real tokens' outputs unchanged (cross-attention mode;
    in prefix mode the padding sits between condition and tokens), and padded text never matters."""
    dec = ConditionedDecoder(has_condition = True, cond_dim = 8, cond_as_self_attn_prefix = prefix, **TINY).eval()
    x = torch.randn(1, 6, 32)
    text = torch.randn(1, 3, 8)
    ref, _ = dec(x, text_embeds = text)
    padded = torch.cat((torch.randn(1, 2, 32), x), dim = 1)
    keep = torch.tensor([[False, False] + [True] * 6])
    out, _ = dec(padded, text_embeds = text, key_mask = keep)
    assert torch.isfinite(out).all()
    if not prefix:
        assert torch.allclose(out[:, 2:], ref, atol = 1e-5)
    # right-padded text (zeros) gives the same result as unpadded text
    out_text_pad, _ = dec(x, text_embeds = torch.cat((text, torch.zeros(1, 2, 8)), dim = 1))
    assert torch.allclose(out_text_pad, ref, atol = 1e-5)


def test_left_align_moves_padding_left():
    x = torch.tensor([[1, 2, 0, 0], [3, 0, 4, 0]])
    out, keep = left_align(x, x != 0)
    assert out.tolist() == [[0, 0, 1, 2], [0, 0, 3, 4]]
    assert keep.tolist() == [[False, False, True, True]] * 2


@pytest.mark.parametrize('prefix', [False, True])
def test_cfg_scale_one_equals_conditional_and_other_scales_differ(prefix):
    model = SemanticTransformer(num_semantic_tokens = 20, has_condition = True, cond_dim = 8,
                                cond_as_self_attn_prefix = prefix, **TINY).eval()
    ids = torch.randint(0, 20, (2, 7))
    text_embeds = torch.randn(2, 4, 8)
    cond = model(ids = ids, text_embeds = text_embeds, cond_drop_prob = 0.)
    null = model(ids = ids, text_embeds = text_embeds, cond_drop_prob = 1.)
    assert not torch.allclose(cond, null)
    assert torch.allclose(model.forward_with_cond_scale(ids = ids, text_embeds = text_embeds, cond_scale = 1.), cond)
    guided = model.forward_with_cond_scale(ids = ids, text_embeds = text_embeds, cond_scale = 3.)
    assert torch.allclose(guided, null + (cond - null) * 3., atol = 1e-4)
    # dropping the condition in training hides the text entirely
    assert torch.allclose(model(ids = ids, cond_drop_prob = 0.), null, atol = 1e-5)


def test_condition_built_offline_with_default_dim():
    model = SemanticTransformer(num_semantic_tokens = 10, has_condition = True, **TINY)
    assert model.decoder.cond_dim == 768 == t5_embed_dim('google/t5-v1_1-base')
    assert model.decoder._t5 is None                            # T5 not loaded at construction
    out = model(ids = torch.randint(0, 10, (1, 4)), text_embeds = torch.randn(1, 2, 768))
    assert out.shape == (1, 5, 11)
    with pytest.raises(ValueError, match = 'cond_dim'):
        model(ids = torch.randint(0, 10, (1, 4)), text_embeds = torch.randn(1, 2, 32))
    with pytest.raises(ValueError, match = 'has_condition'):
        SemanticTransformer(num_semantic_tokens = 10, **TINY)(ids = torch.zeros(1, 2).long(), text_embeds = torch.randn(1, 2, 768))


def test_missing_local_t5_is_a_clear_error(tmp_path):
    model = SemanticTransformer(num_semantic_tokens = 10, has_condition = True, t5_name = str(tmp_path / 'no_t5'), **TINY)
    with pytest.raises(RuntimeError, match = 'text_embeds'):
        model.embed_text(['hello'])


def test_sequence_helpers():
    ids = torch.tensor([[1, 1, 2, 2, 3], [4, 4, 4, -1, -1]])
    assert batch_unique_consecutive(ids).tolist() == [[1, 2, 3], [4, -1, -1]]
    assert append_eos(torch.tensor([[1, 2, -1], [3, 4, 5]]), 9).tolist() == [[1, 2, 9, -1], [3, 4, 5, 9]]
    assert mask_after_eos(torch.tensor([[1, 9, 2, 3]]), 9).tolist() == [[1, -1, -1, -1]]
    assert mask_after_eos(torch.tensor([[1, 9, 2]]), 9, include_eos = False).tolist() == [[1, 9, -1]]
    filtered = top_k_filter(torch.tensor([[1., 4., 3., 2.]]), 0.5)
    assert torch.isinf(filtered).tolist() == [[True, False, False, True]]


def test_checkpoint_round_trip(tmp_path):
    model = SemanticTransformer(num_semantic_tokens = 10, **TINY)
    model.save(tmp_path / 'semantic.pt')
    loaded = SemanticTransformer.init_and_load_from(tmp_path / 'semantic.pt').eval()
    ids = torch.randint(0, 10, (1, 5))
    assert torch.allclose(loaded(ids = ids), model.eval()(ids = ids))
