"""Same constructor, same model? Parameter counts of the constructors the reference READMEs use, built by this
package and by the established packages (audiolm-pytorch 2.4.0, soundstorm-pytorch 0.6.1, musiclm-pytorch 0.2.8).

    python benchmarks/param_parity.py [--ref-python /work/venv-ref/bin/python] [--only NAME ...]

Each side is built in its own subprocess (both packages are imported as ``audiolm_pytorch``): ours with this
checkout on ``PYTHONPATH``, the reference with the interpreter of a virtualenv where the three packages are
installed (fairseq is replaced by an empty stub and the T5 width is fixed at 768, so nothing is downloaded).
Prints one line per constructor: both counts (for SoundStream the generator only, discriminators apart) and
the relative difference. The counts recorded in tests/test_param_parity.py come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> constructor, exactly as the README / seed writes it (``.cuda()`` dropped). ``m`` is the model counted.
CASES = {
    'SoundStream(codebook_size=1024, rq_num_quantizers=8)':
        "from audiolm_pytorch import SoundStream\n"
        "m = SoundStream(codebook_size = 1024, rq_num_quantizers = 8)",
    'SoundStream(codebook_size=1024, rq_num_quantizers=12, attn_window_size=128, attn_depth=2)':
        "from audiolm_pytorch import SoundStream\n"
        "m = SoundStream(codebook_size = 1024, rq_num_quantizers = 12, attn_window_size = 128, attn_depth = 2)",
    'SemanticTransformer(num_semantic_tokens=500, dim=1024, depth=6, flash_attn=True)':
        "from audiolm_pytorch import SemanticTransformer\n"
        "m = SemanticTransformer(num_semantic_tokens = 500, dim = 1024, depth = 6, flash_attn = True)",
    'SemanticTransformer(num_semantic_tokens=500, dim=1024, depth=6)':
        "from audiolm_pytorch import SemanticTransformer\n"
        "m = SemanticTransformer(num_semantic_tokens = 500, dim = 1024, depth = 6)",
    'SemanticTransformer(..., dim=1024, depth=6, audio_text_condition=True)':
        "from audiolm_pytorch import SemanticTransformer\n"
        "m = SemanticTransformer(num_semantic_tokens = 500, dim = 1024, depth = 6, audio_text_condition = True)",
    'CoarseTransformer(num_semantic_tokens=500, codebook_size=1024, num_coarse_quantizers=3, dim=512, depth=6, flash_attn=True)':
        "from audiolm_pytorch import CoarseTransformer\n"
        "m = CoarseTransformer(num_semantic_tokens = 500, codebook_size = 1024, num_coarse_quantizers = 3, dim = 512,"
        " depth = 6, flash_attn = True)",
    'FineTransformer(num_coarse_quantizers=3, num_fine_quantizers=5, codebook_size=1024, dim=512, depth=6)':
        "from audiolm_pytorch import FineTransformer\n"
        "m = FineTransformer(num_coarse_quantizers = 3, num_fine_quantizers = 5, codebook_size = 1024, dim = 512,"
        " depth = 6)",
    'FineTransformer(..., dim=512, depth=6, flash_attn=True)':
        "from audiolm_pytorch import FineTransformer\n"
        "m = FineTransformer(num_coarse_quantizers = 3, num_fine_quantizers = 5, codebook_size = 1024, dim = 512,"
        " depth = 6, flash_attn = True)",
    'SoundStorm(ConformerWrapper(codebook_size=1024, num_quantizers=12, conformer=dict(dim=512, depth=2)))':
        "try:\n    from soundstorm_pytorch import SoundStorm, ConformerWrapper\n"
        "except ImportError:\n    from audiolm_pytorch import SoundStorm, ConformerWrapper\n"
        "conformer = ConformerWrapper(codebook_size = 1024, num_quantizers = 12, conformer = dict(dim = 512, depth = 2))\n"
        "m = SoundStorm(conformer, steps = 18, schedule = 'cosine')",
    'MuLaN(AudioSpectrogramTransformer(dim=512, depth=6, ...), TextTransformer(dim=512, depth=6, ...))':
        "try:\n    from musiclm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer\n"
        "except ImportError:\n    from audiolm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer\n"
        "audio = AudioSpectrogramTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64, spec_n_fft = 128,"
        " spec_win_length = 24, spec_aug_stretch_factor = 0.8)\n"
        "text = TextTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64)\n"
        "m = MuLaN(audio_transformer = audio, text_transformer = text)",
    'ConformerWrapper(codebook_size=1024, num_quantizers=12, conformer=dict(dim=512, depth=2)).conformer':
        "try:\n    from soundstorm_pytorch import ConformerWrapper\n"
        "except ImportError:\n    from audiolm_pytorch import ConformerWrapper\n"
        "m = ConformerWrapper(codebook_size = 1024, num_quantizers = 12, conformer = dict(dim = 512, depth = 2)).conformer",
    'AudioSpectrogramTransformer(dim=512, depth=6, heads=8, dim_head=64, spec_n_fft=128, ...)':
        "try:\n    from musiclm_pytorch import AudioSpectrogramTransformer\n"
        "except ImportError:\n    from audiolm_pytorch import AudioSpectrogramTransformer\n"
        "m = AudioSpectrogramTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64, spec_n_fft = 128,"
        " spec_win_length = 24, spec_aug_stretch_factor = 0.8)",
    'MuLaN(..., TextTransformer(dim=512, depth=6, heads=8, dim_head=64, num_tokens=49408))':
        "try:\n    from musiclm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer\n"
        "except ImportError:\n    from audiolm_pytorch import MuLaN, AudioSpectrogramTransformer, TextTransformer\n"
        "audio = AudioSpectrogramTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64, spec_n_fft = 128,"
        " spec_win_length = 24, spec_aug_stretch_factor = 0.8)\n"
        "text = TextTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64, num_tokens = 49408)\n"
        "m = MuLaN(audio_transformer = audio, text_transformer = text)",
}

WORKER = r'''
import json, sys
spec = json.loads(sys.stdin.read())
if spec['reference']:
    import audiolm_pytorch.audiolm_pytorch as reference_lm
    reference_lm.get_encoded_dim = lambda name: 768          # T5-base width, without downloading its config
import torch
torch.manual_seed(0)
out = {}
for name, code in spec['cases'].items():
    scope = {}
    try:
        exec(code, scope)
        m = scope['m']
        total = sum(p.numel() for p in m.parameters())
        if hasattr(m, 'non_discr_parameters'):               # SoundStream: the generator only
            total = sum(p.numel() for p in m.non_discr_parameters())
        out[name] = dict(params = total)
    except Exception as error:                               # a constructor one side refuses is a finding
        out[name] = dict(error = f'{type(error).__name__}: {str(error)[:160]}')
print('RESULT ' + json.dumps(out))
'''


def run_side(python: str, cases: dict, *, reference: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS = '1')
    with tempfile.TemporaryDirectory() as tmp:
        if reference:   # fairseq cannot be installed: an empty package satisfies the reference's import
            (Path(tmp) / 'fairseq').mkdir()
            (Path(tmp) / 'fairseq' / '__init__.py').write_text('')
            env['PYTHONPATH'] = tmp                           # never this checkout: same import name
        else:
            env['PYTHONPATH'] = str(ROOT)
        proc = subprocess.run([python, '-c', WORKER], input = json.dumps(dict(cases = cases, reference = reference)),
                              capture_output = True, text = True, env = env, cwd = tmp)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'{"reference" if reference else "our"} side failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def main():
    parser = argparse.ArgumentParser(description = __doc__.splitlines()[0])
    parser.add_argument('--ref-python', default = '/work/venv-ref/bin/python')
    parser.add_argument('--only', nargs = '*', help = 'substrings of the constructor names to run')
    parser.add_argument('--json', type = Path, help = 'also write the counts to this file')
    args = parser.parse_args()

    cases = {name: code for name, code in CASES.items()
             if not args.only or any(part in name for part in args.only)}
    ours = run_side(sys.executable, cases, reference = False)
    ref = run_side(args.ref_python, cases, reference = True)
    for name in cases:
        a, b = ours[name], ref[name]
        if 'params' in a and 'params' in b:
            diff = (a['params'] - b['params']) / b['params']
            verdict = 'within 1%' if abs(diff) <= 0.01 else 'DIFFERS'
            print(f'{name}: ours {a["params"]:,} | reference {b["params"]:,} | {diff:+.2%} {verdict}')
        else:
            print(f'{name}: ours {a.get("params", a.get("error"))} | reference {b.get("params", b.get("error"))}')
    if args.json:
        args.json.write_text(json.dumps(dict(ours = ours, reference = ref), indent = 2))


if __name__ == '__main__':
    main()
