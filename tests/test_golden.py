"""Golden outputs: tiny seeded models rebuilt from the files in ``tests/golden/`` (config + weights, written by
``scripts/make_golden.py`` in the library's checkpoint format) must reproduce the outputs stored beside them.

A failure means a change altered the numbers a saved model produces (or stopped an old file from loading):
fix the change, or — when the new numbers are intended — regenerate the files and say so in the commit.
Checked against: a 1.01 temperature on the queries in either attention path of ``nn/attention.py`` (fails the
five attention models), the codec decoder's ELU alpha 1 -> 0.9 (fails the codec); a changed keyword default
(``SemanticTransformer(ff_mult=)`` 4 -> 2) passes, since the stored configs name every argument.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audiolm_pytorch.checkpoint import Checkpointable, read_checkpoint, resolve_kind

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / 'tests' / 'golden'

_spec = importlib.util.spec_from_file_location('make_golden', ROOT / 'scripts' / 'make_golden.py')
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

KINDS = dict(soundstream = 'SoundStream', semantic_transformer = 'SemanticTransformer',
             coarse_transformer = 'CoarseTransformer', fine_transformer = 'FineTransformer',
             soundstorm = 'SoundStorm', mulan = 'MuLaN')


def test_every_model_has_a_golden_file():
    assert sorted(make_golden.MODELS) == sorted(KINDS)
    for name in KINDS:
        assert (GOLDEN / f'{name}.safetensors').is_file() and (GOLDEN / f'{name}.io.safetensors').is_file()


@pytest.mark.parametrize('name', sorted(KINDS))
def test_golden_outputs_are_reproduced(name):
    pkg = read_checkpoint(GOLDEN / f'{name}.safetensors')
    assert pkg['kind'] == KINDS[name]
    model = Checkpointable.init_and_load_from(GOLDEN / f'{name}.safetensors')
    assert type(model) is resolve_kind(KINDS[name])

    stored = load_file(str(GOLDEN / f'{name}.io.safetensors'))
    inputs = {k[len('input.'):]: v for k, v in stored.items() if k.startswith('input.')}
    expected = {k[len('output.'):]: v for k, v in stored.items() if k.startswith('output.')}
    assert inputs and expected

    outputs = make_golden.compute_outputs(name, model, inputs)
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        actual = outputs[key]
        assert actual.shape == value.shape, f'{name}.{key}: shape {tuple(actual.shape)} != {tuple(value.shape)}'
        if value.dtype.is_floating_point:
            scale = value.abs().max().clamp(min = 1.)
            err = (actual - value).abs().max() / scale
            assert err <= 1e-5, f'{name}.{key}: relative max difference {err:.2e}'
        else:
            assert torch.equal(actual, value), f'{name}.{key}: {int((actual != value).sum())} entries differ'


def test_golden_codec_codes_use_the_codebooks():
    """A golden file whose codes were all one index would not notice a broken quantizer."""
    codes = load_file(str(GOLDEN / 'soundstream.io.safetensors'))['output.codes']
    for level in range(codes.shape[-1]):
        assert codes[..., level].unique().numel() >= 3
