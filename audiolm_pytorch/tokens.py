"""Pre-computed token shards: the format, the tokenizer identities, and the dataset the stage trainers read.

A corpus tokenized once (``audiolm prepare``, :func:`~audiolm_pytorch.tokens_writer.prepare_tokens`) is a folder::

    tokens.json              the corpus: format version, tokenizer / codec identities, shard list, inputs hash
    shard-00000/             one folder per shard of ``shard_size`` input files, written whole (temp + rename)
        semantic.npy         every clip's semantic ids, concatenated: (sum of frames,) int16 / int32
        codes.npy            every clip's codec codes, concatenated: (sum of frames, groups * levels) int16 / int32
        index.json           per clip: id, source, [offset, length] into each array, file_end; skipped files

Plain ``.npy`` arrays (read memory-mapped with ``np.load(mmap_mode='r')``, so a crop touches only its pages and
DataLoader workers share the page cache) and JSON: no pickle anywhere, readable without this library.

:class:`TokenDataset` yields crops in token space for one stage, with ``-1`` (``data.PAD_ID``) after the end of
short clips and a per-item ``file_end`` flag, True only when the crop reaches the end of its clip's file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torch.utils.data import Dataset

from audiolm_pytorch.utils import beartype, exists

__all__ = ['FORMAT', 'MANIFEST', 'STAGES', 'TokenDataset', 'check_identity', 'tokenizer_identity']

FORMAT, VERSION = 'audiolm-tokens', 1
MANIFEST = 'tokens.json'
STAGES = ('semantic', 'coarse', 'fine', 'soundstorm')
PAD_ID = -1           # same value as audiolm_pytorch.data.PAD_ID (collate_pad)
_MAX_GRID = 64        # aligned crop starts: at most this many primary frames between two starts


# ----------------------------------------------------------------------------------------------------------
# identities
# ----------------------------------------------------------------------------------------------------------

def _sha256_tensors(module) -> str:
    """Hash of every parameter and buffer (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    state = module.state_dict() if hasattr(module, 'state_dict') else {}
    for name in sorted(state):
        tensor = state[name]
        if not torch.is_tensor(tensor):
            continue
        tensor = tensor.detach().to('cpu').contiguous().reshape(-1)
        digest.update(f'{name}|{tensor.dtype}|{tuple(state[name].shape)}|'.encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_identity(module) -> dict:
    """What a token corpus records about the semantic tokenizer or codec that wrote it: class, rates, codebook
    sizes, a hash of its constructor config (when it has one) and of its weights. JSON-able."""
    cls = type(module)
    hz, hop = int(module.target_sample_hz), int(module.downsample_factor)
    identity = dict(cls = f'{cls.__module__}.{cls.__qualname__}', sample_hz = hz, hop = hop,
                    frame_rate = [hz // math.gcd(hz, hop), hop // math.gcd(hz, hop)],
                    codebook_size = int(module.codebook_size),
                    seq_len_multiple_of = getattr(module, 'seq_len_multiple_of', None))
    if hasattr(module, 'num_quantizers'):
        identity.update(num_quantizers = int(module.num_quantizers), rq_groups = int(getattr(module, 'rq_groups', 1)))
    config = getattr(module, 'config', None)
    if isinstance(config, dict) and config:
        from audiolm_pytorch.checkpoint import config_to_data
        try:
            blob = json.dumps(config_to_data(config), sort_keys = True, default = str)
            identity['config_sha256'] = hashlib.sha256(blob.encode()).hexdigest()
        except (TypeError, ValueError):
            pass
    identity['weights_sha256'] = _sha256_tensors(module)
    return identity


def check_identity(stored: dict | None, module, *, role: str, where) -> None:
    """Raise a ValueError when ``module`` is not the tokenizer / codec recorded as ``stored`` for ``role``."""
    if not exists(module):
        return
    if not exists(stored):
        raise ValueError(f'the tokens in {where} hold no {role} tokens, but a {role} was given')
    actual = tokenizer_identity(module)
    diff = [key for key in sorted(set(stored) | set(actual)) if stored.get(key) != actual.get(key)]
    if diff:
        details = ', '.join(f'{key}: tokens {stored.get(key)!r} vs given {actual.get(key)!r}' for key in diff[:4])
        raise ValueError(f'the {role} given is not the one that wrote the tokens in {where} ({details}); train with '
                         f'the same {role}, or re-tokenize the corpus with `audiolm prepare`')


def frame_rate(identity: dict) -> Fraction:
    return Fraction(*identity['frame_rate'])


# ----------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------

def read_manifest(root: str | os.PathLike) -> dict:
    """The ``tokens.json`` of a token folder, checked for format and version."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f'{Path(root)} is not a token folder (no {MANIFEST}); write one with `audiolm prepare`')
    manifest = json.loads(path.read_text(encoding = 'utf-8'))
    if manifest.get('format') != FORMAT or manifest.get('version') != VERSION:
        raise ValueError(f'{path} is not an {FORMAT} v{VERSION} manifest (format={manifest.get("format")!r}, '
                         f'version={manifest.get("version")!r})')
    return manifest


class TokenDataset(Dataset):
    """Crops of pre-computed tokens for one stage (no tokenizer or codec is loaded).

    Args:
        root: a token folder written by ``audiolm prepare``.
        stage: ``'semantic'`` | ``'coarse'`` | ``'fine'`` | ``'soundstorm'``.
        max_seconds: crop length in seconds (``None``: whole clips). Clips shorter than it are padded with -1.
        num_coarse_quantizers / num_fine_quantizers: codec levels per group kept for the coarse / fine stages
            (SoundStorm keeps ``num_quantizers`` levels per group, default all).
        with_semantic: SoundStorm items carry the semantic ids (default: when the corpus has them).

    Items (tuples; ``file_end`` a bool: the crop holds the real end of the file):
        semantic ``(ids (n,), file_end)``; coarse ``(semantic (n,), coarse (m, g*Qc), file_end)``;
        fine ``(codes (m, g*(Qc+Qf)), file_end)``; soundstorm ``(codes (m, g*Q), [semantic (n,),] file_end)``.
        Integer tensors are int64; ``collate_pad`` (the trainers' default) pads them with -1 across a batch.

    Crops of two streams (semantic and codes) cover the same time span: their starts lie on the grid where both
    rates have a whole number of frames (e.g. 40 ms for 50 Hz ids and 75 Hz codes). Random starts use torch's
    global RNG, as ``SoundDataset`` does, so a trainer's saved RNG state resumes them.
    """

    @beartype
    def __init__(self, root: str | os.PathLike, *, stage: str, max_seconds: float | None = None,
                 num_coarse_quantizers: int | None = None, num_fine_quantizers: int | None = None,
                 num_quantizers: int | None = None, with_semantic: bool | None = None):
        if stage not in STAGES:
            raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
        if exists(max_seconds) and max_seconds <= 0:
            raise ValueError(f'max_seconds must be positive, got {max_seconds}')
        self.root, self.stage, self.max_seconds = Path(root), stage, max_seconds
        self.manifest = read_manifest(root)
        self.semantic_identity, self.codec_identity = self.manifest.get('semantic'), self.manifest.get('codec')
        needs_semantic = stage in ('semantic', 'coarse') or bool(with_semantic)
        needs_codes = stage != 'semantic'
        if needs_semantic and not exists(self.semantic_identity):
            raise ValueError(f'the {stage} stage needs semantic ids, but {root} holds none: tokenize with --wav2vec')
        if needs_codes and not exists(self.codec_identity):
            raise ValueError(f'the {stage} stage needs codec codes, but {root} holds none: tokenize with --codec')
        self.with_semantic = stage in ('semantic', 'coarse') or (
            stage == 'soundstorm' and (with_semantic if exists(with_semantic) else exists(self.semantic_identity)))
        self.levels = self._levels(num_coarse_quantizers, num_fine_quantizers, num_quantizers)

        missing = [name for name in self.manifest['shards'] if not (self.root / name / 'index.json').is_file()]
        if missing:
            raise ValueError(f'{root} is incomplete: {len(missing)} of {len(self.manifest["shards"])} shards are missing '
                             f'(first: {missing[0]}); rerun the same `audiolm prepare` command to finish it')
        self.clips, self.skipped = [], []
        for shard in self.manifest['shards']:
            index = json.loads((self.root / shard / 'index.json').read_text(encoding = 'utf-8'))
            self.clips.extend(dict(clip, shard = shard) for clip in index['clips'])
            self.skipped.extend(index.get('skipped', []))
        if not self.clips:
            raise ValueError(f'{root} holds no clips (every input was skipped: {self.skipped[:3]})')
        self._arrays: dict = {}

    def _levels(self, num_coarse, num_fine, num_all) -> tuple[int, int] | None:
        """``(groups, levels kept per group)`` for the codes, or None for the semantic stage."""
        if self.stage == 'semantic':
            return None
        groups, available = self.codec_identity['rq_groups'], self.codec_identity['num_quantizers']
        if self.stage == 'soundstorm':
            needed = num_all if exists(num_all) else available
        elif self.stage == 'coarse' and exists(num_coarse):
            needed = num_coarse
        elif self.stage == 'fine' and exists(num_coarse) and exists(num_fine):
            needed = num_coarse + num_fine
        else:
            raise ValueError(f'the {self.stage} stage needs num_coarse_quantizers' +
                             (' and num_fine_quantizers' if self.stage == 'fine' else '') + ' (codec levels it reads)')
        if needed > available:
            raise ValueError(f'the {self.stage} stage needs {needed} codec levels per group but the tokens hold '
                             f'{available} (codec {self.codec_identity["cls"]})')
        return groups, needed

    def __len__(self):
        return len(self.clips)

    def __getstate__(self):          # memory maps are reopened in each DataLoader worker, never pickled
        return {**self.__dict__, '_arrays': {}}

    def _array(self, shard: str, name: str) -> np.ndarray:
        key = (shard, name)
        if key not in self._arrays:
            self._arrays[key] = np.load(self.root / shard / f'{name}.npy', mmap_mode = 'r', allow_pickle = False)
        return self._arrays[key]

    def _read(self, clip: dict, name: str, start: int, stop: int) -> Tensor:
        offset, _ = clip[name]
        return torch.from_numpy(np.array(self._array(clip['shard'], name)[offset + start:offset + stop], dtype = np.int64))

    def _window(self, rate: Fraction) -> int | None:
        return None if not exists(self.max_seconds) else max(1, int(self.max_seconds * rate))

    def __getitem__(self, index: int):
        clip = self.clips[index]
        streams = []                  # (name, rate), primary first
        if self.stage != 'semantic':
            streams.append(('codes', frame_rate(self.codec_identity)))
        if self.with_semantic:
            streams.append(('semantic', frame_rate(self.semantic_identity)))
        spans = self._crop(clip, streams)
        file_end = bool(clip['file_end']) and spans[0][2]
        out = {}
        for (name, rate), (start, stop, _) in zip(streams, spans):
            tokens = self._read(clip, name, start, stop)
            window = self._window(rate)
            if exists(window) and tokens.shape[0] < window:   # short clip: -1 after its end (never a target)
                pad = tokens.new_full((window - tokens.shape[0], *tokens.shape[1:]), PAD_ID)
                tokens = torch.cat((tokens, pad))
            out[name] = tokens
        if 'codes' in out:
            groups, keep = self.levels
            codes = rearrange(out['codes'], 'n (g q) -> n g q', g = groups)[..., :keep]
            out['codes'] = rearrange(codes, 'n g q -> n (g q)').contiguous()
        if self.stage == 'semantic':
            return out['semantic'], file_end
        if self.stage == 'coarse':
            return out['semantic'], out['codes'], file_end
        if self.stage == 'fine' or not self.with_semantic:
            return out['codes'], file_end
        return out['codes'], out['semantic'], file_end

    def _crop(self, clip: dict, streams: list) -> list[tuple[int, int, bool]]:
        """``(start, stop, reaches_end)`` per stream: a random window of ``max_seconds`` on the aligned grid."""
        lengths = [clip[name][1] for name, _ in streams]
        (_, rate), length = streams[0], lengths[0]
        window = self._window(rate)
        if not exists(window) or length <= window:
            return [(0, n, True) for n in lengths]
        grid = 1
        for _, other in streams[1:]:
            step = (other / rate).denominator        # primary frames per whole number of the other's frames
            grid = grid * step // math.gcd(grid, step)
        if grid > min(_MAX_GRID, window):
            grid = 1                                 # incommensurate rates: the other stream's start is rounded down
        # starts on the grid, plus the clip's last window when the grid misses it: every clip end is reachable
        on_grid = (length - window) // grid + 1
        draw = int(torch.randint(0, on_grid + int((length - window) % grid != 0), (), device = 'cpu'))
        start = draw * grid if draw < on_grid else length - window
        reaches_end = start + window >= length
        spans = [(start, start + window, reaches_end)]
        for (_, other), n in zip(streams[1:], lengths[1:]):
            other_window = self._window(other)
            # at the end both streams end with the file; elsewhere the other starts at the same time
            other_start = max(0, n - other_window) if reaches_end else min(int(start * other / rate), n)
            spans.append((other_start, min(other_start + other_window, n), reaches_end))
        return spans


def check_tokens_fit(dataset: TokenDataset, *, model: str, num_semantic_tokens: int | None = None,
                     codebook_size: int | None = None, rq_groups: int | None = None, wav2vec = None,
                     codec = None) -> None:
    """Raise a clear ValueError when the tokens of ``dataset`` cannot train ``model`` (a stage name for messages):
    codebook sizes and RVQ groups must match the transformer's, and a tokenizer / codec given alongside must be
    the one that wrote the tokens."""
    where = dataset.root
    check_identity(dataset.semantic_identity, wav2vec, role = 'semantic tokenizer', where = where)
    check_identity(dataset.codec_identity, codec, role = 'codec', where = where)
    sem, cod = dataset.semantic_identity, dataset.codec_identity
    if exists(num_semantic_tokens) and dataset.with_semantic and sem['codebook_size'] != num_semantic_tokens:
        raise ValueError(f'the semantic ids in {where} come from a tokenizer with codebook_size={sem["codebook_size"]} '
                         f'({sem["cls"]}) but the {model} has {num_semantic_tokens} semantic tokens: they must match')
    if exists(codebook_size) and dataset.stage != 'semantic' and cod['codebook_size'] != codebook_size:
        raise ValueError(f'the codes in {where} come from a codec with codebook_size={cod["codebook_size"]} '
                         f'({cod["cls"]}) but the {model} has codebook_size={codebook_size}: they must match')
    if exists(rq_groups) and dataset.stage != 'semantic' and cod['rq_groups'] != rq_groups:
        raise ValueError(f'the codes in {where} have rq_groups={cod["rq_groups"]} but the {model} has '
                         f'rq_groups={rq_groups}: they must match')
