#!/usr/bin/env python3
"""Render the small real audio corpus used by the tests (``tests/assets/``) and shipped as package data
(``audiolm_pytorch/assets/``).

What it makes (all deterministic: fixed sentences, voices and a seeded MIDI generator):

- ``speech_{i}_16k.wav`` / ``speech_{i}_24k.wav`` (i = 0..5): English sentences spoken by ``espeak-ng`` with
  different voices / speeds / pitches, trimmed of leading/trailing silence and capped at 3 s.
- ``music_{i}_16k.wav`` / ``music_{i}_24k.wav`` (i = 0..3): short random-but-seeded melodic phrases written as a
  standard MIDI file by the tiny writer below, rendered by ``fluidsynth`` with the General MIDI soundfont
  (piano, nylon guitar, violin, flute ...), 2.5 s each.
- format test files: ``stereo_44k.wav`` (44.1 kHz, 2 channels, PCM_16), ``speech_0.flac`` (24 kHz),
  ``music_0.ogg`` (24 kHz, Vorbis) and ``speech_1.mp3`` (24 kHz, MPEG layer III through libsndfile >= 1.1).

All wav outputs are mono PCM_16 unless noted. Rate conversion uses ``scipy.signal.resample_poly`` with a
Kaiser (beta 10) window.

Requirements (only to *re-render*; the tests never need them)::

    apt-get install -y espeak-ng fluidsynth fluid-soundfont-gm
    pip install numpy scipy soundfile

Usage::

    python scripts/make_test_audio.py                # writes tests/assets and audiolm_pytorch/assets
    python scripts/make_test_audio.py --out /tmp/x   # somewhere else (package assets are then skipped)

Re-running gives byte-identical files (except ``music_0.ogg``: libvorbis picks the Ogg stream serial number at
random; its decoded samples are identical) given the same tool versions: rendered with espeak-ng 1.51,
FluidSynth 2.3.1, fluid-soundfont-gm 3.1 and libsndfile 1.2.2.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parent.parent
SEED = 1234
RATES = (16000, 24000)

SOUNDFONT_CANDIDATES = (
    '/usr/share/sounds/sf2/FluidR3_GM.sf2',
    '/usr/share/sounds/sf2/default-GM.sf2',
)

# (voice, words per minute, pitch 0-99, sentence)
SPEECH = (
    ('en-us', 165, 50, 'The quick brown fox jumps over the lazy dog.'),
    ('en-gb+f3', 170, 60, 'A small river runs past the old stone mill.'),
    ('en-us+m3', 180, 40, 'Please bring the red umbrella tomorrow morning.'),
    ('en-gb-scotland+f2', 160, 55, 'Seven green birds sang on the wire.'),
    ('en-us+f4', 175, 70, 'Listen carefully, then answer the question.'),
    ('en-029+m2', 165, 45, 'Every clock in the house stopped at noon.'),
)

# (General MIDI program number (0-based), base note, tempo in bpm)
MUSIC = (
    (0, 60, 120),    # acoustic grand piano
    (24, 55, 100),   # nylon string guitar
    (40, 67, 90),    # violin
    (73, 72, 110),   # flute
)

SPEECH_MAX_SECONDS = 3.0
MUSIC_SECONDS = 2.5
PACKAGE_ASSETS = ('speech_0', 'speech_1', 'music_0', 'music_2')


# ----------------------------------------------------------------------------------------------------------
# a tiny standard MIDI file (SMF type 0) writer
# ----------------------------------------------------------------------------------------------------------

def _varlen(value: int) -> bytes:
    """MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last byte."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, notes: list[tuple[int, int, int, int]], program: int, tempo_bpm: int, ticks_per_beat: int = 480):
    """Write ``notes`` = [(start_tick, duration_ticks, pitch, velocity)] on channel 0 as an SMF type 0 file."""
    events = []  # (tick, order, bytes): note-offs sort before note-ons at the same tick
    for start, duration, pitch, velocity in notes:
        events.append((start, 1, bytes([0x90, pitch, velocity])))
        events.append((start + duration, 0, bytes([0x80, pitch, 0])))
    events.sort(key = lambda e: (e[0], e[1]))

    microseconds_per_beat = int(round(60_000_000 / tempo_bpm))
    track = bytearray()
    track += _varlen(0) + b'\xff\x51\x03' + microseconds_per_beat.to_bytes(3, 'big')   # tempo
    track += _varlen(0) + bytes([0xC0, program])                                     # program change
    now = 0
    for tick, _, message in events:
        track += _varlen(tick - now) + message
        now = tick
    track += _varlen(ticks_per_beat) + b'\xff\x2f\x00'                               # end of track

    header = b'MThd' + struct.pack('>IHHH', 6, 0, 1, ticks_per_beat)
    path.write_bytes(header + b'MTrk' + struct.pack('>I', len(track)) + bytes(track))


