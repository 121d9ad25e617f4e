"""Token shards (``audiolm_pytorch.tokens`` / ``tokens_writer``): values round trip, token-space crops and their
file-end flags, resumable and multi-process writing (byte-identical), identity checks, skipped files, no pickle,
the ``audiolm prepare`` command, and trainers reading shards giving the losses of the on-the-fly path."""

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ASSETS, TINY_LM, spectral_tokenizer, stages, tiny_soundstream

NAMES = ('music_0_16k.wav', 'music_1_16k.wav', 'speech_0_16k.wav', 'speech_1_16k.wav', 'speech_2_16k.wav')


@pytest.fixture(scope = 'module')
def tokenizers():
    torch.manual_seed(0)
    return spectral_tokenizer().eval(), tiny_soundstream().eval()


@pytest.fixture(scope = 'module')
def corpus(tmp_path_factory):
    """Five real clips, a 0.1 s clip and a file that is not audio (in a sub-folder)."""
    folder = tmp_path_factory.mktemp('corpus')
    for name in NAMES:
        (folder / name).symlink_to(ASSETS / name)
    import soundfile as sf
    sub = folder / 'sub'
    sub.mkdir()
    sf.write(sub / 'short.wav', np.sin(np.arange(1600) / 7.).astype(np.float32) * .3, 16000)
    (sub / 'broken.wav').write_bytes(b'RIFF\x00\x00\x00\x00WAVEnot really audio')
    return folder


def prepare(corpus, out, tokenizers, **kwargs):
    from audiolm_pytorch.data import SkippedAudioWarning
    from audiolm_pytorch.tokens_writer import prepare_tokens
    wav2vec, codec = tokenizers
    with pytest.warns(SkippedAudioWarning, match = 'broken.wav'):
        return prepare_tokens([corpus], out, wav2vec = wav2vec, codec = codec, shard_size = 2, progress = False, **kwargs)


@pytest.fixture(scope = 'module')
def shards(corpus, tokenizers, tmp_path_factory):
    out = tmp_path_factory.mktemp('tokens') / 'tok'
    prepare(corpus, out, tokenizers)
    return out


def folder_bytes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def expected_tokens(path, tokenizers):
    """What the on-the-fly path computes for the whole file."""
    from audiolm_pytorch.data import SoundDataset
    wav2vec, codec = tokenizers
    folder = Path(path).parent
    ds = SoundDataset(folder, target_sample_hz = (16000, 16000),
                      seq_len_multiple_of = (wav2vec.seq_len_multiple_of, codec.seq_len_multiple_of))
    i = [p.name for p in ds.files].index(Path(path).name)
    wave_s, wave_c = ds[i]
    with torch.no_grad():
        return wav2vec(wave_s[None], flatten = True)[0].long(), codec.tokenize(wave_c[None])[0].long()


# ------------------------------------------------------------------------------------------------------------
# format and values
# ------------------------------------------------------------------------------------------------------------

def test_round_trip_values_and_identities(shards, corpus, tokenizers):
    from audiolm_pytorch.tokens import TokenDataset, tokenizer_identity
    manifest = json.loads((shards / 'tokens.json').read_text())
    assert manifest['semantic'] == tokenizer_identity(tokenizers[0])
    assert manifest['codec'] == tokenizer_identity(tokenizers[1])
    assert manifest['codec']['frame_rate'] == [2000, 1] and manifest['semantic']['codebook_size'] == 16
    assert manifest['shards'] == ['shard-00000', 'shard-00001', 'shard-00002', 'shard-00003']

    ds = TokenDataset(shards, stage = 'soundstorm')            # whole clips, every level, semantic ids
    assert [c['id'] for c in ds.clips] == sorted(NAMES) + ['sub/short.wav']
    assert [s['id'] for s in ds.skipped] == ['sub/broken.wav']
    for i, clip in enumerate(ds.clips):
        codes, semantic, file_end = ds[i]
        want_semantic, want_codes = expected_tokens(clip['source'], tokenizers)
        assert torch.equal(semantic, want_semantic) and torch.equal(codes, want_codes), clip['id']
        assert file_end is True and codes.dtype == torch.long
    assert np.load(shards / 'shard-00000' / 'codes.npy', mmap_mode = 'r').dtype == np.int16


