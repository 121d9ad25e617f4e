"""SoundStorm's per-codebook projections (``ConformerWrapper(quantizer_heads=True)``, soundstorm-pytorch's
``heads``: ``Linear(dim, dim * codebooks)`` then a LayerNorm before each codebook's logits), and checkpoints of
versions <= 0.1.0 (logits straight from the conformer output) still rebuilding their layout.

Checked against: slicing the head weights as ``(o k) i`` instead of ``(k o) i`` in ``_logits`` (the subset test
fails); leaving the nested config's legacy default out of ``config_from_data`` (the old-checkpoint test fails with
missing keys).
"""

import json

import pytest
import torch

from audiolm_pytorch import ConformerWrapper, SoundStorm
from audiolm_pytorch.checkpoint import Checkpointable, read_checkpoint

CONFORMER = dict(dim = 16, depth = 1, dim_head = 8, heads = 2)


def wrapper(**kwargs):
    return ConformerWrapper(codebook_size = 16, num_quantizers = 3, conformer = CONFORMER, grouped_quantizers = 2,
                            **kwargs)


def test_heads_match_the_reference_layout():
    net = wrapper()
    assert net.heads.weight.shape == (16 * 6, 16) and net.heads.bias.shape == (16 * 6,)
    assert net.heads_norm.normalized_shape == (16,)
    assert wrapper(quantizer_heads = False).heads is None
    assert net.config['quantizer_heads'] is True


def test_logits_of_chosen_codebooks_equal_the_full_logits():
    torch.manual_seed(0)
    net = wrapper().eval()
    codes = torch.randint(0, 17, (2, 5, 6))
    with torch.no_grad():
        full = net(codes)                                               # (b, n, 6, c)
        some = net(codes, quantizers = [4, 1])
        per_sample = net(codes, quantizers = torch.tensor([[0, 5], [3, 2]]))
    assert full.shape == (2, 5, 6, 16)
    assert torch.allclose(some, full[:, :, [4, 1]], atol = 1e-5)
    assert torch.allclose(per_sample[0], full[0][:, [0, 5]], atol = 1e-5)
    assert torch.allclose(per_sample[1], full[1][:, [3, 2]], atol = 1e-5)


def test_old_soundstorm_checkpoint_rebuilds_without_heads(tmp_path):
    torch.manual_seed(0)
    old = SoundStorm(wrapper(quantizer_heads = False), steps = 4).eval()
    path = old.save(tmp_path / 'old.pt')
    pkg = torch.load(path, weights_only = True)
    config = json.loads(pkg['config'])
    del config['net']['config']['quantizer_heads']                     # as versions <= 0.1.0 wrote it
    pkg['config'] = json.dumps(config)
    torch.save(pkg, path)
    assert 'quantizer_heads' not in read_checkpoint(path)['config']['net']['config']

    rebuilt = Checkpointable.init_and_load_from(path).eval()
    assert rebuilt.net.heads is None
    codes = torch.randint(0, 16, (1, 4, 6))
    with torch.no_grad():
        assert torch.equal(rebuilt.net(codes), old.net(codes))
    with pytest.raises(ValueError, match = r'net\.quantizer_heads=False'):
        SoundStorm(wrapper(), steps = 4).load(path)
