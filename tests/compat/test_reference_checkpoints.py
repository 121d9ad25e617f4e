"""Checkpoints written by the real audiolm-pytorch 2.4.0 (tests/assets/reference/, made once by
scripts/make_reference_checkpoints.py in the reference's own virtualenv): the key map accounts for every key,
exact parts convert exactly, and the parts this package's networks lack make strict conversion fail loudly,
naming them (issue 15, point 6)."""

import logging
import re
from pathlib import Path

import pytest
import torch
from einops import rearrange

from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer, SoundStream
from audiolm_pytorch.reference_checkpoints import (ReferenceCheckpointError, convert_reference_checkpoint,
                                                convert_reference_soundstream, read_reference_state_dict)

REF = Path(__file__).parents[1] / 'assets' / 'reference'
PKG = torch.load(REF / 'outputs.pt', weights_only = True)
CONFIGS = PKG['configs']
BUILD = dict(semantic = lambda: SemanticTransformer(**CONFIGS['semantic']),
             semantic_flash = lambda: SemanticTransformer(**CONFIGS['semantic'], flash_attn = True),
             coarse = lambda: CoarseTransformer(**CONFIGS['coarse']),
             fine = lambda: FineTransformer(**CONFIGS['fine']))


@pytest.mark.parametrize('name', sorted(BUILD))
def test_strict_conversion_names_every_missing_part(name):
    with pytest.raises(ReferenceCheckpointError) as info:
        convert_reference_checkpoint(REF / f'{name}.pt', BUILD[name]())
    message = str(info.value)
    for part in ('hyper-connections', 'LayerNorm inside the feed-forward', 'value-residual', 'strict=False'):
        assert part in message
    if name == 'semantic':                       # rel_pos_bias on (no flash_attn): its MLP is named too
        assert 'relative position bias' in message
    if name == 'semantic_flash':                 # flash_attn=True turns the reference's bias off
        assert 'relative position bias' not in message


@pytest.mark.parametrize('name', sorted(BUILD))
def test_every_reference_key_is_accounted_for(name, caplog):
    state = read_reference_state_dict(REF / f'{name}.pt')
    model = BUILD[name]()
    with caplog.at_level(logging.WARNING):
        report = convert_reference_checkpoint(REF / f'{name}.pt', model, strict = False)
    assert 'Loaded the mapped tensors only' in caplog.text
    accounted = set(report.mapped) | set(report.unused) | {k for keys in report.structural.values() for k in keys}
    assert accounted == set(state)
    # most of the network transfers; the structural parts are small (figures in docs/model_differences.md)
    assert report.mapped_params > 10 * report.structural_params
    ours = model.state_dict()
    for ref_key, our_key in report.mapped.items():
        if ref_key.endswith(('to_kv.weight', 'logit_weights')) or our_key == 'embedding.weight':
            continue                             # reshaped: checked below
        assert torch.equal(ours[our_key], state[ref_key]), ref_key


def test_fine_embedding_and_heads_are_rearranged_faithfully():
    state = read_reference_state_dict(REF / 'fine.pt')
    model = BUILD['fine']()
    convert_reference_checkpoint(REF / 'fine.pt', model, strict = False)
    assert torch.equal(model.embedding.weight, torch.cat((state['coarse_embedding.weight'], state['fine_embedding.weight'])))
    hidden = torch.randn(3, 32)
    # the reference's einsum('q c d, b n q d -> b n q c') against ours (q, d, c)
    assert torch.allclose(torch.einsum('qcd,bd->bqc', state['fine_logit_weights'], hidden),
                          torch.einsum('qdc,bd->bqc', model.fine_head_weight, hidden), atol = 1e-6)
    assert not model.fine_head_bias.any()        # the reference heads have no bias


@pytest.mark.parametrize('attn_kv_heads', [1, None])
def test_shared_key_value_head_maps_onto_our_heads_exactly(attn_kv_heads):
    """The reference attends with one key/value head shared by all query heads: our default (attn_kv_heads=1)
    has the same single head and takes the tensor as is; built with one key/value head per query head
    (attn_kv_heads=None, the layout of versions <= 0.1.0) the head is repeated over ours. Both are the same
    attention (checked against the reference's computation written out)."""
    state = read_reference_state_dict(REF / 'semantic.pt')
    model = SemanticTransformer(**CONFIGS['semantic'], attn_kv_heads = attn_kv_heads).eval()
    convert_reference_checkpoint(REF / 'semantic.pt', model, strict = False)
    layer = model.decoder.transformer.layers[0]
    shared = state['transformer.layers.0.0.branch.to_kv.weight']
    assert torch.equal(layer.attn.to_kv.weight, shared) == (attn_kv_heads == 1)
    assert layer.attn.to_kv.weight.shape[0] == shared.shape[0] * (1 if attn_kv_heads == 1 else 2)
    x = torch.randn(2, 6, 32)

    prefix = 'transformer.layers.0.0.branch.'
    q = rearrange(x @ state[prefix + 'to_q.weight'].T, 'b n (h d) -> b h n d', h = 2)
    k, v = (x @ state[prefix + 'to_kv.weight'].T).chunk(2, dim = -1)
    sim = torch.einsum('bhid,bjd->bhij', q, k) * q.shape[-1] ** -0.5
    sim = sim.masked_fill(torch.ones(6, 6, dtype = torch.bool).triu(1), float('-inf'))
    expected = rearrange(torch.einsum('bhij,bjd->bhid', sim.softmax(-1), v), 'b h n d -> b n (h d)')
    expected = expected @ state[prefix + 'to_out.0.weight'].T
    with torch.no_grad():
        ours = layer.attn(x, rotary = None)
    assert torch.allclose(ours, expected, atol = 1e-5)


