"""Same constructor, same size: for the reference README constructors whose model matches the established
packages' within 1% of parameters, ours stays there (issue 15, point 5).

The reference counts below were produced by ``python benchmarks/param_parity.py`` (audiolm-pytorch 2.4.0,
soundstorm-pytorch 0.6.1, musiclm-pytorch 0.2.8 in their own virtualenv; SoundStream counts the generator
only, as its ``non_discr_parameters()``). Constructors that differ by more are listed, with the reason, in
docs/model_differences.md.
"""

import pytest
import torch

REFERENCE_COUNTS = {
    'soundstream_default': 18_114_321,      # SoundStream(codebook_size=1024, rq_num_quantizers=8)
    'soundstream_soundstorm_readme': 24_417_313,   # ... rq_num_quantizers=12, attn_window_size=128, attn_depth=2
    'conformer': 13_758_672,                # ConformerWrapper(1024, 12, conformer=dict(dim=512, depth=2)).conformer
    'ast': 19_029_768,                      # AudioSpectrogramTransformer(dim=512, depth=6, heads=8, dim_head=64, ...)
    'mulan_bpe_vocab': 63_468_297,          # MuLaN(ast, TextTransformer(dim=512, depth=6, ..., num_tokens=49408))
}


def count(module) -> int:
    params = module.non_discr_parameters() if hasattr(module, 'non_discr_parameters') else module.parameters()
    return sum(p.numel() for p in params)


def build(name):
    from audiolm_pytorch import (AudioSpectrogramTransformer, ConformerWrapper, MuLaN, SoundStream,
                                 TextTransformer)
    ast = lambda: AudioSpectrogramTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64, spec_n_fft = 128,
                                              spec_win_length = 24, spec_aug_stretch_factor = 0.8)
    return {
        'soundstream_default': lambda: SoundStream(codebook_size = 1024, rq_num_quantizers = 8),
        'soundstream_soundstorm_readme': lambda: SoundStream(codebook_size = 1024, rq_num_quantizers = 12,
                                                             attn_window_size = 128, attn_depth = 2),
        'conformer': lambda: ConformerWrapper(codebook_size = 1024, num_quantizers = 12,
                                              conformer = dict(dim = 512, depth = 2)).conformer,
        'ast': ast,
        'mulan_bpe_vocab': lambda: MuLaN(audio_transformer = ast(), text_transformer = TextTransformer(
            dim = 512, depth = 6, heads = 8, dim_head = 64, num_tokens = 49408)),
    }[name]()


@pytest.mark.parametrize('name', sorted(REFERENCE_COUNTS))
def test_parameter_count_within_one_percent_of_reference(name):
    if name.startswith('soundstream'):       # its constructor computes on tensors (meta tensors refuse that)
        model = build(name)
    else:
        with torch.device('meta'):          # sizes only: no memory, no init time
            model = build(name)
    ours, reference = count(model), REFERENCE_COUNTS[name]
    assert abs(ours - reference) / reference <= 0.01, f'{name}: ours {ours:,} vs reference {reference:,}'
