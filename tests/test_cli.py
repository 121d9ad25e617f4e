"""The ``audiolm`` command line, run in subprocesses: help everywhere, exit codes 0 / 1 / 2 with one-line messages,
codec round trips on a shipped clip (tokenize + decode == reconstruct), training, k-means fitting, generation."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ASSETS = Path(__file__).resolve().parents[1] / 'audiolm_pytorch' / 'assets'
CLIP = ASSETS / 'speech_0_16k.wav'
COMMANDS = ('demo', 'train', 'tokenize', 'decode', 'reconstruct', 'generate', 'fit-kmeans')


def run_cli(*args, cwd = None, module = False):
    env = dict(os.environ, OMP_NUM_THREADS = '1', PYTHONWARNINGS = 'ignore')
    command = [sys.executable, '-m', 'audiolm_pytorch.cli'] if module else [_console_script()]
    return subprocess.run([*command, *map(str, args)], capture_output = True, text = True, cwd = cwd, env = env,
                          timeout = 300)


def _console_script() -> str:
    script = Path(sys.executable).with_name('audiolm')
    return str(script) if script.exists() else 'audiolm'


def tiny_soundstream():
    from audiolm_pytorch import SoundStream
    torch.manual_seed(0)
    # random codebooks (no lazy k-means init, which would run on the first input and make codes RNG-dependent)
    codec = SoundStream(codebook_size = 16, rq_num_quantizers = 4, channels = 4, strides = (4, 5), channel_mults = (2, 4),
                        codebook_dim = 8, use_local_attn = False, discr_multi_scales = (), rq_kwargs = dict(kmeans_init = False),
                        multi_spectral_window_powers_of_two = (6, 7), multi_spectral_n_mels = 16)
    return codec.eval()


@pytest.fixture(scope = 'module')
def workdir(tmp_path_factory):
    """Tiny checkpoints of every stage, an AudioLM config and a folder of shipped clips."""
    from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer, SpectralKmeansTokenizer
    root = tmp_path_factory.mktemp('cli')
    data = root / 'data'
    data.mkdir()
    for name in ('speech_0_16k.wav', 'music_0_16k.wav', 'music_2_16k.wav'):
        (data / name).symlink_to(ASSETS / name)

    codec = tiny_soundstream()
    codec.save(root / 'codec.pt')
    tokenizer = SpectralKmeansTokenizer(codebook_size = 8, n_mels = 16)
    tokenizer.fit(sorted(data.iterdir()), epochs = 2)
    tokenizer.save(root / 'tokenizer.pt')
    tiny = dict(dim = 16, depth = 1, heads = 2, dim_head = 8)
    SemanticTransformer(num_semantic_tokens = 8, **tiny).save(root / 'semantic.pt')
    CoarseTransformer(num_semantic_tokens = 8, codebook_size = 16, num_coarse_quantizers = 2, **tiny).save(root / 'coarse.pt')
    FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **tiny).save(root / 'fine.pt')
    FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 32, **tiny).save(root / 'fine32.pt')
    (root / 'configs').mkdir()
    (root / 'configs' / 'audiolm.yaml').write_text(   # paths relative to the config's folder
        'codec: ../codec.pt\nwav2vec: {kind: spectral, path: ../tokenizer.pt}\n'
        'semantic: ../semantic.pt\ncoarse: ../coarse.pt\nfine: ../fine.pt\n')
    return root


# ---------------------------------------------------------------------------------------------------------
# help and usage errors (no torch import needed: these are fast)
# ---------------------------------------------------------------------------------------------------------

def test_help_everywhere():
    result = run_cli('--help')
    assert result.returncode == 0 and 'usage: audiolm' in result.stdout
    for command in COMMANDS:
        assert command in result.stdout
    for command in COMMANDS:
        result = run_cli(command, '--help')
        assert result.returncode == 0, result.stderr
        assert f'usage: audiolm {command}' in result.stdout
    result = run_cli('--help', module = True)   # python -m audiolm_pytorch.cli (what accelerate launch -m runs)
    assert result.returncode == 0 and 'usage: audiolm' in result.stdout


@pytest.mark.parametrize('args', [
    (),                                                    # no command
    ('frobnicate',),                                       # unknown command
    ('reconstruct', '--codec', 'c.pt', 'only_one.wav'),    # missing positional
    ('train', 'wavenet', '--data', '.'),                   # unknown stage
    ('demo', '--minutes', '-1'),                           # bad number
    ('train', 'soundstream', '--data', '.', '--set', 'no_equals_sign'),   # malformed override
])
def test_usage_errors_exit_2(args):
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert 'error' in result.stderr and 'Traceback' not in result.stderr


def test_bad_config_key_exits_2(workdir, tmp_path):
    result = run_cli('train', 'soundstream', '--data', workdir / 'data', '--results', tmp_path,
                     '--set', 'model.codebook_size=16', 'model.no_such_argument=3')
    assert result.returncode == 2
    assert 'no_such_argument' in result.stderr and 'Traceback' not in result.stderr


# ---------------------------------------------------------------------------------------------------------
# runtime failures: exit 1, one clear line, traceback only with --debug
# ---------------------------------------------------------------------------------------------------------

def test_missing_and_unreadable_files_exit_1(workdir, tmp_path):
    result = run_cli('reconstruct', '--codec', tmp_path / 'missing.pt', CLIP, tmp_path / 'out.wav')
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'codec not found' in lines[0] and 'missing.pt' in lines[0]

    bad = tmp_path / 'bad.wav'
    bad.write_bytes(b'RIFF not really a wave file')
    result = run_cli('reconstruct', '--codec', workdir / 'codec.pt', bad, tmp_path / 'out.wav')
    assert result.returncode == 1
    assert 'bad.wav' in result.stderr and 'Traceback' not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = run_cli('reconstruct', '--debug', '--codec', workdir / 'codec.pt', bad, tmp_path / 'out.wav')
    assert result.returncode == 1 and 'Traceback' in result.stderr


def test_incompatible_checkpoint_exits_1(workdir, tmp_path):
    result = run_cli('reconstruct', '--codec', workdir / 'semantic.pt', CLIP, tmp_path / 'out.wav')
    assert result.returncode == 1
    assert 'SemanticTransformer' in result.stderr and 'not a codec' in result.stderr
    assert 'Traceback' not in result.stderr


# ---------------------------------------------------------------------------------------------------------
# codec round trips
# ---------------------------------------------------------------------------------------------------------

def test_reconstruct_equals_tokenize_then_decode(workdir, tmp_path):
    from audiolm_pytorch import SoundStream
    codec = SoundStream.init_and_load_from(workdir / 'codec.pt')
    hop = codec.downsample_factor
    samples = sf.info(str(CLIP)).frames

    result = run_cli('reconstruct', '--codec', workdir / 'codec.pt', CLIP, tmp_path / 'recon.wav')
    assert result.returncode == 0, result.stderr
    recon, rate = sf.read(str(tmp_path / 'recon.wav'), dtype = 'int16')
    assert rate == 16000 and len(recon) == samples // hop * hop

    result = run_cli('tokenize', '--codec', workdir / 'codec.pt', CLIP, ASSETS / 'music_0_16k.wav', '--out', tmp_path / 'codes')
    assert result.returncode == 0, result.stderr
    codes = np.load(tmp_path / 'codes' / 'speech_0_16k.npy')
    assert codes.shape == (samples // hop, 4) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 16
    assert (tmp_path / 'codes' / 'music_0_16k.npy').is_file()
    # the same codes as the library computes in-process
    from audiolm_pytorch.audio import load_audio
    expected = codec.tokenize(load_audio(CLIP).wave)[0].numpy()
    assert np.array_equal(codes, expected)

    result = run_cli('decode', '--codec', workdir / 'codec.pt', tmp_path / 'codes' / 'speech_0_16k.npy', tmp_path / 'decoded.wav')
    assert result.returncode == 0, result.stderr
    decoded, _ = sf.read(str(tmp_path / 'decoded.wav'), dtype = 'int16')
    assert np.array_equal(decoded, recon)


def test_fewer_quantizers_and_safetensors(workdir, tmp_path):
    from safetensors.torch import load_file
    from audiolm_pytorch import SoundStream
    from audiolm_pytorch.cli import main
    result = run_cli('tokenize', '--codec', workdir / 'codec.pt', CLIP, '--out', tmp_path, '--format', 'safetensors',
                     '--num-quantizers', '2')
    assert result.returncode == 0, result.stderr
    codes = load_file(str(tmp_path / 'speech_0_16k.safetensors'))['codes']
    codec = SoundStream.init_and_load_from(workdir / 'codec.pt')
    from audiolm_pytorch.audio import load_audio
    assert torch.equal(codes, codec.tokenize(load_audio(CLIP).wave, num_quantizers = 2)[0])   # the first 2 levels
    # decode (in-process: the same entry point) gives the codec's decoding of those codes
    assert main(['decode', '--codec', str(workdir / 'codec.pt'), str(tmp_path / 'speech_0_16k.safetensors'),
                 str(tmp_path / 'd2.wav'), '--device', 'cpu']) == 0
    decoded, _ = sf.read(str(tmp_path / 'd2.wav'), dtype = 'float32')
    expected = codec.decode_from_codebook_indices(codes[None]).reshape(-1).detach().numpy()
    assert np.abs(decoded - np.clip(expected, -1, 1)).max() < 1e-4          # 16-bit PCM rounding


# ---------------------------------------------------------------------------------------------------------
# train / fit-kmeans / generate
# ---------------------------------------------------------------------------------------------------------

def test_train_soundstream_writes_checkpoint(workdir, tmp_path):
    from audiolm_pytorch import SoundStream
    config = Path(__file__).resolve().parents[1] / 'examples' / 'configs' / 'soundstream.yaml'
    result = run_cli('train', 'soundstream', '--data', workdir / 'data', '--config', config, '--results', tmp_path / 'r',
                     '--no-progress', '--set', 'trainer.num_train_steps=2', 'trainer.batch_size=2',
                     'trainer.data_max_length_seconds=0.1', 'trainer.save_results_every=1000', 'trainer.lr=1e-3',
                     'model.channels=4', 'model.codebook_dim=8', 'model.codebook_size=16', 'model.rq_num_quantizers=2',
                     'model.strides=[4,5]', 'model.channel_mults=[2,4]', 'model.use_local_attn=false',
                     'model.discr_multi_scales=[1]', 'model.multi_spectral_window_powers_of_two=[6,7]')
    assert result.returncode == 0, result.stderr
    checkpoints = sorted(p.name for p in (tmp_path / 'r').glob('*.pt'))
    assert checkpoints == ['soundstream.0.pt', 'soundstream.1.pt']          # step 0 by the trainer, the last by the CLI
    codec = SoundStream.init_and_load_from(tmp_path / 'r' / 'soundstream.1.pt')
    assert codec.num_quantizers == 2 and codec.codebook_size == 16 and codec.downsample_factor == 20


def test_fit_kmeans_writes_centroids(workdir, tmp_path):
    from audiolm_pytorch import SpectralKmeansTokenizer
    result = run_cli('fit-kmeans', '--tokenizer', 'spectral', '--data', workdir / 'data', '--clusters', '6',
                     '--out', tmp_path / 'tok.pt', '--epochs', '2')
    assert result.returncode == 0, result.stderr
    tokenizer = SpectralKmeansTokenizer.init_and_load_from(tmp_path / 'tok.pt')
    assert tokenizer.codebook_size == 6
    ids = tokenizer(torch.randn(1, 16000) * 0.1)
    assert ids.shape == (1, 50) and 0 <= ids.min() and ids.max() < 6
    result = run_cli('fit-kmeans', '--tokenizer', 'spectral', '--data', tmp_path / 'nowhere', '--clusters', '6',
                     '--out', tmp_path / 'tok2.pt')
    assert result.returncode == 1 and 'nowhere' in result.stderr


def test_generate_with_tiny_audiolm(workdir, tmp_path):
    config = workdir / 'configs' / 'audiolm.yaml'
    result = run_cli('generate', '--audiolm', config, '--prime', CLIP, '--out', tmp_path / 'out.wav',
                     '--max-length', '40', '--max-coarse-steps', '900', '--seed', '0', cwd = tmp_path)
    assert result.returncode == 0, result.stderr
    wave, rate = sf.read(str(tmp_path / 'out.wav'))
    assert rate == 16000 and len(wave) > 0 and len(wave) % 20 == 0 and np.isfinite(wave).all()

    result = run_cli('generate', '--audiolm', config, '--out', tmp_path / 'u.wav', '--max-length', '8',
                     '--batch-size', '2', '--set', f'fine={workdir / "fine32.pt"}')
    assert result.returncode == 1 and 'incompatible' in result.stderr and 'codebook_size' in result.stderr

    result = run_cli('generate', '--audiolm', config, '--out', tmp_path / 'u.wav', '--text', 'a dog barks')
    assert result.returncode == 1 and 'text' in result.stderr


@pytest.mark.parametrize('stage', ['semantic', 'coarse', 'fine'])
def test_train_transformer_stages_in_process(workdir, tmp_path, stage):
    """The same entry point in-process (cheap): each transformer stage trains from a config with codec / wav2vec."""
    from audiolm_pytorch.cli import main
    from audiolm_pytorch.lm.semantic import SemanticTransformer
    args = ['train', stage, '--data', str(workdir / 'data'), '--results', str(tmp_path), '--no-progress', '--cpu',
            '--set', 'trainer.num_train_steps=2', 'trainer.batch_size=2', 'trainer.data_max_length_seconds=0.5',
            'trainer.save_results_every=1000', 'model.dim=16', 'model.depth=1', 'model.heads=2', 'model.dim_head=8',
            f'codec={workdir / "codec.pt"}', f'wav2vec.path={workdir / "tokenizer.pt"}']
    if stage == 'fine':
        args.append('model.num_coarse_quantizers=2')
    if stage == 'semantic':
        args = [a for a in args if not a.startswith('codec=')]
    assert main(args) == 0
    name = f'{stage}.transformer'
    assert sorted(p.name for p in tmp_path.glob('*.pt')) == [f'{name}.0.pt', f'{name}.1.pt']
    if stage == 'semantic':
        assert SemanticTransformer.init_and_load_from(tmp_path / f'{name}.1.pt').num_semantic_tokens == 8
    if stage == 'fine':
        from audiolm_pytorch.lm.fine import FineTransformer
        fine = FineTransformer.init_and_load_from(tmp_path / f'{name}.1.pt')
        assert (fine.num_coarse_quantizers, fine.num_fine_quantizers, fine.codebook_size) == (2, 2, 16)


def test_train_needs_its_tokenizers(workdir, tmp_path):
    from audiolm_pytorch.cli import main
    assert main(['train', 'coarse', '--data', str(workdir / 'data'), '--results', str(tmp_path)]) == 2


def test_examples_and_configs_are_valid(tmp_path):
    """Every example script compiles and every example config parses into the sections `train` / `generate` read."""
    import py_compile
    from audiolm_pytorch.cli import GENERATE_KEYS, TRAIN_SECTIONS
    from audiolm_pytorch.cli_config import load_config_file
    examples = Path(__file__).resolve().parents[1] / 'examples'
    scripts = sorted(examples.glob('*.py'))
    assert {p.name for p in scripts} >= {'train_soundstream.py', 'train_semantic.py', 'train_coarse.py', 'train_fine.py',
                                         'end_to_end.py', 'hubert_kmeans_local.py', 'encodec_local.py'}
    for script in scripts:
        py_compile.compile(str(script), doraise = True, cfile = str(tmp_path / f'{script.stem}.pyc'))
    for stage in ('soundstream', 'semantic', 'coarse', 'fine'):
        config = load_config_file(examples / 'configs' / f'{stage}.yaml')
        assert set(config) <= set(TRAIN_SECTIONS) and isinstance(config['trainer']['lr'], float)
    assert set(load_config_file(examples / 'configs' / 'audiolm.yaml')) <= set(GENERATE_KEYS)
