"""Tokenize an audio corpus once into token shards (the format: :mod:`audiolm_pytorch.tokens`).

``prepare_tokens(inputs, out, wav2vec=..., codec=...)`` (CLI: ``audiolm prepare``):

- the sorted input files are cut into shards of ``shard_size`` files; shard ``k`` belongs to process
  ``k % num_processes`` (under ``accelerate launch`` / torchrun each rank takes its own, disjoint shards), so any
  number of processes writes the same bytes as one;
- each shard is written into a temporary folder and renamed into place when complete: a finished shard is never
  redone, a killed run leaves no half shard, and running the same command again finishes the corpus (identically);
- every file is read as the on-the-fly datasets read it (``SoundDataset``: mono, resampled to each tokenizer's
  rate, cut to its ``seq_len_multiple_of``), so training from shards sees the tokens training from audio sees;
- unreadable or too-short files are skipped with a ``SkippedAudioWarning`` (and listed in the shard's index).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from audiolm_pytorch.tokens import FORMAT, MANIFEST, VERSION, check_identity, read_manifest, tokenizer_identity
from audiolm_pytorch.utils import beartype, eval_mode, exists

__all__ = ['prepare_tokens', 'corpus_files']

logger = logging.getLogger(__name__)


def corpus_files(inputs: Sequence[str | os.PathLike], exts: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """``[(clip id, path)]``: files given directly, and every audio file under the folders given (recursively,
    sorted). The id is the path relative to its input folder (the file name for a file given directly)."""
    from audiolm_pytorch.audio import AUDIO_EXTENSIONS
    from audiolm_pytorch.data import find_audio_files
    out, used = [], set()
    for item in inputs:
        root = Path(item)
        if not root.exists():
            raise FileNotFoundError(f'input not found: {root}')
        pairs = [(p.relative_to(root).as_posix(), p) for p in find_audio_files(root, exts or AUDIO_EXTENSIONS)] \
            if root.is_dir() else [(root.name, root)]
        for clip_id, path in pairs:
            base, k = clip_id, 1
            while clip_id in used:                 # the same relative name under two input folders
                clip_id, k = f'{base}#{k}', k + 1
            used.add(clip_id)
            out.append((clip_id, path))
    if not out:
        raise ValueError(f'no audio files found in {list(map(str, inputs))}')
    return out


def _process_group(num_processes, process_index):
    """``(rank, world size, barrier)``: explicit values, else Accelerate's state under a multi-process launch."""
    if exists(num_processes) or exists(process_index):
        return int(process_index or 0), int(num_processes or 1), lambda: None
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1:
        from accelerate import PartialState
        # without a GPU, Accelerate only forms the (gloo) process group when asked for the CPU
        cpu = os.environ.get('ACCELERATE_USE_CPU', '').lower() in ('1', 'true', 'yes') or not torch.cuda.is_available()
        state = PartialState(cpu = cpu)
        if state.num_processes != world:
            raise RuntimeError(f'WORLD_SIZE={world} but Accelerate formed {state.num_processes} process(es): every '
                               'process would tokenize every shard; check the launch configuration')
        return state.process_index, state.num_processes, state.wait_for_everyone
    return 0, 1, lambda: None


def _int_dtype(codebook_size: int):
    return np.int16 if codebook_size <= np.iinfo(np.int16).max else np.int32


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent = 1, sort_keys = True) + '\n', encoding = 'utf-8')


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    _write_json(tmp, data)
    os.replace(tmp, path)


class _Tokenizer:
    """Reads one file the way ``SoundDataset`` does and runs the tokenizers on it."""

    def __init__(self, wav2vec, codec, device):
        from audiolm_pytorch.data import _AudioFiles
        self.modules = [(name, m) for name, m in (('semantic', wav2vec), ('codes', codec)) if exists(m)]
        rates = tuple(int(m.target_sample_hz) for _, m in self.modules)
        multiples = tuple(getattr(m, 'seq_len_multiple_of', None) for _, m in self.modules)
        self.files = _AudioFiles([], rates, None, multiples, validate = False)
        self.device = device

    @torch.no_grad()
    def __call__(self, path: Path):
        """``{'semantic': (n,), 'codes': (m, g*q)}`` as int64 numpy arrays, or ``None`` (skipped, warned)."""
        from audiolm_pytorch.audio import AudioDecodeError
        files = self.files
        files.files, files._bad, files._info, files.skipped = [path], set(), {}, []
        with warnings.catch_warnings(record = True) as caught:
            warnings.simplefilter('always')
            waves = files._load_audio(0) if files._probe(0) else None
        if waves is None:
            return None, caught
        out = {}
        try:
            for (name, module), wave in zip(self.modules, waves):
                with eval_mode(module):
                    wave = wave[None].to(self.device)
                    tokens = module(wave, flatten = True) if name == 'semantic' else module.tokenize(wave)
                out[name] = tokens[0].long().cpu().numpy()
                if out[name].shape[0] == 0:
                    raise AudioDecodeError(f'too short: no {name} frame')
        except (AudioDecodeError, OSError) as error:
            files._skip(0, str(error))
            return None, caught
        return out, caught


