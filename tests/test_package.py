"""Packaging: a fast, side-effect-free import; lazy public names; the compatibility module; package data.

Import behaviour is measured in fresh subprocesses so that other tests' imports cannot hide anything.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import audiolm_pytorch

ROOT = Path(__file__).resolve().parent.parent

_STATE = """
import json, logging, sys, time, warnings
def state():
    root = logging.getLogger()
    return dict(filters = [repr(f) for f in warnings.filters], root_level = root.level,
                root_handlers = [repr(h) for h in root.handlers], showwarning = repr(warnings.showwarning),
                disabled = logging.root.manager.disable)
"""

_IMPORT_ONLY = _STATE + """
before = state()
start = time.perf_counter()
import audiolm_pytorch
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds = seconds, before = before, after = state(), version = audiolm_pytorch.__version__,
                      heavy = sorted(m for m in ('torchaudio', 'fairseq') if m in sys.modules),
                      torch_loaded = 'torch' in sys.modules)))
"""

_IMPORT_NAMES = """
import importlib.util, json, logging, sys, warnings

# Third-party libraries (torch among them) install their own warning filters when first imported, so instead of
# diffing global state, record every call that changes it and report the ones made from this package's files.
calls = []
def spy(owner, name):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        caller = sys._getframe(1).f_code.co_filename
        if '/audiolm_pytorch/' in caller.replace('\\\\', '/'):
            target = getattr(args[0], 'name', '') if owner is logging.Logger else ''
            calls.append(f'{name}({target}) from {caller}')
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)
for name in ('filterwarnings', 'simplefilter', 'resetwarnings'):
    spy(warnings, name)
for name in ('basicConfig', 'disable', 'captureWarnings'):
    spy(logging, name)
spy(logging.Logger, 'setLevel')
warn, showwarning, root_level = warnings.warn, warnings.showwarning, logging.getLogger().level

import audiolm_pytorch
resolved, errors = {}, {}
for name, module in audiolm_pytorch._PUBLIC_NAMES.items():
    try:                                          # every public name's module exists and imports
        from audiolm_pytorch import audiolm_pytorch as compat
        resolved[name] = getattr(compat, name) is getattr(audiolm_pytorch, name)
    except Exception as error:
        errors[name] = f'{type(error).__name__}: {error}'
patched = [n for n, ok in (('warnings.warn', warnings.warn is warn), ('warnings.showwarning', warnings.showwarning is
           showwarning), ('root logging level', logging.getLogger().level == root_level)) if not ok]
print(json.dumps(dict(calls = calls, patched = patched, resolved = resolved, errors = errors,
                      heavy = sorted(m for m in ('torchaudio', 'fairseq') if m in sys.modules),
                      torch_loaded = 'torch' in sys.modules)))
"""


def run_python(code: str) -> dict:
    result = subprocess.run([sys.executable, '-c', code], capture_output = True, text = True, cwd = ROOT,
                            timeout = 240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_is_fast_and_has_no_side_effects():
    report = run_python(_IMPORT_ONLY)
    assert not report['torch_loaded']              # the lazy public API: importing the package loads no torch
    assert report['heavy'] == []
    assert report['after'] == report['before']      # warnings filters, showwarning, logging level/handlers
    assert report['version'] == audiolm_pytorch.__version__


def test_public_names_resolve_without_side_effects():
    report = run_python(_IMPORT_NAMES)
    assert report['errors'] == {}                    # every public name imports
    assert report['heavy'] == []                     # no torchaudio, no fairseq, even with every module loaded
    assert report['calls'] == [] and report['patched'] == []   # no module of ours touches warnings / logging
    # the compatibility module `audiolm_pytorch.audiolm_pytorch` re-exports the very same objects
    assert report['resolved'] and all(report['resolved'].values()), report['resolved']
    for name in ('load_audio', 'save_audio', 'resample', 'MelSpectrogram', 'SoundDataset', 'get_dataloader',
                 'TextAudioDataset'):
        assert report['resolved'].get(name) is True


def test_seed_style_compat_import():
    from audiolm_pytorch.audiolm_pytorch import SoundStream
    assert SoundStream is audiolm_pytorch.SoundStream


def test_lazy_namespace():
    assert set(audiolm_pytorch._PUBLIC_NAMES) <= set(dir(audiolm_pytorch))
    assert set(audiolm_pytorch.__all__) == {'__version__', *audiolm_pytorch._PUBLIC_NAMES}
    with pytest.raises(AttributeError):
        audiolm_pytorch.NoSuchThing
    with pytest.raises(ImportError):
        exec('from audiolm_pytorch.audiolm_pytorch import NoSuchThing', {})
    from audiolm_pytorch import SoundDataset, load_audio
    assert SoundDataset.__module__ == 'audiolm_pytorch.data' and load_audio.__module__ == 'audiolm_pytorch.audio'


def test_packaged_demo_clips_load():
    from audiolm_pytorch.audio import load_audio
    assets = Path(audiolm_pytorch.__file__).parent / 'assets'
    clips = sorted(assets.glob('*.wav'))
    assert {p.name for p in clips} >= {'speech_0_16k.wav', 'speech_0_24k.wav', 'music_0_16k.wav', 'music_0_24k.wav'}
    assert sum(p.stat().st_size for p in clips) < 1.5 * 1024 * 1024
    for path in clips:
        wave, hz = load_audio(path)
        assert hz == (16000 if path.stem.endswith('16k') else 24000) and wave.shape[-1] > hz   # > 1 s each


def test_test_audio_corpus_stays_small(assets_dir):
    corpus = [p for p in assets_dir.iterdir() if p.suffix in ('.wav', '.flac', '.ogg', '.mp3')]
    assert sum(p.stat().st_size for p in corpus) < 3 * 1024 * 1024
    for kind, count in (('speech', 6), ('music', 4)):
        for i in range(count):
            for rate in ('16k', '24k'):
                assert (assets_dir / f'{kind}_{i}_{rate}.wav').is_file()


def test_setup_declares_no_torchaudio_or_fairseq():
    setup = (ROOT / 'setup.py').read_text()
    assert 'torchaudio' not in setup and 'fairseq' not in setup
    # the demo's clips are package data of audiolm_pytorch.assets
    assert "'audiolm_pytorch.assets': ['*.wav'" in setup
    from importlib.resources import files
    assert len([p for p in files('audiolm_pytorch.assets').iterdir() if p.name.endswith('.wav')]) >= 4
