"""Make the reference implementation (audiolm-pytorch 2.4.0 and friends, installed by ``benchmarks/reference_env.sh``)
importable on this machine, for side-by-side benchmarks.

The reference imports under the same name as this project (``audiolm_pytorch``), so it must run in its own
interpreter (``/work/venv-ref/bin/python``) whose ``sys.path`` does not contain this repository's root. Use it as::

    # inside the reference venv (e.g. a subprocess started with ``reference_command()`` / ``reference_env()``)
    import reference_shim
    ref = reference_shim.import_reference()          # the reference ``audiolm_pytorch`` module
    soundstream = ref.SoundStream(codebook_size = 256, ...)

What :func:`install` does (idempotent, nothing happens at import time):

- an empty ``fairseq`` package goes first on ``sys.path`` (the reference imports fairseq at module level; fairseq
  does not build on Python 3.11 and is only needed for its vq-wav2vec wrapper);
- ``torchaudio.load`` / ``torchaudio.save`` are routed through soundfile (torchaudio 2.11 wants torchcodec + FFmpeg);
- after import, ``audiolm_pytorch.audiolm_pytorch.get_encoded_dim`` returns 768 (its transformers ask the model
  hub for a T5 config otherwise), so nothing is downloaded.

From this project's interpreter, :func:`reference_command` gives the argv prefix and :func:`reference_env` the
environment for such a subprocess (``PYTHONPATH`` = this folder only). Stdlib-only at module level.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_REFERENCE_VENV = os.environ.get('REFERENCE_VENV', '/work/venv-ref')
T5_DIM = 768

_installed = False


def reference_python(venv: str | os.PathLike | None = None) -> Path:
    """The reference venv's interpreter; a clear error naming the set-up script when it is missing."""
    python = Path(venv or DEFAULT_REFERENCE_VENV) / 'bin' / 'python'
    if not python.exists():
        raise FileNotFoundError(f'no reference venv at {python.parent.parent}: create it with '
                                f'benchmarks/reference_env.sh {python.parent.parent} (or set REFERENCE_VENV)')
    return python


def reference_env(extra_paths = (), **overrides) -> dict:
    """Environment for a reference subprocess: ``PYTHONPATH`` holds this folder (and ``extra_paths``), never the
    repository root, whose ``audiolm_pytorch`` would shadow the reference's."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    paths = [str(HERE), *map(str, extra_paths)]
    if any(Path(p).resolve() == REPO_ROOT for p in paths):
        raise ValueError(f'{REPO_ROOT} must not be on the reference PYTHONPATH: it holds our audiolm_pytorch')
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def reference_command(script: str | os.PathLike, *args, venv = None) -> list[str]:
    """argv running ``script`` with the reference interpreter (``-I`` would drop PYTHONPATH, so plain ``-s``)."""
    return [str(reference_python(venv)), '-s', str(script), *map(str, args)]


def _fake_fairseq_dir() -> Path:
    root = Path(tempfile.gettempdir()) / f'reference-shim-fairseq-{os.getuid()}'
    package = root / 'fairseq'
    package.mkdir(parents = True, exist_ok = True)
    (package / '__init__.py').touch()
    return root


def _soundfile_load(path, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
                    channels_first: bool = True, format = None, **_):
    import soundfile as sf
    import torch
    wave, sample_hz = sf.read(str(path), start = frame_offset, frames = num_frames, dtype = 'float32',
                              always_2d = True)
    wave = torch.from_numpy(wave)                      # (n, c)
    return (wave.t().contiguous() if channels_first else wave), sample_hz


def _soundfile_save(path, src, sample_rate: int, channels_first: bool = True, format = None, **_):
    import soundfile as sf
    wave = src.detach().cpu().float()
    if wave.ndim == 1:
        wave = wave[None]
    wave = wave.t() if channels_first else wave        # (n, c)
    sf.write(str(path), wave.numpy(), sample_rate)


def install():
    """Put the empty fairseq first on ``sys.path`` and patch torchaudio's I/O (idempotent)."""
    global _installed
    if _installed:
        return
    root = str(_fake_fairseq_dir())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import torchaudio
    except ImportError:
        pass
    else:
        torchaudio.load = _soundfile_load
        torchaudio.save = _soundfile_save
    _installed = True


def import_reference(name: str = 'audiolm_pytorch'):
    """Import a reference package (``audiolm_pytorch``, ``soundstorm_pytorch``, ``musiclm_pytorch``) after
    :func:`install`; refuses to run when the imported ``audiolm_pytorch`` is this repository's."""
    import importlib
    install()
    module = importlib.import_module(name)
    audiolm = importlib.import_module('audiolm_pytorch')
    if Path(audiolm.__file__).resolve().is_relative_to(REPO_ROOT):
        raise RuntimeError(f'imported this repository\'s audiolm_pytorch ({audiolm.__file__}), not the reference: '
                           'run under the reference venv with reference_env() (PYTHONPATH without the repo root)')
    importlib.import_module('audiolm_pytorch.audiolm_pytorch').get_encoded_dim = lambda name: T5_DIM
    return module