def random_phrase(rng: np.random.Generator, base_note: int, ticks_per_beat: int = 480, beats: int = 5):
    """A seeded melodic phrase on a major pentatonic scale, sometimes with a held chord tone underneath."""
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    durations = np.array([ticks_per_beat // 2, ticks_per_beat // 2, ticks_per_beat, ticks_per_beat // 4 * 3])
    notes, tick, degree = [], 0, int(rng.integers(0, 4))
    while tick < beats * ticks_per_beat:
        duration = int(rng.choice(durations))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(scale) - 1))
        notes.append((tick, duration, base_note + int(scale[degree]), int(rng.integers(70, 110))))
        if rng.random() < 0.3:
            notes.append((tick, duration * 2, base_note - 12 + int(scale[rng.integers(0, 4)]), 60))
        tick += duration
    return notes


# ----------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------

def to_rate(wave: np.ndarray, orig_hz: int, new_hz: int) -> np.ndarray:
    """Resample along the last axis with a high-quality polyphase filter."""
    if orig_hz == new_hz:
        return wave
    ratio = Fraction(new_hz, orig_hz)
    return resample_poly(wave, ratio.numerator, ratio.denominator, axis = -1, window = ('kaiser', 10.0))


def trim_silence(wave: np.ndarray, sample_hz: int, threshold: float = 1e-3, pad_seconds: float = 0.05) -> np.ndarray:
    loud = np.flatnonzero(np.abs(wave) > threshold)
    if loud.size == 0:
        return wave
    pad = int(pad_seconds * sample_hz)
    return wave[max(loud[0] - pad, 0): loud[-1] + pad]


def normalize(wave: np.ndarray, peak: float = 0.8) -> np.ndarray:
    return wave * (peak / max(np.abs(wave).max(), 1e-9))


