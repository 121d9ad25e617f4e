"""Shared key/value heads (``attn_kv_heads``) in the stage transformers, and checkpoints written before the
default changed (versions <= 0.1.0 had one key/value head per query head) still rebuilding that layout.

Checked against: repeating the shared head with ``repeat`` instead of ``repeat_interleave`` in
``nn/attention.py`` (groups read the wrong head: the GQA equivalence test fails); dropping the legacy-default
lookup in ``init_and_load_from`` (the old-config test fails with a size mismatch); removing the always-record loop
in ``Checkpointable`` (the new config lacks the keyword and would rebuild the old layout).
"""

import json

import pytest
import torch
from einops import repeat

from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer
from audiolm_pytorch.checkpoint import Checkpointable, read_checkpoint
from audiolm_pytorch.nn.attention import Attention

TINY = dict(dim = 32, depth = 2, heads = 4, dim_head = 8)


@pytest.mark.parametrize('kv_heads', [1, 2])
def test_shared_heads_equal_per_head_attention_with_repeated_weights(kv_heads):
    torch.manual_seed(0)
    shared = Attention(dim = 32, heads = 4, dim_head = 8, causal = True, kv_heads = kv_heads).eval()
    full = Attention(dim = 32, heads = 4, dim_head = 8, causal = True).eval()
    k, v = shared.to_kv.weight.detach().chunk(2, dim = 0)
    group = 4 // kv_heads
    spread = lambda w: repeat(w, '(h d) c -> (h g d) c', h = kv_heads, g = group)
    with torch.no_grad():
        full.to_q.weight.copy_(shared.to_q.weight)
        full.to_out.weight.copy_(shared.to_out.weight)
        full.to_kv.weight.copy_(torch.cat((spread(k), spread(v))))
    x = torch.randn(2, 7, 32)
    mask = torch.tensor([[True] * 7, [False, False] + [True] * 5])
    with torch.no_grad():
        assert torch.allclose(shared(x, mask = mask), full(x, mask = mask), atol = 1e-5)


def test_kv_cache_holds_the_shared_heads_only_and_decodes_like_a_full_pass():
    torch.manual_seed(0)
    attn = Attention(dim = 32, heads = 4, dim_head = 8, causal = True, kv_heads = 1).eval()
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        whole = attn(x)
        out, cache = attn(x[:, :5], return_cache = True)
        step, cache = attn(x[:, 5:], cache = cache, return_cache = True)
    assert cache.keys.shape == (1, 1, 6, 8) and cache.values.shape == (1, 1, 6, 8)
    assert torch.allclose(step, whole[:, 5:], atol = 1e-5)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValueError, match = 'kv_heads=3 must'):
        Attention(dim = 32, heads = 4, dim_head = 8, kv_heads = 3)


@pytest.mark.parametrize('build', [
    lambda **kw: SemanticTransformer(num_semantic_tokens = 10, **TINY, **kw),
    lambda **kw: CoarseTransformer(num_semantic_tokens = 10, codebook_size = 16, num_coarse_quantizers = 2, **TINY, **kw),
    lambda **kw: FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **TINY, **kw),
])
def test_default_is_one_shared_head_and_the_old_layout_is_an_option(build):
    shared, per_head = build(), build(attn_kv_heads = None)
    layer = lambda m: m.decoder.transformer.layers[0].attn
    assert layer(shared).to_kv.weight.shape == (2 * 8, 32)
    assert layer(per_head).to_kv.weight.shape == (2 * 4 * 8, 32)
    assert shared.config['attn_kv_heads'] == 1     # recorded even when defaulted


def _as_old_checkpoint(path):
    """Rewrite a checkpoint as versions <= 0.1.0 wrote it: no attn_kv_heads in the config."""
    pkg = torch.load(path, weights_only = True)
    config = json.loads(pkg['config'])
    del config['attn_kv_heads']
    pkg['config'], pkg['version'] = json.dumps(config), '0.1.0'
    torch.save(pkg, path)


def test_old_checkpoint_rebuilds_per_head_layout_and_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    old = SemanticTransformer(num_semantic_tokens = 10, **TINY, attn_kv_heads = None).eval()
    path = old.save(tmp_path / 'old.pt')
    _as_old_checkpoint(path)
    assert 'attn_kv_heads' not in read_checkpoint(path)['config']

    rebuilt = Checkpointable.init_and_load_from(path).eval()
    assert rebuilt.config['attn_kv_heads'] is None
    ids = torch.randint(0, 10, (2, 9))
    with torch.no_grad():
        assert torch.equal(rebuilt(ids = ids), old(ids = ids))

    # built with today's default, the old file is refused with the option to set
    with pytest.raises(ValueError, match = r'attn_kv_heads=None.*init_and_load_from'):
        SemanticTransformer(num_semantic_tokens = 10, **TINY).load(path)
    SemanticTransformer(num_semantic_tokens = 10, **TINY, attn_kv_heads = None).load(path)


def test_new_checkpoint_keeps_its_shared_head(tmp_path):
    torch.manual_seed(0)
    model = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **TINY).eval()
    path = model.save(tmp_path / 'new.safetensors')
    assert read_checkpoint(path)['config']['attn_kv_heads'] == 1
    rebuilt = Checkpointable.init_and_load_from(path)
    assert rebuilt.decoder.transformer.layers[0].attn.kv_heads == 1


class FixedSemantic(SemanticTransformer):
    """A user subclass whose constructor does not take the keyword its base class records."""

    def __init__(self, *, num_semantic_tokens: int):
        super().__init__(num_semantic_tokens = num_semantic_tokens, **TINY)


def test_subclass_without_the_keyword_still_rebuilds(tmp_path):
    path = FixedSemantic(num_semantic_tokens = 10).save(tmp_path / 'sub.pt')
    assert read_checkpoint(path)['config'] == {'num_semantic_tokens': 10}
    assert isinstance(Checkpointable.init_and_load_from(path), FixedSemantic)
