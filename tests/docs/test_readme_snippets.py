"""Every ```python block of README.md, executed as written, in order, in one namespace (as a reader would).

The blocks are extracted from README.md at test time. Each is keyed by its first line (its first line that is not
``import torch``). Blocks that need files or weights the repository does not ship are skipped with a reason in
SKIP; when a later block uses a name such a block defines, STAND_INS provides a small substitute (e.g. a spectral
k-means tokenizer with HuBERT's 500 tokens and 320-sample hop in place of the HuBERT checkpoint). Placeholder paths
and illustrative full-size settings are changed in a test copy only, listed in EDITS with the reason. What the
README's comments claim about results (shapes) is checked in CLAIMS. A README block that is wrong is listed in
KNOWN_BROKEN: it must fail exactly that way (and the test fails once it is fixed, so the entry gets removed).

Budget: < 60 s on one CPU thread (the SoundStream block builds the full-size codec: ~8 s).
"""

import ast
import builtins
import contextlib
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import ASSETS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'


def _key(code: str) -> str:
    lines = (line.split('  #')[0].strip() for line in code.splitlines())   # trailing comments are not part of it
    return next(line for line in lines if line and line != 'import torch')


def extract_snippets(text: str) -> list[tuple[str, str]]:
    blocks = re.findall(r'^```python[ \t]*\n(.*?)^```', text, flags = re.S | re.M)
    return [(_key(code), code) for code in blocks]


SNIPPETS = extract_snippets(README.read_text(encoding = 'utf-8'))

# first line -> why it cannot run here
SKIP = {
    'trainer = SoundStreamTrainer(':
        'needs an audio folder at /path/to/audio/files and runs 1,000,000 steps (trainer tests cover it)',
    'from audiolm_pytorch import EncodecWrapper':
        'needs a local copy of the facebook/encodec_24khz weights in ./encodec',
    'from audiolm_pytorch import HubertWithKmeans':
        'needs the hubert_base_ls960 checkpoint and its k-means file',
    'from audiolm_pytorch import SemanticTransformerTrainer, CoarseTransformerTrainer, FineTransformerTrainer':
        'needs an audio folder at /path/to/audio/files and runs 1,000,000 steps (trainer tests cover it)',
    'from audiolm_pytorch import SemanticTransformerTrainer':
        'needs an audio folder at /path/to/audio/files and runs 1,000,000 steps (tests/test_tokens.py covers it)',
    'musiclm = MusicLM(audio_lm = audiolm, mulan_embed_quantizer = quantizer)':
        'needs the three transformers trained with audio_text_condition = True (as the README says) and '
        'generates 4 samples of 2048 semantic tokens (tests/test_musiclm.py covers MusicLM)',
}


def _hubert_stand_in(ns, workdir):
    """HuBERT-sized interface (500 tokens, 320-sample hop at 16 kHz) without the checkpoint."""
    import torch

    from audiolm_pytorch import SpectralKmeansTokenizer
    wav2vec = SpectralKmeansTokenizer(codebook_size = 500, target_sample_hz = 16000, frame_hz = 50)
    wav2vec.fit(torch.randn(4, 16000 * 4), input_sample_hz = 16000)
    assert (wav2vec.codebook_size, wav2vec.downsample_factor) == (500, 320)
    ns['wav2vec'] = wav2vec
    ns['HubertWithKmeans'] = __import__('audiolm_pytorch').HubertWithKmeans


# skipped first line -> defines the names later blocks use
STAND_INS = {
    'from audiolm_pytorch import HubertWithKmeans': _hubert_stand_in,
}

# first line -> [(text in the README block, replacement in the test copy, why)]; '{workdir}' = the test's folder
EDITS = {
    'from audiolm_pytorch import SoundDataset, TextAudioDataset, get_dataloader': [
        ("'/path/to/audio/files'", "'{workdir}/audio'", 'placeholder path: a folder of the shipped test clips'),
    ],
}

