#!/usr/bin/env python3
"""Render the codec quality benchmark's corpus: synthetic speech and music, 16 kHz mono, split into
``train/`` and ``heldout/`` with nothing shared between them.

    python scripts/make_codec_corpus.py [--out /work/data/codec_corpus]

What it makes (deterministic given the tool versions):

- speech: sentences written for this corpus, spoken by ``espeak-ng`` with several voices / variants, speeds and
  pitches; trimmed of silence, 1-4 s.
  train: 12 sentences x 3 voices (drawn from 6 training voices) = 36 clips;
  heldout: 6 *other* sentences, each by one of 3 voices *not used in training* = 6 clips.
- music: seeded melodic phrases with a bass line written as standard MIDI files (the tiny writer in
  ``scripts/make_test_audio.py``), rendered by ``fluidsynth`` with the General MIDI soundfont, 2-4 s.
  train: 24 phrases over 6 instruments (seed A); heldout: 6 phrases from another seed (seed B), two of them on
  instruments not in training.

The clips are *not* the ones in ``tests/assets`` (different sentences, voices and seeds) and the data is not
committed: only this script is. The benchmark (``benchmarks/quality.py``) trains on ``train/`` and evaluates on
``heldout/``. Requirements: ``apt-get install -y espeak-ng fluidsynth fluid-soundfont-gm``; numpy, scipy, soundfile.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_test_audio import (SOUNDFONT_CANDIDATES, fade, normalize, render_speech, to_rate,  # noqa: E402
                             trim_silence, write_midi)

SAMPLE_HZ = 16000
TRAIN_SEED, HELDOUT_SEED = 20261, 90417

TRAIN_SENTENCES = (
    'Morning light crept slowly across the kitchen floor.',
    'The harbour was quiet except for a single fishing boat.',
    'She counted nine pennies and a button in her pocket.',
    'Thunder rolled over the hills long before the rain arrived.',
    'Our neighbour grows tomatoes that taste like summer.',
    'Turn left at the bakery and walk until you see the bridge.',
    'He whistled a tune nobody had heard in years.',
    'A paper kite tangled itself in the tallest oak.',
    'Would you mind closing the window before you leave?',
    'The library smells of dust, glue and old leather.',
    'Forty sheep wandered through the open gate at dawn.',
    'Bright copper kettles hung above the iron stove.',
)

HELDOUT_SENTENCES = (
    'The violinist tuned her strings while the audience whispered.',
    'Can you hear the train approaching from the valley?',
    'Yellow leaves drifted down onto the empty playground.',
    'My grandfather repaired watches in a tiny shop downtown.',
    'Fresh snow muffled every footstep on the mountain path.',
    'We shared warm bread and soup beside the fire.',
)

# (voice+variant, words per minute, pitch)
TRAIN_VOICES = (
    ('en-us+m1', 160, 45),
    ('en-gb+f2', 175, 62),
    ('en-gb-scotland+m4', 150, 38),
    ('en-029+f1', 170, 70),
    ('en-gb-x-rp+m2', 185, 50),
    ('en-us-nyc+f3', 165, 58),
)
HELDOUT_VOICES = (
    ('en-gb-x-gbclan+m6', 170, 42),
    ('en-us+f5', 160, 66),
    ('en-gb-x-gbcwmd+m7', 180, 52),
)

# (General MIDI program (0-based), base note, tempo bpm)
TRAIN_INSTRUMENTS = (
    (0, 60, 110),    # acoustic grand piano
    (24, 57, 96),    # nylon guitar
    (40, 67, 84),    # violin
    (73, 72, 118),   # flute
    (11, 64, 104),   # vibraphone
    (56, 62, 100),   # trumpet
)
HELDOUT_INSTRUMENTS = (
    (0, 62, 100),    # piano (seen instrument, unseen phrase)
    (40, 64, 92),    # violin
    (73, 69, 112),   # flute
    (24, 55, 90),    # nylon guitar
    (68, 65, 96),    # oboe (not in training)
    (46, 60, 108),   # orchestral harp (not in training)
)

SPEECH_SECONDS = (1.0, 4.0)


def phrase_with_bass(rng: np.random.Generator, base_note: int, beats: int, ticks_per_beat: int = 480):
    """A melody on a major or minor pentatonic scale plus a bass note on every beat pair."""
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16]) if rng.random() < 0.5 else np.array([0, 3, 5, 7, 10, 12, 15, 17])
    durations = np.array([ticks_per_beat // 4, ticks_per_beat // 2, ticks_per_beat // 2, ticks_per_beat,
                          ticks_per_beat // 4 * 3])
    notes, tick, degree = [], 0, int(rng.integers(0, 5))
    while tick < beats * ticks_per_beat:
        duration = int(rng.choice(durations))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(scale) - 1))
        notes.append((tick, duration, base_note + int(scale[degree]), int(rng.integers(65, 115))))
        tick += duration
    for beat in range(0, beats, 2):
        root = base_note - 12 + int(scale[rng.integers(0, 4)])
        notes.append((beat * ticks_per_beat, 2 * ticks_per_beat, root, 55))
    return notes


def render_phrase(program: int, base_note: int, tempo: int, rng: np.random.Generator, soundfont: str,
                  workdir: Path, seconds: float, render_hz: int = 44100):
    import subprocess
    midi, out = workdir / 'phrase.mid', workdir / 'music.wav'
    beats = int(np.ceil(seconds * tempo / 60)) + 1
    write_midi(midi, phrase_with_bass(rng, base_note, beats), program = program, tempo_bpm = tempo)
    subprocess.run(['fluidsynth', '-ni', '-q', '-R', '0', '-C', '0', '-g', '0.8', '-r', str(render_hz),
                    '-F', str(out), soundfont, str(midi)], check = True, stdout = subprocess.DEVNULL)
    wave, read_hz = sf.read(str(out), dtype = 'float64', always_2d = True)
    wave = trim_silence(wave.mean(axis = 1), read_hz)[: int(seconds * read_hz)]
    return fade(normalize(wave), read_hz), read_hz


def save(path: Path, wave: np.ndarray, sample_hz: int):
    wave = np.clip(to_rate(wave, sample_hz, SAMPLE_HZ), -1., 1.)
    sf.write(str(path), wave, SAMPLE_HZ, subtype = 'PCM_16')
    return wave.shape[-1] / SAMPLE_HZ


def main(argv = None):
    parser = argparse.ArgumentParser(description = __doc__.split('\n\n')[0])
    parser.add_argument('--out', type = Path, default = Path('/work/data/codec_corpus'))
    args = parser.parse_args(argv)

    for tool in ('espeak-ng', 'fluidsynth'):
        if shutil.which(tool) is None:
            raise SystemExit(f'{tool} not found: apt-get install -y espeak-ng fluidsynth fluid-soundfont-gm')
    soundfont = next((p for p in SOUNDFONT_CANDIDATES if Path(p).is_file()), None)
    if soundfont is None:
        raise SystemExit('no General MIDI soundfont found: apt-get install -y fluid-soundfont-gm')
    assert not set(TRAIN_SENTENCES) & set(HELDOUT_SENTENCES)
    assert not {v for v, *_ in TRAIN_VOICES} & {v for v, *_ in HELDOUT_VOICES}

    train_dir, heldout_dir = args.out / 'train', args.out / 'heldout'
    for split in (train_dir, heldout_dir):
        split.mkdir(parents = True, exist_ok = True)
        for old in split.glob('*.wav'):
            old.unlink()

    totals = {'train': 0., 'heldout': 0.}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for i, text in enumerate(TRAIN_SENTENCES):
            for k in range(3):
                voice, wpm, pitch = TRAIN_VOICES[(i + 2 * k) % len(TRAIN_VOICES)]
                wave, hz = render_speech(voice, wpm, pitch, text, workdir)
                wave = wave[: int(SPEECH_SECONDS[1] * hz)]
                totals['train'] += save(train_dir / f'speech_{i:02d}_{k}.wav', wave, hz)
        for i, text in enumerate(HELDOUT_SENTENCES):
            voice, wpm, pitch = HELDOUT_VOICES[i % len(HELDOUT_VOICES)]
            wave, hz = render_speech(voice, wpm, pitch, text, workdir)
            wave = wave[: int(SPEECH_SECONDS[1] * hz)]
            totals['heldout'] += save(heldout_dir / f'speech_{i:02d}.wav', wave, hz)

        rng = np.random.default_rng(TRAIN_SEED)
        for i in range(24):
            program, note, tempo = TRAIN_INSTRUMENTS[i % len(TRAIN_INSTRUMENTS)]
            seconds = float(rng.uniform(2., 4.))
            wave, hz = render_phrase(program, note + int(rng.integers(-3, 4)), tempo, rng, soundfont, workdir, seconds)
            totals['train'] += save(train_dir / f'music_{i:02d}.wav', wave, hz)
        rng = np.random.default_rng(HELDOUT_SEED)
        for i, (program, note, tempo) in enumerate(HELDOUT_INSTRUMENTS):
            seconds = float(rng.uniform(2., 4.))
            wave, hz = render_phrase(program, note, tempo, rng, soundfont, workdir, seconds)
            totals['heldout'] += save(heldout_dir / f'music_{i:02d}.wav', wave, hz)

    for name, split in (('train', train_dir), ('heldout', heldout_dir)):
        print(f'{name}: {len(list(split.glob("*.wav")))} clips, {totals[name]:.1f} s in {split}')


if __name__ == '__main__':
    main()
