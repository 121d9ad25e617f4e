"""Audio datasets, text–audio datasets and the batch collation the trainers use.

- ``SoundDataset``: every audio file under a folder (recursively), mono, resampled to one or several rates,
  randomly cropped or zero-padded to a fixed length. Only the needed segment of long files is decoded.
- ``TextAudioDataset``: ``(text, audio)`` pairs from a CSV or JSONL manifest of ``path,text``.
- ``split_text_audio``: route the fields of a ``(text, audio)`` / ``(audio, text)`` item or batch by type.
- ``get_dataloader``: a ``DataLoader`` whose collate pads to the longest item (or crops to the shortest); strings
  pass through as lists. Batches are always tuples, one entry per field (``(wave,)`` for audio-only data).

The manifest format and ``split_text_audio`` live in ``data_text.py``, the collation in ``data_collate.py``; both are
re-exported here.

Bad files (empty, truncated, corrupt, zero-length, NaN-containing, not audio) never crash an epoch: each is
skipped with one ``SkippedAudioWarning`` and recorded in ``dataset.skipped`` as ``(path, reason)``; an item whose
file turns out to be unreadable is replaced by the next readable file. With ``num_workers > 0`` the skips found
inside worker processes are warned about there but do not reach the main process's ``skipped`` list.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from audiolm_pytorch.audio import AUDIO_EXTENSIONS, AudioDecodeError, audio_info, load_audio, resample
from audiolm_pytorch.data_collate import PAD_ID, collate_crop, collate_pad, get_dataloader  # noqa: F401 (re-exported)
from audiolm_pytorch.data_text import _is_text, read_manifest, split_text_audio  # noqa: F401 (re-exported)
from audiolm_pytorch.utils import beartype, cast_tuple, curtail_to_multiple, exists

__all__ = [
    'SoundDataset', 'TextAudioDataset', 'SkippedAudioWarning', 'split_text_audio', 'collate_pad', 'collate_crop',
    'get_dataloader', 'find_audio_files', 'NoReadableAudioError',
]

# extra input context (in file samples, rounded to keep the rate grids aligned) read on each side of a crop so
# that resampling sees its full kernel support at the segment edges
_RESAMPLE_MARGIN = 64
_MAX_ALIGNED_MARGIN = 4096


class SkippedAudioWarning(UserWarning):
    """An audio file was skipped because it could not be used (the message says why)."""


class NoReadableAudioError(RuntimeError, ValueError):
    """Every file of a dataset turned out unreadable when loading (each was skipped with a warning). A
    ``ValueError`` like the library's other bad-input errors, and a ``RuntimeError`` as it always was."""