def _write_shard(out: Path, name: str, items: list, tokenize: _Tokenizer, dtypes: dict) -> int:
    """Tokenize ``items`` ([(clip id, path)]) into ``out/name`` (temp folder + rename). Returns the clip count."""
    from audiolm_pytorch.data import SkippedAudioWarning
    for stale in out.glob(f'.tmp-{name}-*'):   # left by a killed run (a shard belongs to one process per run)
        shutil.rmtree(stale, ignore_errors = True)
    tmp = out / f'.tmp-{name}-{os.getpid()}'
    tmp.mkdir()
    arrays = {key: [] for key in dtypes}
    offsets = dict.fromkeys(dtypes, 0)
    clips, skipped = [], []
    for clip_id, path in items:
        tokens, caught = tokenize(path)
        for warning in caught:                 # re-issued here, so the warning names this call site once
            warnings.warn(warning.message, warning.category, stacklevel = 2)
        if tokens is None:
            reason = next((str(w.message) for w in caught if issubclass(w.category, SkippedAudioWarning)), 'unreadable')
            logger.warning('skipped %s: %s', path, reason)
            skipped.append(dict(id = clip_id, source = str(path), reason = reason))
            continue
        clip = dict(id = clip_id, source = str(path), file_end = True)
        for key, value in tokens.items():
            clip[key] = [offsets[key], int(value.shape[0])]
            offsets[key] += int(value.shape[0])
            arrays[key].append(value.astype(dtypes[key]))
        clips.append(clip)
    for key, parts in arrays.items():
        width = () if key == 'semantic' else (int(parts[0].shape[1]) if parts else 0,)
        array = np.concatenate(parts) if parts else np.zeros((0, *width), dtype = dtypes[key])
        np.save(tmp / f'{key}.npy', np.ascontiguousarray(array), allow_pickle = False)
    _write_json(tmp / 'index.json', dict(clips = clips, skipped = skipped))
    try:
        os.replace(tmp, out / name)            # atomic: the shard exists whole or not at all
    except OSError:
        if not (out / name / 'index.json').is_file():
            raise
        shutil.rmtree(tmp, ignore_errors = True)   # another process finished the same shard first
    return len(clips)