def test_converted_logits_differ_from_the_reference_by_the_missing_parts():
    """Measured, not hidden: with the mapped tensors only, the logits are far from 2.4.0's."""
    model = BUILD['semantic']().eval()
    convert_reference_checkpoint(REF / 'semantic.pt', model, strict = False)
    with torch.no_grad():
        logits = model(ids = PKG['inputs']['semantic_ids'])
    reference = PKG['outputs']['semantic_logits']
    assert logits.shape == reference.shape
    assert (logits - reference).norm() / reference.norm() > 0.1


def test_unknown_keys_and_wrong_shapes_fail_loudly():
    state = dict(read_reference_state_dict(REF / 'semantic.pt'))
    state['transformer.layers.0.0.branch.mystery.weight'] = torch.zeros(3)
    with pytest.raises(ReferenceCheckpointError, match = re.escape('mystery.weight')):
        convert_reference_checkpoint(dict(model = state), BUILD['semantic'](), strict = False)
    with pytest.raises(ReferenceCheckpointError, match = 'same constructor arguments'):
        convert_reference_checkpoint(REF / 'semantic.pt', SemanticTransformer(num_semantic_tokens = 30, dim = 32,
                                                                              depth = 2, heads = 2, dim_head = 16),
                                     strict = False)
    with pytest.raises(ReferenceCheckpointError, match = 'no key map'):
        convert_reference_checkpoint(REF / 'semantic.pt', torch.nn.Linear(2, 2), strict = False)
    with pytest.raises(FileNotFoundError):
        convert_reference_checkpoint(REF / 'missing.pt', BUILD['semantic']())


def test_soundstream_checkpoint_is_refused_with_what_differs():
    config = dict(CONFIGS['soundstream'])
    ours = SoundStream(**config)
    with pytest.raises(ReferenceCheckpointError, match = 'cannot be converted') as info:
        convert_reference_soundstream(REF / 'soundstream.pt', ours)
    assert 'decoder' in str(info.value) and 'encoder_attn' in str(info.value)


def test_load_routes_reference_files_through_the_converter(caplog, tmp_path):
    """``.load(path)`` (the README's promise) on a 2.4.0 file: the converter's error, not a bare key mismatch;
    ``strict=False`` is the warm start."""
    model = BUILD['coarse']()
    with pytest.raises(ReferenceCheckpointError, match = 'hyper-connections'):
        model.load(REF / 'coarse.pt')
    with caplog.at_level(logging.WARNING):
        model.load(REF / 'coarse.pt', strict = False)
    state = read_reference_state_dict(REF / 'coarse.pt')
    assert torch.equal(model.coarse_embedding.weight, state['coarse_embedding.weight'])

    soundstream = SoundStream(**CONFIGS['soundstream'])
    with pytest.raises(ReferenceCheckpointError, match = 'SoundStream checkpoints from audiolm-pytorch 2.4.0'):
        soundstream.load(REF / 'soundstream.pt')
    # files this package wrote, and bare state dicts of our own networks, load as before
    torch.save(soundstream.state_dict(), tmp_path / 'bare.pt')
    SoundStream(**CONFIGS['soundstream']).load(tmp_path / 'bare.pt')
    torch.save(model.state_dict(), tmp_path / 'coarse_bare.pt')
    BUILD['coarse']().load(tmp_path / 'coarse_bare.pt')


def test_key_map_alone_reproduces_the_reference_exactly():
    """semantic_plain.pt: 2.4.0 with the parts this package lacks switched off (one residual stream, no value
    residual, no position bias, an identity for its feed-forward LayerNorm, and for its attention pre-norm, which
    2.4.0 applies to the queries only). With our rotary positions and attention pre-norm off too, the mapped
    weights give 2.4.0's logits: every tensor of the key map lands in the right place."""
    model = BUILD['semantic_flash']().eval()
    report = convert_reference_checkpoint(REF / 'semantic_plain.pt', model, strict = False)
    assert report.structural_params == 0
    model.decoder.transformer.rotary = None
    for layer in model.decoder.transformer.layers:
        layer.attn_norm = torch.nn.Identity()
    with torch.no_grad():
        logits = model(ids = PKG['inputs']['semantic_ids'])
    assert torch.allclose(logits, PKG['outputs']['semantic_plain_logits'], atol = 1e-4)
