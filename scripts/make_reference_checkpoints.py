"""Write small checkpoints with the established audiolm-pytorch 2.4.0, and its outputs for fixed inputs, into
tests/assets/reference/ (run once, committed; tests/test_reference_checkpoints.py reads them).

Run with the interpreter of a virtualenv holding audiolm-pytorch 2.4.0 (and its dependencies), never with this
checkout on the path (both packages import as ``audiolm_pytorch``):

    /work/venv-ref/bin/python scripts/make_reference_checkpoints.py [--out tests/assets/reference]

fairseq (imported by the reference but unused here) is replaced by an empty stub package, and the T5 width is
fixed at 768 so nothing is downloaded. Configs are tiny and seeded. Files written:

- ``{semantic,coarse,fine}.pt``: ``dict(model=state_dict, version='2.4.0', config=kwargs)`` — the layout the
  reference trainers save (``config`` added here so the test can rebuild the same constructor call);
  ``semantic_flash.pt`` is the README's ``flash_attn=True`` variant (no relative position bias);
  ``semantic_plain.pt`` has the parts this package lacks switched off (see below), to check the key map alone.
- ``soundstream.pt``: what ``SoundStream.save`` writes (``model``, pickled ``config``, ``version``), with the
  discriminators' tensors replaced by their shapes (``discriminator_shapes``) to keep the file small.
- ``outputs.pt``: fixed inputs and the reference outputs (logits, codes, reconstruction) in eval mode.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

SEMANTIC = dict(num_semantic_tokens = 20, dim = 32, depth = 2, heads = 2, dim_head = 16)
COARSE = dict(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, dim = 32, depth = 2, heads = 2,
              dim_head = 16)
FINE = dict(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, dim = 32, depth = 2, heads = 2,
            dim_head = 16)
SOUNDSTREAM = dict(codebook_size = 16, rq_num_quantizers = 2, channels = 8, strides = (2, 2), channel_mults = (1, 2),
                   codebook_dim = 8, attn_depth = 1, attn_window_size = 8, attn_dim_head = 8, attn_heads = 2,
                   target_sample_hz = 16000)


def main():
    parser = argparse.ArgumentParser(description = __doc__.splitlines()[0])
    parser.add_argument('--out', type = Path, default = Path(__file__).resolve().parents[1] / 'tests/assets/reference')
    args = parser.parse_args()
    args.out.mkdir(parents = True, exist_ok = True)

    stub = Path(tempfile.mkdtemp()) / 'fairseq'
    stub.mkdir()
    (stub / '__init__.py').write_text('')
    sys.path.insert(0, str(stub.parent))

    import torch
    import audiolm_pytorch
    import audiolm_pytorch.audiolm_pytorch as reference_lm
    from importlib.metadata import version
    if version('audiolm-pytorch') != '2.4.0' or 'site-packages' not in audiolm_pytorch.__file__:
        raise SystemExit(f'expected the installed audiolm-pytorch 2.4.0, found {version("audiolm-pytorch")} at '
                         f'{audiolm_pytorch.__file__}')
    reference_lm.get_encoded_dim = lambda name: 768
    from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer, SoundStream

    outputs = {}
    torch.manual_seed(0)
    models = dict(semantic = (SemanticTransformer, SEMANTIC), semantic_flash = (SemanticTransformer,
                  dict(SEMANTIC, flash_attn = True)), coarse = (CoarseTransformer, COARSE), fine = (FineTransformer, FINE))
    built = {}
    for name, (cls, config) in models.items():
        model = cls(**config).eval()
        torch.save(dict(model = model.state_dict(), version = '2.4.0', config = config), args.out / f'{name}.pt')
        built[name] = model

    # 'plain' variant: the reference with the parts this package lacks switched off (one residual stream, no
    # value residual, no position bias, its feed-forward LayerNorm replaced by an identity), and its attention
    # pre-norm too (2.4.0 computes self-attention keys / values from the un-normalised input and only the
    # queries from the normalised one; the test removes our attention pre-norm likewise): what the key map alone
    # must reproduce exactly
    plain = SemanticTransformer(**SEMANTIC, flash_attn = True, num_residual_streams = 1,
                                add_value_residual = False).eval()
    for layer in plain.transformer.layers:
        layer[0].branch.norm = torch.nn.Identity()
        layer[2].branch[3] = torch.nn.Identity()
    torch.save(dict(model = plain.state_dict(), version = '2.4.0', config = dict(SEMANTIC, flash_attn = True)),
               args.out / 'semantic_plain.pt')
    built['semantic_plain'] = plain

    gen = torch.Generator().manual_seed(1)
    semantic_ids = torch.randint(0, 20, (2, 7), generator = gen)
    coarse_ids = torch.randint(0, 16, (2, 4, 2), generator = gen)
    fine_ids = torch.randint(0, 16, (2, 4, 2), generator = gen)
    with torch.no_grad():
        for name in ('semantic', 'semantic_flash', 'semantic_plain'):
            outputs[f'{name}_logits'] = built[name](ids = semantic_ids)
        sem_logits, coarse_logits = built['coarse'](semantic_token_ids = semantic_ids, coarse_token_ids = coarse_ids)
        outputs.update(coarse_semantic_logits = sem_logits, coarse_coarse_logits = coarse_logits)
        fine_c, fine_f = built['fine'](coarse_token_ids = coarse_ids, fine_token_ids = fine_ids)
        outputs.update(fine_coarse_logits = fine_c, fine_fine_logits = fine_f)

    soundstream = SoundStream(**SOUNDSTREAM).eval()
    soundstream.save(str(args.out / 'soundstream.pt'))
    # the discriminators make SoundStream.save's file ~100 MB: keep the generator's tensors, and the names and
    # shapes of the discriminators' (the conversion check needs those, not their values)
    pkg = torch.load(args.out / 'soundstream.pt', weights_only = False)
    generator = {id(p) for p in soundstream.non_discr_parameters()}
    keep = {name for name, p in soundstream.named_parameters() if id(p) in generator}
    keep |= {name for name, _ in soundstream.named_buffers() if not name.startswith(('discriminators', 'stft_discriminator'))}
    pkg['discriminator_shapes'] = {k: tuple(v.shape) for k, v in pkg['model'].items() if k not in keep}
    pkg['model'] = {k: v for k, v in pkg['model'].items() if k in keep}
    torch.save(pkg, args.out / 'soundstream.pt')
    wave = torch.sin(torch.linspace(0, 200, 1024))[None] * 0.5
    with torch.no_grad():
        codes = soundstream.tokenize(wave)
        outputs.update(soundstream_codes = codes, soundstream_recon = soundstream.decode_from_codebook_indices(codes))

    inputs = dict(semantic_ids = semantic_ids, coarse_ids = coarse_ids, fine_ids = fine_ids, wave = wave)
    torch.save(dict(inputs = inputs, outputs = outputs, configs = dict(semantic = SEMANTIC, coarse = COARSE,
                    fine = FINE, soundstream = SOUNDSTREAM), torch_version = str(torch.__version__)),
               args.out / 'outputs.pt')
    for path in sorted(args.out.glob('*.pt')):
        print(f'{path.name}: {path.stat().st_size / 1024:.0f} KiB')


if __name__ == '__main__':
    main()