@beartype
def prepare_tokens(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
                   wav2vec = None, codec = None, shard_size: int = 256, exts: Sequence[str] | None = None,
                   device: str | torch.device | None = None, progress: bool = True,
                   num_processes: int | None = None, process_index: int | None = None) -> dict:
    """Tokenize the audio files under ``inputs`` into token shards in ``out`` (see the module docstring).

    Args:
        inputs: audio files and / or folders (searched recursively).
        out: the token folder (created; an existing one is resumed, or refused if it holds another corpus).
        wav2vec: semantic tokenizer (semantic ids); codec: acoustic codec (all its levels). At least one.
        shard_size: input files per shard.
        num_processes / process_index: split by hand; default: Accelerate's processes under ``accelerate launch``.

    Returns the corpus manifest (``tokens.json``) as a dict, with ``written`` (shards this call wrote).
    """
    if not exists(wav2vec) and not exists(codec):
        raise ValueError('pass wav2vec= (semantic ids) and / or codec= (codec codes): there is nothing to compute')
    if shard_size < 1:
        raise ValueError(f'shard_size must be positive, got {shard_size}')
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files = corpus_files(inputs, exts)
    rank, world, barrier = _process_group(num_processes, process_index)
    if not 0 <= rank < world:
        raise ValueError(f'process_index {rank} is outside [0, {world})')
    device = torch.device(device) if exists(device) else next(
        (p.device for m in (wav2vec, codec) if exists(m) for p in m.parameters()), torch.device('cpu'))

    listing = hashlib.sha256('\n'.join(f'{clip_id}\t{path}' for clip_id, path in files).encode()).hexdigest()
    num_shards = -(-len(files) // shard_size)
    manifest = dict(format = FORMAT, version = VERSION, shard_size = shard_size, num_files = len(files),
                    inputs_sha256 = listing, shards = [f'shard-{k:05d}' for k in range(num_shards)],
                    semantic = tokenizer_identity(wav2vec) if exists(wav2vec) else None,
                    codec = tokenizer_identity(codec) if exists(codec) else None)
    out = Path(out)
    out.mkdir(parents = True, exist_ok = True)
    if (out / MANIFEST).is_file():
        _check_resumable(read_manifest(out), manifest, out, wav2vec, codec)
    else:
        _atomic_json(out / MANIFEST, manifest)    # every rank writes the same bytes

    dtypes = {}
    if exists(wav2vec):
        dtypes['semantic'] = _int_dtype(int(wav2vec.codebook_size))
    if exists(codec):
        dtypes['codes'] = _int_dtype(int(codec.codebook_size))
    tokenize = _Tokenizer(wav2vec, codec, device)
    mine = [k for k in range(num_shards) if k % world == rank and not (out / manifest['shards'][k]).is_dir()]
    todo = sum(len(files[k * shard_size:(k + 1) * shard_size]) for k in mine)
    from tqdm.auto import tqdm
    written = 0
    with tqdm(total = todo, desc = f'tokenize (rank {rank}/{world})' if world > 1 else 'tokenize', unit = 'file',
              disable = not progress or todo == 0) as bar:
        for k in mine:
            items = files[k * shard_size:(k + 1) * shard_size]
            _write_shard(out, manifest['shards'][k], items, tokenize, dtypes)
            written += 1
            bar.update(len(items))
    barrier()
    return dict(manifest, written = written)


def _check_resumable(stored: dict, wanted: dict, out: Path, wav2vec, codec) -> None:
    """An existing token folder may only be finished by the same command: same inputs, sharding and tokenizers."""
    check_identity(stored.get('semantic'), wav2vec, role = 'semantic tokenizer', where = out)
    check_identity(stored.get('codec'), codec, role = 'codec', where = out)
    for key in ('semantic', 'codec'):
        if exists(stored.get(key)) != exists(wanted.get(key)):
            raise ValueError(f'{out} was tokenized {"with" if exists(stored.get(key)) else "without"} a {key}; '
                             'resume with the same tokenizers, or write to a new folder')
    for key, what in (('inputs_sha256', 'input files'), ('shard_size', 'shard_size'), ('num_files', 'input files')):
        if stored.get(key) != wanted.get(key):
            raise ValueError(f'{out} holds tokens of other {what} ({key} {stored.get(key)!r} vs {wanted.get(key)!r}): '
                             'resume with the same inputs and shard size, or write to a new folder')


def cmd_prepare(args) -> int:
    """``audiolm prepare``: load the tokenizers named on the command line / in ``--config`` and write shards."""
    from audiolm_pytorch.cli_config import ConfigError, load_codec, load_config, load_semantic_tokenizer
    config = load_config(args.config, args.overrides)
    codec_spec = args.codec if exists(args.codec) else config.get('codec')
    wav2vec_spec = args.wav2vec if exists(args.wav2vec) else config.get('wav2vec')
    if not exists(codec_spec) and not exists(wav2vec_spec):
        raise ConfigError('pass --codec and / or --wav2vec (or codec: / wav2vec: sections in --config)')
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    codec = load_codec(codec_spec).to(device) if exists(codec_spec) else None
    wav2vec = load_semantic_tokenizer(wav2vec_spec).to(device) if exists(wav2vec_spec) else None
    result = prepare_tokens(args.inputs, args.out, wav2vec = wav2vec, codec = codec, shard_size = args.shard_size,
                            device = device, progress = not args.no_progress)
    if int(os.environ.get('RANK', '0')) == 0:
        done = sum((Path(args.out) / name).is_dir() for name in result['shards'])
        print(f'{args.out}: {done}/{len(result["shards"])} shards of {result["num_files"]} files '
              f'({result["written"]} written by this process)')
    return 0

