"""Shared pieces of the example scripts: the shipped clips, tiny model configs, and "train it quickly if the
previous example's checkpoint is not there yet" helpers, so that every example also runs on its own.

The sizes here are for a CPU and a few minutes; scale ``dim`` / ``depth`` / ``channels`` and the step counts up
for real training (see ``examples/configs/*.yaml``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

import audiolm_pytorch
# the tiny model sizes live in the package, beside `audiolm demo`'s config that uses them
from audiolm_pytorch.demo_config import (NUM_COARSE, NUM_FINE, TINY_SOUNDSTREAM,  # noqa: F401 (used by the examples)
                                         TINY_SOUNDSTREAM_TRAINER, TINY_TRANSFORMER)

ASSETS = Path(audiolm_pytorch.__file__).parent / 'assets'
CLIPS = ('speech_0_16k.wav', 'speech_1_16k.wav', 'music_0_16k.wav', 'music_2_16k.wav')

# trainer settings for short runs: no validation split (four clips), results only at the end
QUICK = dict(valid_frac = 0., save_results_every = 10 ** 9, save_model_every = 10 ** 9, force_clear_prev_results = True)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description = description)
    p.add_argument('--out', default = 'examples_out', help = 'folder for checkpoints and audio (default: examples_out)')
    p.add_argument('--data', default = None, help = 'folder of audio (default: the clips shipped with the package)')
    p.add_argument('--steps', type = int, default = None, help = 'training steps (default: per example)')
    return p


def parse_local_model_args(p: argparse.ArgumentParser, *, steps: int = 20):
    """Parse the command line of a local-model example (``--steps`` defaults to ``steps``), seed torch and
    return ``(args, out, data)``."""
    p.set_defaults(steps = steps)
    args = p.parse_args()
    torch.manual_seed(0)
    return args, Path(args.out), data_folder(args)


_scratch: list[tempfile.TemporaryDirectory] = []   # kept alive until the example exits


def model_dir_or_tiny(given: str | None, make_tiny: Callable[[Path], Path], *, flag: str, what: str,
                      caveat: str) -> Path:
    """``given`` (a local model path), or, for an offline smoke run, the folder where ``make_tiny(folder)``
    wrote a tiny random model (a temporary folder removed when the example exits)."""
    if given:
        return Path(given)
    if not _scratch:
        _scratch.append(tempfile.TemporaryDirectory())
    folder = make_tiny(Path(_scratch[0].name) / f'tiny_{flag}')
    print(f'no --{flag} given: using a tiny random {what} saved to {folder} ({caveat})')
    return folder


def data_folder(args) -> Path:
    """``--data``, or a copy of the shipped 16 kHz clips under ``OUT/data``."""
    if args.data:
        return Path(args.data)
    folder = Path(args.out) / 'data'
    folder.mkdir(parents = True, exist_ok = True)
    for name in CLIPS:
        if not (folder / name).exists():
            shutil.copyfile(ASSETS / name, folder / name)
    return folder


def train_soundstream(out: Path, data: Path, steps: int):
    from audiolm_pytorch import SoundStream, SoundStreamTrainer
    soundstream = SoundStream(**TINY_SOUNDSTREAM)
    trainer = SoundStreamTrainer(soundstream, folder = data, num_train_steps = steps,
                                 results_folder = out / 'results' / 'soundstream', **TINY_SOUNDSTREAM_TRAINER, **QUICK)
    trainer.train()
    soundstream.save(out / 'soundstream.pt')
    return soundstream.eval()


def load_or_train_soundstream(out: Path, data: Path, steps: int = 30):
    from audiolm_pytorch import SoundStream
    path = out / 'soundstream.pt'
    if path.exists():
        return SoundStream.init_and_load_from(path).eval()
    print(f'{path} not found (run examples/train_soundstream.py for a better codec): training one for {steps} steps')
    return train_soundstream(out, data, steps)


def load_or_fit_tokenizer(out: Path, data: Path, codebook_size: int = 32):
    """A spectral k-means semantic tokenizer (no pretrained model needed), fitted in seconds."""
    from audiolm_pytorch import SpectralKmeansTokenizer
    path = out / 'tokenizer.pt'
    if path.exists():
        return SpectralKmeansTokenizer.init_and_load_from(path).eval()
    tokenizer = SpectralKmeansTokenizer(codebook_size = codebook_size, n_mels = 32)
    inertia, frames = tokenizer.fit(data)
    tokenizer.save(path)
    print(f'fitted a {codebook_size}-cluster spectral tokenizer on {frames} frames (inertia {inertia:.3f}) -> {path}')
    return tokenizer.eval()


def prompt(sample_hz: int = 16000, seconds: float = 1.) -> torch.Tensor:
    """The first ``seconds`` of a shipped speech clip, ``(1, n)``."""
    from audiolm_pytorch import load_audio
    return load_audio(ASSETS / 'speech_1_16k.wav', target_sample_hz = sample_hz).wave[:, :int(seconds * sample_hz)]


def first_wave(output) -> torch.Tensor:
    """The first generated wave, 1-D on the CPU (wrappers return a batch tensor or a list of 1-D waves)."""
    wave = output[0] if isinstance(output, (list, tuple)) else output.reshape(output.shape[0], -1)[0]
    return wave.detach().float().cpu().reshape(-1)