def test_no_pickle_anywhere(shards):
    for path in shards.rglob('*'):
        if path.suffix == '.npy':
            array = np.load(path, allow_pickle = False)      # raises on object arrays
            assert array.dtype.kind == 'i'
        elif path.is_file():
            assert path.suffix == '.json'
            json.loads(path.read_text())
        assert not path.is_file() or b'\x80\x04\x95' not in path.read_bytes()   # pickle protocol 4 frames


def _find(full, part, starts):
    return [s for s in starts if s + len(part) <= len(full) and torch.equal(full[s:s + len(part)], part)]


def test_crops_are_aligned_padded_and_flag_the_file_end(shards, tokenizers):
    from audiolm_pytorch.tokens import TokenDataset
    full = TokenDataset(shards, stage = 'coarse', num_coarse_quantizers = 2)
    ds = TokenDataset(shards, stage = 'coarse', max_seconds = 0.3, num_coarse_quantizers = 2)
    # 16 kHz / 320 = 50 Hz ids, 2000 Hz codes: 40 codec frames per id, 15 ids and 600 frames per crop
    seen_end = seen_mid = 0
    for trial in range(40):
        i = trial % 5                                          # the five long clips
        semantic, coarse, file_end = ds[i]
        whole_semantic, whole_coarse, _ = full[i]
        assert semantic.shape == (15,) and coarse.shape == (600, 2) and (coarse >= 0).all()
        last = len(whole_coarse) - 600                         # the grid (40 frames), or the clip's last window
        starts = _find(whole_coarse, coarse, [*range(0, last + 1, 40), last])
        assert starts, 'the crop is no window of the clip'
        aligned = [s for s in starts if torch.equal(whole_semantic[s // 40:s // 40 + 15], semantic)
                   or (s == last and torch.equal(whole_semantic[-15:], semantic))]
        assert aligned, 'streams misaligned'
        assert file_end in [s == last for s in aligned]        # (silent stretches can repeat a window)
        seen_end, seen_mid = seen_end + file_end, seen_mid + (not file_end)
    assert seen_mid > 0
    short = ds[5]                                              # 0.1 s: whole clip, then -1 padding, file end
    assert short[2] is True and (short[1][200:] == -1).all() and (short[1][:200] >= 0).all()
    assert (short[0][5:] == -1).all() and (short[0][:5] >= 0).all()
    # the end of a clip is a crop like any other: a start on the last grid point reaches it
    torch.manual_seed(0)
    ends = [ds[0][2] for _ in range(200)]
    assert any(ends) and not all(ends)


def test_stage_items_select_levels(shards):
    from audiolm_pytorch.tokens import TokenDataset
    codes_all = TokenDataset(shards, stage = 'soundstorm', with_semantic = False)[0]
    fine = TokenDataset(shards, stage = 'fine', num_coarse_quantizers = 1, num_fine_quantizers = 2)[0]
    semantic = TokenDataset(shards, stage = 'semantic', max_seconds = 0.5)[0]
    assert len(codes_all) == 2 and codes_all[0].shape[-1] == 4
    assert torch.equal(fine[0], codes_all[0][:, :3])
    assert semantic[0].shape == (25,)
    with pytest.raises(ValueError, match = 'needs 5 codec levels'):
        TokenDataset(shards, stage = 'fine', num_coarse_quantizers = 2, num_fine_quantizers = 3)


# ------------------------------------------------------------------------------------------------------------
# writing: processes, interruption, identities
# ------------------------------------------------------------------------------------------------------------

def test_split_across_processes_gives_the_bytes_of_one(shards, corpus, tokenizers, tmp_path):
    from audiolm_pytorch.tokens_writer import prepare_tokens
    out = tmp_path / 'split'
    # rank 1 first (the order processes finish in does not matter); the broken file is in rank 0's shard 2
    prepare_tokens([corpus], out, wav2vec = tokenizers[0], codec = tokenizers[1], shard_size = 2, progress = False,
                   num_processes = 2, process_index = 1)
    assert sorted(p.name for p in out.glob('shard-*')) == ['shard-00001', 'shard-00003']
    prepare(corpus, out, tokenizers, num_processes = 2, process_index = 0)
    assert folder_bytes(out) == folder_bytes(shards)


def test_interrupted_run_resumes_to_the_identical_result(shards, corpus, tokenizers, tmp_path, monkeypatch):
    from audiolm_pytorch import tokens_writer
    out = tmp_path / 'resumed'
    calls, real = [], tokens_writer._Tokenizer.__call__

    def failing(self, path):
        calls.append(path)
        if len(calls) == 4:           # the second file of the second shard: a half-written shard exists
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(tokens_writer._Tokenizer, '__call__', failing)
    with pytest.raises(KeyboardInterrupt):
        tokens_writer.prepare_tokens([corpus], out, wav2vec = tokenizers[0], codec = tokenizers[1], shard_size = 2,
                                     progress = False)
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith('.')) == ['shard-00000']
    assert any(p.name.startswith('.tmp-shard-00001') for p in out.iterdir())
    done = (out / 'shard-00000' / 'codes.npy').stat().st_mtime_ns
    monkeypatch.setattr(tokens_writer._Tokenizer, '__call__', real)
    calls.clear()
    result = prepare(corpus, out, tokenizers)
    assert result['written'] == 3 and (out / 'shard-00000' / 'codes.npy').stat().st_mtime_ns == done
    assert folder_bytes(out) == folder_bytes(shards)


KILL_SCRIPT = '''
import os, signal, sys, torch
from audiolm_pytorch import tokens_writer
from audiolm_pytorch.semantic.spectral import SpectralKmeansTokenizer
from audiolm_pytorch.codecs.soundstream import SoundStream
real = tokens_writer._write_shard
def write_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)          # killed right after the first shard, no cleanup at all
tokens_writer._write_shard = write_then_die
tokens_writer.prepare_tokens([sys.argv[1]], sys.argv[2], shard_size = 2, progress = False,
                             wav2vec = SpectralKmeansTokenizer.init_and_load_from(sys.argv[3]).eval(),
                             codec = SoundStream.init_and_load_from(sys.argv[4]).eval())
'''


def test_killed_process_resumes_to_the_identical_result(shards, corpus, tokenizers, tmp_path):
    wav2vec_path, codec_path = tmp_path / 'tok.pt', tmp_path / 'codec.pt'
    tokenizers[0].save(wav2vec_path)
    tokenizers[1].save(codec_path)
    out = tmp_path / 'killed'
    env = dict(os.environ, OMP_NUM_THREADS = '1', PYTHONPATH = str(Path(__file__).parent.parent))
    proc = subprocess.run([sys.executable, '-c', KILL_SCRIPT, str(corpus), str(out), str(wav2vec_path), str(codec_path)],
                          env = env, capture_output = True, text = True, timeout = 300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / 'shard-00000').is_dir() and not (out / 'shard-00001').exists()
    result = prepare(corpus, out, tokenizers)
    assert result['written'] == 3
    assert folder_bytes(out) == folder_bytes(shards)


def test_resuming_with_another_codec_or_inputs_is_refused(shards, corpus, tokenizers, tmp_path):
    from audiolm_pytorch.tokens_writer import prepare_tokens
    torch.manual_seed(1)
    other_codec = tiny_soundstream().eval()
    with pytest.raises(ValueError, match = 'codec given is not the one that wrote the tokens'):
        prepare_tokens([corpus], shards, wav2vec = tokenizers[0], codec = other_codec, shard_size = 2, progress = False)
    with pytest.raises(ValueError, match = 'shard_size'):
        prepare_tokens([corpus], shards, wav2vec = tokenizers[0], codec = tokenizers[1], shard_size = 3, progress = False)
    with pytest.raises(ValueError, match = 'input files'):
        prepare_tokens([corpus / NAMES[0]], shards, wav2vec = tokenizers[0], codec = tokenizers[1], shard_size = 2,
                       progress = False)


def test_trainers_refuse_tokens_of_another_tokenizer_or_vocabulary(shards, tokenizers, tmp_path):
    from audiolm_pytorch import FineTransformer, FineTransformerTrainer, SemanticTransformer, SemanticTransformerTrainer
    common = dict(tokens = shards, batch_size = 2, num_train_steps = 1, results_folder = tmp_path / 'r',
                  progress_bar = False, force_clear_prev_results = True)
    other = copy.deepcopy(tokenizers[0])
    with torch.no_grad():
        next(t for t in other.state_dict().values() if t.is_floating_point()).add_(0.01)
    with pytest.raises(ValueError, match = 'semantic tokenizer given is not the one that wrote the tokens'):
        SemanticTransformerTrainer(SemanticTransformer(num_semantic_tokens = 16, **TINY_LM), other, **common)
    with pytest.raises(ValueError, match = 'codebook_size=16 .* 32 semantic tokens'):
        SemanticTransformerTrainer(SemanticTransformer(num_semantic_tokens = 32, **TINY_LM), **common)
    with pytest.raises(ValueError, match = 'codebook_size=32 .* codebook_size=64'):
        FineTransformerTrainer(FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 64,
                                               **TINY_LM), **common)
    with pytest.raises(ValueError, match = 'pass tokens= or folder='):
        SemanticTransformerTrainer(SemanticTransformer(num_semantic_tokens = 16, **TINY_LM), folder = shards, **common)