# first line -> [(expression evaluated after the block, expected value)]: the README comments' claims
CLAIMS = {
    'from audiolm_pytorch import load_audio, save_audio, resample, MelSpectrogram': [
        ('sample_hz', 16000), ('wave.ndim, wave.shape[0], str(wave.dtype)', (2, 1, 'torch.float32')),
        ('tuple(segment.shape)', (1, 24000)), ('stereo.shape[0]', 2),
        ('log_mel.shape[:2]', (1, 80)),
    ],
    'from audiolm_pytorch import SoundStream, SoundStreamTrainer': [
        ('loss.ndim', 0), ('tuple(recons.shape)', (2, 1, 9920)), ('tuple(codes.shape)', (2, 31, 8)),
        ('tuple(decoded.shape)', (2, 1, 9920)), ('isinstance(breakdown, (tuple, list, dict))', True),
    ],
    'from audiolm_pytorch import (': [
        ('ids.shape[0], ids.shape[1] <= 128', (2, True)), ('tuple(coarse_ids.shape)', (2, 64, 3)),
        ('tuple(wave.shape) if hasattr(wave, "shape") else [tuple(w.shape) for w in wave]', (2, 64 * 320)),
    ],
    'from audiolm_pytorch import AudioLM': [('generated.shape[0]', 1)],
    'from audiolm_pytorch import SoundDataset, TextAudioDataset, get_dataloader': [
        ('tuple(wave.shape)', (32000,)), ('tuple(batch.shape)', (8, 32000)), ('ds.skipped', []),
        ('isinstance(texts, list) and len(texts) == 4 and all(isinstance(t, str) for t in texts)', True),
        ('waves.shape[0]', 4),
    ],
    'from audiolm_pytorch import SoundStorm, ConformerWrapper': [
        ('loss.ndim', 0), ('tuple(generated.shape)', (2, 256, 12)),
        ('bool(((generated >= 0) & (generated < 1024)).all())', True),
    ],
    'from audiolm_pytorch import AudioSpectrogramTransformer, TextTransformer, MuLaN, MuLaNEmbedQuantizer, MusicLM': [
        ('loss.ndim', 0), ('tuple(audio_latents.shape)', (2, 128)),
        ('bool(torch.allclose(audio_latents.norm(dim = -1), torch.ones(2), atol = 1e-5))', True),
        ('tuple(conds.shape)', (2, 8, 64)),
    ],
    "soundstream.save('soundstream.pt')": [('type(model).__name__', 'SoundStream')],
}

# first line -> (exception the block raises as written, what is wrong): remove the entry once README is fixed
KNOWN_BROKEN = {}

# names a block reads that no block up to and including it defines, as the README stands
KNOWN_UNDEFINED = {}


# ---------------------------------------------------------------------------------------------------------------

def _make_workdir(workdir: Path):
    """The files the README blocks name, made from the shipped test clips."""
    shutil.copy(ASSETS / 'speech_0.flac', workdir / 'speech.flac')
    import numpy as np
    import soundfile
    speech = [soundfile.read(ASSETS / f'speech_{i}_24k.wav', dtype = 'float32')[0] for i in range(3)]
    soundfile.write(workdir / 'long.mp3', np.concatenate(speech), 24000, format = 'MP3')   # ~6 s
    shutil.copy(ASSETS / 'stereo_44k.wav', workdir / 'song.wav')
    audio = workdir / 'audio'
    (audio / 'nested').mkdir(parents = True)
    clips = sorted(ASSETS.glob('*_16k.wav'))
    for i, clip in enumerate(clips):
        shutil.copy(clip, (audio / 'nested' if i % 2 else audio) / clip.name)
    rows = ['path,text'] + [f'{ASSETS / name},a short clip number {i}' for i, name in enumerate(
        ('speech_0_24k.wav', 'music_0_24k.wav', 'speech_1_24k.wav', 'music_1_24k.wav'))]
    (workdir / 'captions.csv').write_text('\n'.join(rows) + '\n')


