"""Text–audio items: the manifest format of ``TextAudioDataset`` (``read_manifest``: CSV / TSV / JSONL with ``path``
and ``text`` fields) and routing an item's or batch's fields by type (``split_text_audio``)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ['read_manifest', 'split_text_audio']


def read_manifest(manifest: str | os.PathLike) -> list[tuple[Path, str]]:
    """``[(absolute audio path, text)]`` from a CSV / TSV / JSONL manifest with ``path`` and ``text`` fields."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f'manifest not found: {manifest}')
    root = manifest.parent
    suffix = manifest.suffix.lower()

    records: list[tuple[int, dict]] = []
    if suffix in ('.jsonl', '.json'):
        for line_number, line in enumerate(manifest.read_text(encoding = 'utf-8').splitlines(), start = 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f'{manifest} line {line_number} is not valid JSON ({error}); expected one '
                                 '{"path": ..., "text": ...} object per line') from error
            records.append((line_number, record))
    elif suffix in ('.csv', '.tsv'):
        with open(manifest, newline = '', encoding = 'utf-8') as f:
            reader = csv.DictReader(f, delimiter = '\t' if suffix == '.tsv' else ',')
            missing = {'path', 'text'} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f'{manifest} needs a header row with columns "path" and "text" '
                                 f'(found {reader.fieldnames}, missing {sorted(missing)})')
            records = [(line_number, row) for line_number, row in enumerate(reader, start = 2)]
    else:
        raise ValueError(f'unknown manifest type {manifest.suffix!r} for {manifest}: use .csv, .tsv or .jsonl')

    rows = []
    for line_number, record in records:
        if not isinstance(record, dict) or not isinstance(record.get('path'), str) or not isinstance(record.get('text'), str):
            raise ValueError(f'{manifest} line {line_number}: expected string fields "path" and "text", got {record!r}')
        path = Path(record['path'])
        rows.append((path if path.is_absolute() else root / path, record['text']))
    return rows


def _is_text(value) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)


def split_text_audio(item) -> tuple[Any, Any]:
    """Route the fields of an item or batch by type: returns ``(text, audio)``.

    ``text`` is the string field (a ``str`` for an item, a list of strings for a batch) or None; ``audio`` is the
    single tensor field, or a tuple of them when there are several (one per rate). Works for ``(text, audio)``,
    ``(audio, text)``, audio alone, and multi-rate items such as ``(text, wave_16k, wave_24k)``.
    """
    if isinstance(item, Tensor):
        return None, item
    if not isinstance(item, (tuple, list)):
        raise TypeError(f'expected a tensor or a tuple of fields, got {type(item).__name__}')
    if _is_text(item):
        raise TypeError('item holds only text, no audio tensor')

    texts, audio = [], []
    for field in item:
        if _is_text(field):
            texts.append(field)
        elif isinstance(field, Tensor):
            audio.append(field)
        elif isinstance(field, (tuple, list)) and all(isinstance(f, Tensor) for f in field):
            audio.extend(field)
        else:
            raise TypeError(f'cannot route a field of type {type(field).__name__}: expected text or audio tensors')
    if len(texts) > 1:
        raise TypeError(f'item holds {len(texts)} text fields; expected at most one')
    if not audio:
        raise TypeError('item holds no audio tensor')
    text = texts[0] if texts else None
    if isinstance(text, tuple):
        text = list(text)
    return text, audio[0] if len(audio) == 1 else tuple(audio)