def test_prepare_command(corpus, tokenizers, tmp_path, capsys):
    from audiolm_pytorch.cli import main
    tokenizers[0].save(tmp_path / 'tok.pt')
    tokenizers[1].save(tmp_path / 'codec.pt')
    out = tmp_path / 'cli_tokens'
    args = ['prepare', str(corpus), '--out', str(out), '--wav2vec', str(tmp_path / 'tok.pt'), '--codec',
            str(tmp_path / 'codec.pt'), '--shard-size', '4', '--no-progress', '--device', 'cpu']
    from audiolm_pytorch.data import SkippedAudioWarning
    with pytest.warns(SkippedAudioWarning):
        assert main(args) == 0
    assert '2/2 shards of 7 files (2 written' in capsys.readouterr().out
    assert main(args) == 0 and '(0 written' in capsys.readouterr().out       # finished: nothing redone
    assert main(['prepare', str(corpus), '--out', str(tmp_path / 'x')]) == 2  # no tokenizer: usage error
    # `audiolm train` on the token folder: no tokenizer or codec in the config, sizes read from tokens.json
    for stage in ('semantic', 'coarse', 'fine'):
        assert main(['train', stage, '--data', str(out), '--results', str(tmp_path / stage), '--cpu', '--no-progress',
                     '--set', 'trainer.num_train_steps=2', 'trainer.batch_size=2', 'trainer.save_model_every=1',
                     'trainer.data_max_length_seconds=0.2', 'model.dim=32', 'model.depth=1']) == 0, stage
        assert (tmp_path / stage / f'{stage}.transformer.1.pt').is_file()