class _Reader:
    """Runs the blocks in order in one namespace, once each, remembering each block's exception."""

    def __init__(self, workdir: Path):
        self.workdir, self.ns, self.results = workdir, {'__name__': '__readme__'}, {}

    def run_through(self, index: int):
        for i in range(index + 1):
            if i not in self.results:
                self.results[i] = self._run(*SNIPPETS[i])
        return self.results[index]

    def _run(self, key, code):
        with contextlib.chdir(self.workdir):
            if key in SKIP:
                if key in STAND_INS:
                    STAND_INS[key](self.ns, self.workdir)
                return None
            for old, new, _ in EDITS.get(key, ()):
                code = code.replace(old, new.format(workdir = self.workdir))
            try:
                exec(compile(code, f'README.md block {key!r}', 'exec'), self.ns)
            except Exception as error:   # recorded, judged by the test of this block
                return error
            return None


@pytest.fixture(scope = 'module')
def reader(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('readme')
    _make_workdir(workdir)
    return _Reader(workdir)


# ---------------------------------------------------------------------------------------------------------------

def test_snippets_found_and_keys_unique():
    keys = [key for key, _ in SNIPPETS]
    assert len(keys) >= 10, 'README.md should have its usage blocks'
    assert len(set(keys)) == len(keys), f'two README blocks share a first line: {keys}'


@pytest.mark.parametrize('table', ['SKIP', 'STAND_INS', 'EDITS', 'CLAIMS', 'KNOWN_BROKEN', 'KNOWN_UNDEFINED'])
def test_tables_name_existing_blocks(table):
    """A README edit that renames a block must not silently turn a check off."""
    keys = {key for key, _ in SNIPPETS}
    stale = set(globals()[table]) - keys
    assert not stale, f'{table} names blocks no longer in README.md: {stale}'
    codes = dict(SNIPPETS)
    if table == 'EDITS':
        for key, edits in EDITS.items():
            for old, _, _ in edits:
                assert old in codes[key], f'EDITS: {old!r} is no longer in the block {key!r}'


def _names(code: str) -> tuple[set[str], set[str]]:
    loaded, stored = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        elif isinstance(node, ast.alias):
            stored.add((node.asname or node.name).split('.')[0])
    return loaded, stored


@pytest.mark.parametrize('index', range(len(SNIPPETS)), ids = [key[:60] for key, _ in SNIPPETS])
def test_snippet_names_defined(index):
    """Static check over all blocks, runnable here or not: a reader running them in order hits no NameError."""
    defined = set(dir(builtins))
    for _, code in SNIPPETS[:index + 1]:
        defined |= _names(code)[1]
    key, code = SNIPPETS[index]
    undefined = _names(code)[0] - defined
    known = KNOWN_UNDEFINED.get(key, set())
    if known:
        assert undefined == known, f'block {key!r}: undefined names {undefined}, expected the known {known}'
        pytest.xfail(f'README block reads undefined names {sorted(known)}')
    assert not undefined, f'README block {key!r} reads names no earlier block defines: {sorted(undefined)}'


@pytest.mark.parametrize('index', range(len(SNIPPETS)), ids = [key[:60] for key, _ in SNIPPETS])
def test_snippet_runs(index, reader):
    key, _ = SNIPPETS[index]
    if key in SKIP:
        reader.run_through(index)    # still provides its stand-ins to later blocks
        pytest.skip(SKIP[key])
    error = reader.run_through(index)
    if key in KNOWN_BROKEN:
        kind, what = KNOWN_BROKEN[key]
        assert error is not None, f'block {key!r} now runs: remove it from KNOWN_BROKEN ({what})'
        assert isinstance(error, kind), f'block {key!r}: expected the known {kind.__name__}, got {error!r}'
        check_claims(reader, key)   # what ran before the known failure still has to be right
        pytest.xfail(what)
    if error is not None:
        raise AssertionError(f'README block {key!r} failed: {error!r}') from error
    check_claims(reader, key)


def check_claims(reader, key):
    for expression, expected in CLAIMS.get(key, ()):
        got = eval(expression, reader.ns)
        assert got == expected, f'README block {key!r}: {expression} = {got!r}, the README says {expected!r}'
