"""Regression tests for silent-wrong-result / data-loss bugs found in review of checkpoints, the command line and
the semantic tokenizers (each test fails on the code before its fix)."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

ASSETS = Path(__file__).parent / 'assets'


def _umask() -> int:
    from audiolm_pytorch.checkpoint import _current_umask
    return _current_umask()


def tiny_codec(codebook_size = 16):
    from audiolm_pytorch import SoundStream
    torch.manual_seed(0)
    return SoundStream(codebook_size = codebook_size, rq_num_quantizers = 2, channels = 4, strides = (4, 5),
                       channel_mults = (2, 4), codebook_dim = 8, use_local_attn = False, discr_multi_scales = (),
                       rq_kwargs = dict(kmeans_init = False), multi_spectral_window_powers_of_two = (6, 7),
                       multi_spectral_n_mels = 16).eval()


# ----------------------------------------------------------------------------------------------------------
# checkpoint.py: atomic writes created every checkpoint with mkstemp's 0o600 permissions
# ----------------------------------------------------------------------------------------------------------

def test_atomic_writes_give_ordinary_file_permissions(tmp_path):
    from audiolm_pytorch import SpectralKmeansTokenizer
    from audiolm_pytorch.checkpoint import atomic_save
    expected = 0o666 & ~_umask()
    model = SpectralKmeansTokenizer(codebook_size = 4, n_mels = 8)
    for path in (atomic_save({'model': {}}, tmp_path / 'a.pt'), model.save(tmp_path / 'm.pt'),
                 model.save(tmp_path / 'm.safetensors')):
        assert stat.S_IMODE(os.stat(path).st_mode) == expected, path

    existing = tmp_path / 'shared.pt'
    existing.write_bytes(b'old')
    os.chmod(existing, 0o640)                     # overwriting keeps the file's own permissions
    model.save(existing)
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640
    assert SpectralKmeansTokenizer.init_and_load_from(existing).codebook_size == 4


# ----------------------------------------------------------------------------------------------------------
# cli_config.py: YAML 1.1 implicit scalars silently changed values
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# cli / cli_config: options and sections that were silently ignored
# ----------------------------------------------------------------------------------------------------------

def test_codec_and_tokenizer_options_that_cannot_apply_are_errors(tmp_path, capsys, caplog):
    from audiolm_pytorch import SpectralKmeansTokenizer
    from audiolm_pytorch.cli import main
    codec_path = tiny_codec().save(tmp_path / 'codec.pt')
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


# ----------------------------------------------------------------------------------------------------------
# cli tokenize: a third input with the same file name overwrote the second one's codes
# ----------------------------------------------------------------------------------------------------------

def test_tokenize_never_overwrites_codes_of_same_named_inputs(tmp_path):
    from audiolm_pytorch.cli import main, read_codes
    codec = tiny_codec()
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


# ----------------------------------------------------------------------------------------------------------
# cli decode: codes of another codec were decoded into noise without a word
# ----------------------------------------------------------------------------------------------------------

def test_decode_refuses_codes_written_by_another_codec(tmp_path, capsys):
    from audiolm_pytorch.cli import main
    small, big = tiny_codec(16), tiny_codec(32)
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


# ----------------------------------------------------------------------------------------------------------
# semantic: centroids fitted on another layer (same dimension) were accepted silently
# ----------------------------------------------------------------------------------------------------------

def test_kmeans_of_another_layer_or_transposed_is_refused(tmp_path):
    from audiolm_pytorch import HubertWithKmeans
    from audiolm_pytorch.semantic.kmeans import KMeans, KMeansFileError
    ckpt = ASSETS / 'fairseq_hubert_tiny' / 'tiny_hubert.pt'                 # 64-dim features, 2 layers
    path = KMeans(torch.randn(16, 64)).save(tmp_path / 'km.safetensors', {'output_layer': 2})
    assert HubertWithKmeans(ckpt, path, output_layer = 2).codebook_size == 16
    with pytest.raises(KMeansFileError, match = 'output_layer=2'):
        HubertWithKmeans(ckpt, path, output_layer = 1)

    np.save(tmp_path / 'transposed.npy', np.random.randn(64, 16).astype(np.float32))   # (dim, clusters)
    with pytest.raises(KMeansFileError, match = 'transposed'):
        HubertWithKmeans(ckpt, tmp_path / 'transposed.npy', output_layer = 2)


def test_fit_kmeans_on_a_module_records_its_layer(tmp_path):
    from audiolm_pytorch import HubertWithKmeans
    from audiolm_pytorch.semantic.kmeans import KMeansFileError
    from audiolm_pytorch.semantic.kmeans_fit import fit_kmeans
    ckpt = ASSETS / 'fairseq_hubert_tiny' / 'tiny_hubert.pt'
    extractor = HubertWithKmeans(ckpt, None, output_layer = 1)
    result = fit_kmeans(extractor, data = [ASSETS / 'speech_0_16k.wav'], clusters = 4, out = tmp_path / 'km.safetensors',
                        batch_size = 64, epochs = 1, device = 'cpu', max_frames = 300)
    assert result.config['output_layer'] == 1
    with pytest.raises(KMeansFileError, match = 'output_layer=1'):
        HubertWithKmeans(ckpt, result.path, output_layer = 2)


# ----------------------------------------------------------------------------------------------------------
# checkpoint.py: load() crashed for models built with a non-data argument; int dict keys came back as strings
# ----------------------------------------------------------------------------------------------------------

from torch import nn  # noqa: E402

from audiolm_pytorch.checkpoint import Checkpointable  # noqa: E402


class ReviewToy(Checkpointable, nn.Module):
    def __init__(self, *, dim = 2, activation = None, table = None):
        super().__init__()
        self.proj = nn.Linear(dim, dim)


def test_model_with_a_module_argument_can_still_load_weights(tmp_path):
    saved = ReviewToy(dim = 3)
    with torch.no_grad():
        saved.proj.weight.normal_()
    path = saved.save(tmp_path / 'toy.pt')
    custom = ReviewToy(dim = 3, activation = nn.ReLU())     # cannot be saved (TypeError), but must load
    custom.load(path)
    assert torch.equal(custom.proj.weight, saved.proj.weight)
    with pytest.raises(TypeError, match = 'activation'):
        custom.save(tmp_path / 'custom.pt')


def test_integer_dict_keys_fail_at_save_instead_of_becoming_strings(tmp_path):
    model = ReviewToy(table = {1: 'a', 2: 'b'})
    with pytest.raises(TypeError, match = "'table'.*keys must be strings"):
        model.save(tmp_path / 'toy.pt')
    assert not list(tmp_path.iterdir())
    rebuilt = ReviewToy.init_and_load_from(ReviewToy(table = {'x': [1, 2]}).save(tmp_path / 'ok.pt'))
    assert rebuilt.config['table'] == {'x': [1, 2]}