# ------------------------------------------------------------------------------------------------------------
# training from shards = training from audio
# ------------------------------------------------------------------------------------------------------------

def _losses(trainer, steps = 2):
    losses = []
    for step in range(steps):
        torch.manual_seed(100 + step)           # the same forgetful-causal masks on both paths
        losses.append(trainer.train_step()['loss'])
    return losses


@pytest.mark.parametrize('stage', ['semantic', 'coarse', 'fine', 'soundstorm'])
def test_loss_from_shards_equals_loss_from_audio(stage, shards, corpus, tokenizers, tmp_path):
    from audiolm_pytorch import CoarseTransformerTrainer, FineTransformerTrainer, SemanticTransformerTrainer
    from audiolm_pytorch.soundstorm import ConformerWrapper, SoundStorm
    from audiolm_pytorch.trainers.soundstorm import SoundStormTrainer
    wav2vec, codec = tokenizers
    torch.manual_seed(0)
    semantic, coarse, fine = stages(wav2vec)
    common = dict(batch_size = 1, num_train_steps = 2, valid_frac = 0., progress_bar = False,
                  force_clear_prev_results = True, save_results_every = 1000, save_model_every = 1000)
    audio = tmp_path / 'audio'                         # the same readable files (the trainers' audio path would
    audio.mkdir()                                      # otherwise replace the broken one by its neighbour)
    for name in NAMES:
        (audio / name).symlink_to(ASSETS / name)
    (audio / 'z_short.wav').symlink_to(corpus / 'sub' / 'short.wav')   # sorts last, as sub/short.wav
    if stage == 'soundstorm':
        net = ConformerWrapper(codebook_size = 32, num_quantizers = 4, conformer = dict(dim = 32, depth = 1, heads = 2, dim_head = 16))
        model = SoundStorm(net, num_semantic_token_ids = 16)
        make = lambda m, **kw: SoundStormTrainer(m, **kw)

        def with_audio(m):
            attached = SoundStorm(m.net, num_semantic_token_ids = 16, soundstream = codec, wav2vec = wav2vec)
            attached.semantic_token_emb.load_state_dict(m.semantic_token_emb.state_dict())
            return attached, {}
    else:
        model = dict(semantic = semantic, coarse = coarse, fine = fine)[stage]
        cls = dict(semantic = SemanticTransformerTrainer, coarse = CoarseTransformerTrainer, fine = FineTransformerTrainer)[stage]
        make = cls
        with_audio = lambda m: (m, dict(semantic = dict(wav2vec = wav2vec), coarse = dict(codec = codec, wav2vec = wav2vec),
                                        fine = dict(codec = codec))[stage])
    # the shards hold the tokens in file-name order, audio folders list files the same way; one file per batch
    shard_model = copy.deepcopy(model)
    from_tokens = make(shard_model, tokens = shards, results_folder = tmp_path / 'a', **common)
    audio_model, tokenizer_kwargs = with_audio(copy.deepcopy(model))
    from_audio = make(audio_model, folder = audio, results_folder = tmp_path / 'b', **tokenizer_kwargs, **common)
    assert from_tokens.train_module is not from_audio.train_module
    assert _losses(from_tokens) == pytest.approx(_losses(from_audio), rel = 1e-5)