def fade(wave: np.ndarray, sample_hz: int, seconds: float = 0.02) -> np.ndarray:
    n = min(int(seconds * sample_hz), wave.shape[-1] // 2)
    ramp = np.linspace(0., 1., n)
    wave = wave.copy()
    wave[..., :n] *= ramp
    wave[..., -n:] *= ramp[::-1]
    return wave


def render_speech(voice: str, wpm: int, pitch: int, text: str, workdir: Path):
    out = workdir / 'speech.wav'
    subprocess.run(['espeak-ng', '-v', voice, '-s', str(wpm), '-p', str(pitch), '-w', str(out), text], check = True)
    wave, sample_hz = sf.read(str(out), dtype = 'float64', always_2d = True)
    wave = trim_silence(wave.mean(axis = 1), sample_hz)
    wave = wave[: int(SPEECH_MAX_SECONDS * sample_hz)]
    return fade(normalize(wave), sample_hz), sample_hz


def render_music(program: int, base_note: int, tempo: int, rng: np.random.Generator, soundfont: str, workdir: Path,
                 channels: int = 1, sample_hz: int = 44100):
    midi, out = workdir / 'phrase.mid', workdir / 'music.wav'
    write_midi(midi, random_phrase(rng, base_note), program = program, tempo_bpm = tempo)
    # -R 0 -C 0: no reverb / chorus; fluidsynth renders deterministically offline with -F
    subprocess.run(['fluidsynth', '-ni', '-q', '-R', '0', '-C', '0', '-g', '0.8', '-r', str(sample_hz),
                    '-F', str(out), soundfont, str(midi)], check = True, stdout = subprocess.DEVNULL)
    wave, read_hz = sf.read(str(out), dtype = 'float64', always_2d = True)
    wave = wave.T                                      # (2, n)
    wave = trim_silence(wave.mean(axis = 0), read_hz)[None] if channels == 1 else wave
    wave = wave[..., : int(MUSIC_SECONDS * read_hz)]
    return fade(normalize(wave), read_hz), read_hz


def write(path: Path, wave: np.ndarray, sample_hz: int, **kwargs):
    wave = np.clip(np.atleast_2d(wave), -1., 1.).T
    sf.write(str(path), wave, sample_hz, **kwargs)
    print(f'  {path.relative_to(path.parent.parent)}  {wave.shape[0] / sample_hz:.2f}s  {path.stat().st_size / 1024:.0f} KiB')


def main():
    parser = argparse.ArgumentParser(description = __doc__.split('\n\n')[0])
    parser.add_argument('--out', type = Path, default = ROOT / 'tests' / 'assets')
    args = parser.parse_args()

    for tool in ('espeak-ng', 'fluidsynth'):
        if shutil.which(tool) is None:
            raise SystemExit(f'{tool} not found: apt-get install -y espeak-ng fluidsynth fluid-soundfont-gm')
    soundfont = next((p for p in SOUNDFONT_CANDIDATES if Path(p).is_file()), None)
    if soundfont is None:
        raise SystemExit('no General MIDI soundfont found: apt-get install -y fluid-soundfont-gm')

    out = args.out
    out.mkdir(parents = True, exist_ok = True)
    rng = np.random.default_rng(SEED)
    rendered = {}

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print('speech (espeak-ng):')
        for i, (voice, wpm, pitch, text) in enumerate(SPEECH):
            wave, sample_hz = render_speech(voice, wpm, pitch, text, workdir)
            rendered[f'speech_{i}'] = (wave, sample_hz)
            for rate in RATES:
                write(out / f'speech_{i}_{rate // 1000}k.wav', to_rate(wave, sample_hz, rate), rate, subtype = 'PCM_16')

        print('music (fluidsynth, General MIDI):')
        for i, (program, base_note, tempo) in enumerate(MUSIC):
            wave, sample_hz = render_music(program, base_note, tempo, rng, soundfont, workdir)
            rendered[f'music_{i}'] = (wave[0], sample_hz)
            for rate in RATES:
                write(out / f'music_{i}_{rate // 1000}k.wav', to_rate(wave[0], sample_hz, rate), rate, subtype = 'PCM_16')

        print('format test files:')
        stereo, stereo_hz = render_music(0, 64, 140, rng, soundfont, workdir, channels = 2)
        stereo = stereo[:, : stereo_hz]                # 1 s of 44.1 kHz stereo piano
        write(out / 'stereo_44k.wav', stereo, stereo_hz, subtype = 'PCM_16')

        speech_0, speech_hz = rendered['speech_0']
        write(out / 'speech_0.flac', to_rate(speech_0, speech_hz, 24000), 24000, subtype = 'PCM_16')
        music_0, music_hz = rendered['music_0']
        write(out / 'music_0.ogg', to_rate(music_0, music_hz, 24000), 24000, format = 'OGG', subtype = 'VORBIS')
        speech_1, speech_hz = rendered['speech_1']
        try:
            write(out / 'speech_1.mp3', to_rate(speech_1, speech_hz, 24000), 24000, format = 'MP3',
                  subtype = 'MPEG_LAYER_III')
        except (sf.LibsndfileError, TypeError, ValueError) as error:  # libsndfile < 1.1 has no mp3 encoder
            print(f'  skipping mp3 (this libsndfile cannot write it: {error})')

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f'total {total / 1024 / 1024:.2f} MiB in {out}')

    if out.resolve() == (ROOT / 'tests' / 'assets').resolve():
        package_assets = ROOT / 'audiolm_pytorch' / 'assets'
        package_assets.mkdir(exist_ok = True)
        for stem in PACKAGE_ASSETS:
            for rate in RATES:
                name = f'{stem}_{rate // 1000}k.wav'
                shutil.copyfile(out / name, package_assets / name)
        size = sum(p.stat().st_size for p in package_assets.glob('*.wav'))
        print(f'copied {len(PACKAGE_ASSETS) * len(RATES)} clips ({size / 1024:.0f} KiB) to {package_assets}')


if __name__ == '__main__':
    main()
