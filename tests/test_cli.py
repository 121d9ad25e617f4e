"""The ``audiolm`` command line, run in subprocesses: help everywhere, exit codes 0 / 1 / 2 with one-line messages,
codec round trips on a shipped clip (tokenize + decode == reconstruct), training, k-means fitting, generation."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soundfile as sf
import torch

from tests.helpers import tiny_soundstream as shared_tiny_soundstream

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


def tiny_soundstream(codebook_size = 16, rq_num_quantizers = 4):
    """Deterministic codes: seeded, random codebooks (no lazy k-means init, which would run on the first input and
    make codes depend on the RNG), eval mode."""
    torch.manual_seed(0)
    return shared_tiny_soundstream(codebook_size = codebook_size, rq_num_quantizers = rq_num_quantizers, channels = 4,
                                   strides = (4, 5), codebook_dim = 8, use_local_attn = False,
                                   rq_kwargs = dict(kmeans_init = False),
                                   multi_spectral_window_powers_of_two = (6, 7)).eval()


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


# ---- YAML scalars, options that cannot apply, same-named inputs, codes of another codec ----------------------------

@pytest.mark.parametrize('text, value', [
    ('no', 'no'), ('off', 'off'), ('yes', 'yes'), ('1:30', '1:30'), ('0123', 123), ('2024-01-01', '2024-01-01'),
    ('1.5e4', 15000.), ('1e-4', 1e-4), ('3', 3), ('1_000', 1000), ('true', True), ('False', False), ('.5', .5),
    ('[2, 4.0]', [2, 4.]), ('null', None), ('run_a', 'run_a'),
])
def test_override_values_follow_yaml_core_schema(text, value):
    from audiolm_pytorch.cli_config import apply_overrides
    config = apply_overrides({'trainer': {'lr': 1.}}, [f'trainer.x={text}', 'model.nested.key=2'])
    assert config['trainer']['x'] == value and type(config['trainer']['x']) is type(value)
    assert config['model'] == {'nested': {'key': 2}} and config['trainer']['lr'] == 1.


def test_config_file_scalars_are_not_reinterpreted(tmp_path):
    from audiolm_pytorch.cli_config import load_config_file
    (tmp_path / 'c.yaml').write_text('trainer:\n  run_name: no\n  lr: 2.5e3\n  started: 2024-01-01\n  every: 0100\n')
    assert load_config_file(tmp_path / 'c.yaml') == {
        'trainer': {'run_name': 'no', 'lr': 2500., 'started': '2024-01-01', 'every': 100}}


def test_codec_and_tokenizer_options_that_cannot_apply_are_errors(tmp_path, capsys, caplog):
    from audiolm_pytorch import SpectralKmeansTokenizer
    from audiolm_pytorch.cli import main
    codec_path = tiny_soundstream(rq_num_quantizers = 2).save(tmp_path / 'codec.pt')
    tokenizer_path = SpectralKmeansTokenizer(codebook_size = 4, n_mels = 8).save(tmp_path / 'tok.pt')
    (tmp_path / 'data').mkdir()

    config = tmp_path / 'audiolm.yaml'
    config.write_text('codec: {kind: soundstream, path: codec.pt, bandwidth: 6.0}\n'
                      'semantic: a.pt\ncoarse: b.pt\nfine: c.pt\n')
    from audiolm_pytorch.cli_config import ConfigError, load_codec, load_semantic_tokenizer
    with pytest.raises(ConfigError, match = 'bandwidth'):
        load_codec({'kind': 'soundstream', 'path': str(codec_path), 'bandwidth': 6.0})
    with pytest.raises(ConfigError, match = 'output_layer'):
        load_semantic_tokenizer({'kind': 'spectral', 'path': str(tokenizer_path), 'output_layer': 9})
    assert load_codec({'kind': 'soundstream', 'path': str(codec_path)}).codebook_size == 16

    # a section the stage does not read (codec for soundstream) is reported; a malformed section is a usage error
    code = main(['train', 'soundstream', '--data', str(tmp_path / 'data'), '--set', f'codec={codec_path}',
                 'model=[1, 2]'])
    assert code == 2 and 'mapping' in capsys.readouterr().err
    assert "does not use the config section(s) ['codec']" in caplog.text


def test_tokenize_never_overwrites_codes_of_same_named_inputs(tmp_path):
    from audiolm_pytorch.cli import main, read_codes
    codec = tiny_soundstream(rq_num_quantizers = 2)
    codec_path = codec.save(tmp_path / 'codec.pt')
    torch.manual_seed(1)
    inputs = []
    for top in ('a', 'b', 'c'):
        folder = tmp_path / 'in' / top / 'x'
        folder.mkdir(parents = True)
        wave = torch.randn(2000) * 0.3
        soundfile.write(folder / 'clip.wav', wave.numpy(), codec.target_sample_hz, subtype = 'FLOAT')
        inputs.append((folder / 'clip.wav', wave))

    out = tmp_path / 'codes'
    assert main(['tokenize', '--codec', str(codec_path), '--out', str(out), '--no-progress',
                 *[str(p) for p, _ in inputs]]) == 0
    written = sorted(out.iterdir())
    assert len(written) == 3
    expected = [codec.tokenize(w[None])[0].long() for _, w in inputs]
    found = [read_codes(p)[0] for p in written]
    for codes in expected:   # every input's codes survive in some file
        assert any(torch.equal(codes, f) for f in found)


def test_decode_refuses_codes_written_by_another_codec(tmp_path, capsys):
    from audiolm_pytorch.cli import main
    small, big = tiny_soundstream(16, 2), tiny_soundstream(32, 2)
    small_path, big_path = small.save(tmp_path / 'small.pt'), big.save(tmp_path / 'big.pt')
    wave = torch.randn(1, 2000) * 0.3
    soundfile.write(tmp_path / 'in.wav', wave[0].numpy(), 16000, subtype = 'FLOAT')

    assert main(['tokenize', '--codec', str(small_path), '--out', str(tmp_path / 'codes'), '--format',
                 'safetensors', str(tmp_path / 'in.wav')]) == 0
    codes_file = tmp_path / 'codes' / 'in.safetensors'
    assert main(['decode', '--codec', str(big_path), str(codes_file), str(tmp_path / 'x.wav')]) == 1
    assert 'codebook_size=16' in capsys.readouterr().err and not (tmp_path / 'x.wav').exists()
    assert main(['decode', '--codec', str(small_path), str(codes_file), str(tmp_path / 'ok.wav')]) == 0

    np.save(tmp_path / 'big.npy', np.full((5, 2), 20, dtype = np.int64))   # codes beyond a 16-entry codebook
    assert main(['decode', '--codec', str(small_path), str(tmp_path / 'big.npy'), str(tmp_path / 'y.wav')]) == 1
    assert 'outside' in capsys.readouterr().err
    np.save(tmp_path / 'deep.npy', np.zeros((5, 3), dtype = np.int64))    # 3 levels for a 2-level codec
    assert main(['decode', '--codec', str(small_path), str(tmp_path / 'deep.npy'), str(tmp_path / 'z.wav')]) == 1
    assert 'levels' in capsys.readouterr().err


def test_generate_sampling_defaults_are_the_stages_own():
    """No --temperature / --filter-thres / --cond-scale: AudioLM gets None, i.e. each stage's default
    (semantic 1.0, coarse 0.95, fine 0.4); a given value reaches every stage."""
    from audiolm_pytorch.cli import build_parser
    args = build_parser().parse_args(['generate', '--audiolm', 'a.yaml', '--out', 'o.wav'])
    assert (args.temperature, args.filter_thres, args.cond_scale) == (None, None, None)
    args = build_parser().parse_args(['generate', '--audiolm', 'a.yaml', '--out', 'o.wav', '--temperature', '0.7'])
    assert args.temperature == 0.7