LAUNCHED_SCRIPT = '''
import sys
from audiolm_pytorch.tokens_writer import prepare_tokens
from audiolm_pytorch.semantic.spectral import SpectralKmeansTokenizer
from audiolm_pytorch.codecs.soundstream import SoundStream
result = prepare_tokens([sys.argv[1]], sys.argv[2], shard_size = 2, progress = False,
                        wav2vec = SpectralKmeansTokenizer.init_and_load_from(sys.argv[3]).eval(),
                        codec = SoundStream.init_and_load_from(sys.argv[4]).eval())
import os
from pathlib import Path
(Path(sys.argv[2]).parent / f'rank{os.environ["RANK"]}.written').write_text(str(result['written']))
'''


@pytest.mark.multiprocess
def test_accelerate_launch_two_processes_write_the_shards_of_one(shards, corpus, tokenizers, tmp_path):
    launcher = Path(sys.executable).with_name('accelerate')
    if not launcher.exists():
        pytest.skip('the accelerate launcher is not installed')
    tokenizers[0].save(tmp_path / 'tok.pt')
    tokenizers[1].save(tmp_path / 'codec.pt')
    script = tmp_path / 'launched.py'
    script.write_text(LAUNCHED_SCRIPT)
    out = tmp_path / 'two'
    # as tests/trainers/test_multiprocess.py: the torchrun launcher with ACCELERATE_USE_CPU = two gloo processes
    env = dict(os.environ, OMP_NUM_THREADS = '1', ACCELERATE_USE_CPU = '1', PYTHONPATH = str(Path(__file__).parent.parent))
    cmd = [str(launcher), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision',
           'no', '--dynamo_backend', 'no', '--main_process_port', str(29600 + os.getpid() % 1000), str(script),
           str(corpus), str(out), str(tmp_path / 'tok.pt'), str(tmp_path / 'codec.pt')]
    proc = subprocess.run(cmd, env = env, capture_output = True, text = True, timeout = 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f'rank{r}.written').read_text() for r in range(2)] == ['2', '2']   # two shards each
    assert folder_bytes(out) == folder_bytes(shards)


def test_file_end_flags_reach_a_wrapper_that_takes_them(shards, tmp_path, monkeypatch):
    """Stage wrappers taking ``file_end`` (the EOS-target flag) get the dataset's per-item flags, as (b,) bools."""
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerTrainer
    from audiolm_pytorch.lm.semantic import SemanticTransformerWrapper
    seen, original = [], SemanticTransformerWrapper.forward

    def forward(self, *, semantic_token_ids = None, file_end = None, **kwargs):
        seen.append((semantic_token_ids.clone(), file_end))
        return original(self, semantic_token_ids = semantic_token_ids, **kwargs)

    monkeypatch.setattr(SemanticTransformerWrapper, 'forward', forward)
    trainer = SemanticTransformerTrainer(SemanticTransformer(num_semantic_tokens = 16, **TINY_LM), tokens = shards,
                                         batch_size = 3, data_max_length_seconds = 0.3, num_train_steps = 8,
                                         valid_frac = 0., results_folder = tmp_path, progress_bar = False,
                                         force_clear_prev_results = True, save_results_every = 1000)
    for _ in range(8):
        trainer.train_step()
    flags = torch.cat([file_end for _, file_end in seen])
    assert flags.dtype == torch.bool and all(f.shape == (ids.shape[0],) for ids, f in seen)
    assert flags.any() and not flags.all()
    for ids, file_end in seen:                 # padded rows (the 0.1 s clip) always hold their file's end
        padded = (ids == -1).any(dim = -1)
        assert bool(file_end[padded].all())