def find_audio_files(folder: str | os.PathLike, exts: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """All files under ``folder`` (recursively) whose extension is in ``exts`` (case-insensitive), sorted."""
    wanted = {ext.lower().lstrip('.') for ext in exts}
    return sorted(p for p in Path(folder).rglob('*') if p.is_file() and p.suffix.lower().lstrip('.') in wanted)


def list_audio_files(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Audio files under a folder (``find_audio_files``), one file, or an explicit list of files (kept as given).
    A missing path raises ``FileNotFoundError``, a folder without audio ``ValueError``."""
    if not isinstance(data, (str, os.PathLike)):
        return [Path(p) for p in data]
    root = Path(data)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f'audio folder not found: {root}')
    files = find_audio_files(root)
    if not files:
        raise ValueError(f'no audio files ({", ".join(AUDIO_EXTENSIONS)}) found under {root}')
    return files


# ----------------------------------------------------------------------------------------------------------
# shared loading logic
# ----------------------------------------------------------------------------------------------------------

class _AudioFiles(Dataset):
    """Loads the audio part of an item: one tensor ``(n,)`` per target rate, cropped / padded / curtailed."""

    def __init__(self, files, target_sample_hz, max_length, seq_len_multiple_of, validate, return_file_end = False):
        self.return_file_end = return_file_end
        self.multiple_rates = isinstance(target_sample_hz, (tuple, list))
        self.target_sample_hz = cast_tuple(target_sample_hz)
        num_rates = len(self.target_sample_hz)
        if num_rates == 0 or any(hz <= 0 for hz in self.target_sample_hz):
            raise ValueError(f'target_sample_hz must be a positive rate or a tuple of them, got {target_sample_hz!r}')

        self.max_length = self._per_rate(max_length, 'max_length')
        self.seq_len_multiple_of = cast_tuple(seq_len_multiple_of, num_rates)
        if len(self.seq_len_multiple_of) != num_rates:
            raise ValueError(f'seq_len_multiple_of {seq_len_multiple_of!r} must give one value per target rate '
                             f'{self.target_sample_hz}')
        for name, values in (('max_length', self.max_length), ('seq_len_multiple_of', self.seq_len_multiple_of)):
            if any(exists(v) and v <= 0 for v in values):
                raise ValueError(f'{name} must be positive, got {values}')
        for hz, length, multiple in zip(self.target_sample_hz, self.max_length, self.seq_len_multiple_of):
            if exists(length) and exists(multiple) and length < multiple:
                raise ValueError(f'max_length gives {length} samples at {hz} Hz, shorter than seq_len_multiple_of='
                                 f'{multiple} (one codec / tokenizer frame): every item would be empty. Use a '
                                 f'max_length (data_max_length) of at least {multiple} samples at {hz} Hz')

        self.files = list(files)
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()
        self._info: dict[int, tuple[int, int]] = {}  # index -> (file sample rate, frames)
        if validate:
            for index in range(len(self.files)):
                self._probe(index)

    def _per_rate(self, max_length, name):
        """``max_length`` as one length (or None) per target rate. An int counts samples at the highest rate."""
        rates = self.target_sample_hz
        if isinstance(max_length, (tuple, list)):
            if len(max_length) != len(rates):
                raise ValueError(f'{name} {max_length!r} must give one length per target rate {rates}')
            return tuple(max_length)
        if not exists(max_length):
            return (None,) * len(rates)
        if max_length <= 0:
            raise ValueError(f'{name} must be positive, got {max_length}')
        top = max(rates)
        return tuple(max(1, int(max_length * hz // top)) for hz in rates)

    # bookkeeping --------------------------------------------------------------------------------------------

    def _skip(self, index: int, reason: str):
        if index in self._bad:
            return
        self._bad.add(index)
        path = str(self.files[index])
        self.skipped.append((path, reason))
        warnings.warn(f'skipping audio file {path}: {reason}', SkippedAudioWarning, stacklevel = 3)

    def _probe(self, index: int) -> bool:
        """Read the header of file ``index``; record it as skipped when it is unusable."""
        if index in self._bad:
            return False
        if index in self._info:
            return True
        path = Path(self.files[index])
        try:
            if not path.is_file():
                raise FileNotFoundError('file not found')
            if path.stat().st_size == 0:
                raise AudioDecodeError('empty file (0 bytes)')
            info = audio_info(path)
            if info.frames <= 0:
                raise AudioDecodeError('no samples (zero-length audio)')
            if info.samplerate <= 0:
                raise AudioDecodeError(f'invalid sample rate {info.samplerate}')
        except (AudioDecodeError, OSError) as error:
            self._skip(index, _reason(error))
            return False
        self._info[index] = (int(info.samplerate), int(info.frames))
        return True

    @property
    def num_usable(self) -> int:
        return len(self.files) - len(self._bad)

    def __len__(self):
        return len(self.files)

    # loading -------------------------------------------------------------------------------------------------

    def _first_good(self, index: int, load):
        """``load(i)`` for the first readable file at or after ``index`` (wrapping around)."""
        num_files = len(self.files)
        if not -num_files <= index < num_files:
            raise IndexError(f'index {index} out of range for a dataset of {num_files} files')
        index %= num_files
        for attempt in range(num_files):
            i = (index + attempt) % num_files
            if not self._probe(i):
                continue
            try:
                return load(i)
            except (AudioDecodeError, OSError) as error:
                self._skip(i, _reason(error))
        raise NoReadableAudioError(f'none of the {num_files} audio files is readable; skipped: {self.skipped[:5]}')

    def _load_audio(self, index: int) -> tuple[Tensor, ...]:
        """One 1-D float tensor per target rate for file ``index`` (all covering the same time segment); with
        ``return_file_end`` followed by ``num_samples`` (long ``(num_rates,)``: the real, non-padding samples at
        each rate) and ``file_end`` (bool scalar: the segment reaches the file's last sample)."""
        waves, num_samples, file_end = self._load_clip(index)
        if not self.return_file_end:
            return waves
        return (*waves, torch.tensor(num_samples, dtype = torch.long), torch.tensor(file_end))

    def _load_clip(self, index: int) -> tuple[tuple[Tensor, ...], list[int], bool]:
        """``(waves, real samples per rate, whether the segment reaches the end of the file)``."""
        path = self.files[index]
        file_hz, frames = self._info[index]
        rates = self.target_sample_hz

        start, num_read, margin = 0, None, 0
        if all(exists(length) for length in self.max_length):
            seconds = max(length / hz for length, hz in zip(self.max_length, rates))
            segment = int(math.ceil(seconds * file_hz))
            if frames > segment:
                # crops start on the grid shared by the file rate and every target rate (10 ms for 44.1 -> 16 kHz),
                # so each crop is exactly a slice of the whole file resampled, at every rate
                grid = _aligned_grid(file_hz, rates)
                aligned = grid <= _MAX_ALIGNED_MARGIN
                grid = grid if aligned else 1
                start = int(torch.randint(0, (frames - segment) // grid + 1, ()).item()) * grid
                resampling = any(hz != file_hz for hz in rates)
                wanted_margin = -(-_RESAMPLE_MARGIN // grid) * grid if resampling and aligned else 0
                margin = min(wanted_margin, start)
                num_read = segment + 2 * wanted_margin

        try:
            wave = load_audio(path, mono = True, offset = start - margin or None, max_length = num_read).wave[0]
        except AudioDecodeError:
            if start - margin <= 0:
                raise
            # header frame counts of compressed files can be approximate: fall back to the file's beginning
            start, margin = 0, 0
            wave = load_audio(path, mono = True, max_length = num_read).wave[0]

        # the segment holds the file's end when it reaches its last sample (whole files always do), or when the
        # read came back shorter than asked (header frame counts of compressed files can be approximate)
        segment_read = wave.shape[-1] - margin
        file_end = num_read is None or start + segment >= frames or segment_read < segment

        outputs, num_samples = [], []
        for hz, length, multiple in zip(rates, self.max_length, self.seq_len_multiple_of):
            out = resample(wave, file_hz, hz) if hz != file_hz else wave
            out = out[margin * hz // file_hz:]
            if exists(num_read):   # the crop's own samples (the read includes a resampling margin after it)
                out = out[:int(math.ceil(segment * hz / file_hz))]
            real = out.shape[-1]
            if exists(length):
                out = out[:length]
                if out.shape[-1] < length:
                    out = F.pad(out, (0, length - out.shape[-1]))
            if exists(multiple):
                out = curtail_to_multiple(out, multiple)
            if out.shape[-1] == 0:
                raise AudioDecodeError(f'too short: {frames} samples at {file_hz} Hz leave nothing at {hz} Hz '
                                       f'after cutting to a multiple of {multiple}')
            outputs.append(out.float().contiguous())
            num_samples.append(min(real, out.shape[-1]))
        return tuple(outputs), num_samples, file_end

    def _format_audio(self, outputs: tuple[Tensor, ...]):
        return outputs if self.multiple_rates else outputs[0]


def _reason(error: BaseException) -> str:
    message = str(error) or type(error).__name__
    return f'{type(error).__name__}: {message}' if isinstance(error, FileNotFoundError) else message


def _aligned_grid(file_hz: int, rates: Sequence[int]) -> int:
    """Smallest number of file samples that is a whole number of samples at every target rate."""
    grid = 1
    for hz in rates:
        step = file_hz // math.gcd(file_hz, hz)
        grid = grid * step // math.gcd(grid, step)
    return grid


# ----------------------------------------------------------------------------------------------------------
# public datasets
# ----------------------------------------------------------------------------------------------------------

class SoundDataset(_AudioFiles):
    """Every audio file under ``folder`` (searched recursively).

    Args:
        folder: directory to search.
        target_sample_hz: output rate, or a tuple of rates (then each item is a tuple with one tensor per rate,
            all covering the same time segment — e.g. ``(16000, 24000)`` for the semantic and codec tokenizers).
        exts: file extensions to include (case-insensitive).
        max_length: random crop / zero-pad every item to this many samples. An int counts samples at the highest
            target rate (the other rates get the same duration); a tuple gives one length per rate.
        seq_len_multiple_of: cut every item to a multiple of this (an int, or one value per rate).
        validate: read every file's header up front, so unreadable files are reported (and skipped) at once.
        return_file_end: also say, per item, how much of it is real audio and whether it ends its file (what
            the stage trainers need to train EOS only at real ends and never on zero-padding; see below).

    Items: a float tensor ``(n,)`` (``(n_r,)`` per rate for a tuple of rates), mono, in [-1, 1]. With
    ``return_file_end`` a tuple ``(*waves, num_samples, file_end)``: ``num_samples`` a long tensor
    ``(num_rates,)`` of real samples per rate (the rest of each wave is zero-padding of a file shorter than
    ``max_length``), ``file_end`` a bool scalar tensor, True when the item reaches the file's last sample (a whole
    file, a short file, or a crop that happens to end there) and False for a crop the file goes on after.

    Attributes:
        files: the discovered files; skipped: ``[(path, reason)]`` for every unusable file met so far.
    """

    @beartype
    def __init__(
        self,
        folder: str | os.PathLike,
        target_sample_hz: int | tuple[int, ...] | list[int],
        exts: Sequence[str] = ('flac', 'wav', 'mp3', 'ogg'),
        max_length: int | tuple[int | None, ...] | list[int | None] | None = None,
        seq_len_multiple_of: int | tuple[int | None, ...] | list[int | None] | None = None,
        *,
        validate: bool = True,
        return_file_end: bool = False,
    ):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f'audio folder {folder} does not exist (or is not a directory)')
        exts = [exts] if isinstance(exts, str) else list(exts)
        files = find_audio_files(folder, exts)
        if not files:
            raise ValueError(f'no audio files with extensions {exts} found under {folder} (searched recursively); '
                             'check the path, or pass exts=[...] for other file types')
        self.folder = folder
        super().__init__(files, target_sample_hz, max_length, seq_len_multiple_of, validate, return_file_end)
        if validate and self.num_usable == 0:
            raise ValueError(f'none of the {len(files)} files under {folder} is readable audio; '
                             f'skipped: {self.skipped[:5]}')

    def __getitem__(self, index: int):
        item = self._first_good(index, self._load_audio)
        return item if self.return_file_end else self._format_audio(item)


class TextAudioDataset(_AudioFiles):
    """``(text, audio)`` pairs listed in a manifest.

    The manifest is a CSV (header row with ``path`` and ``text`` columns; ``.tsv`` for tab-separated) or JSON
    lines (``.jsonl`` / ``.json``: one ``{"path": ..., "text": ...}`` object per line). Relative paths are taken
    relative to the manifest's folder.

    Args:
        manifest: the manifest file.
        target_sample_hz, max_length, seq_len_multiple_of, validate, return_file_end: as in ``SoundDataset``
            (with ``return_file_end`` the audio fields are followed by ``num_samples`` and ``file_end``).
        text_first: items are ``(text, audio)`` when True, ``(audio, text)`` otherwise. With a tuple of rates the
            audio tensors are flattened into the item: ``(text, wave_rate0, wave_rate1, ...)``.
    """

    @beartype
    def __init__(
        self,
        manifest: str | os.PathLike,
        target_sample_hz: int | tuple[int, ...] | list[int],
        max_length: int | tuple[int | None, ...] | list[int | None] | None = None,
        seq_len_multiple_of: int | tuple[int | None, ...] | list[int | None] | None = None,
        *,
        text_first: bool = True,
        validate: bool = True,
        return_file_end: bool = False,
    ):
        manifest = Path(manifest)
        rows = read_manifest(manifest)
        if not rows:
            raise ValueError(f'manifest {manifest} lists no (path, text) rows')
        self.manifest = manifest
        self.texts = [text for _, text in rows]
        self.text_first = text_first
        super().__init__([path for path, _ in rows], target_sample_hz, max_length, seq_len_multiple_of, validate,
                         return_file_end)
        if validate and self.num_usable == 0:
            raise ValueError(f'none of the {len(rows)} files listed in {manifest} is readable audio; '
                             f'skipped: {self.skipped[:5]}')

    def __getitem__(self, index: int):
        def load(i):
            audio = self._load_audio(i)
            return (self.texts[i], *audio) if self.text_first else (*audio, self.texts[i])
        return self._first_good(index, load)
