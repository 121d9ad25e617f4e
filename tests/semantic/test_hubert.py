"""HubertWithKmeans: parity with genuine fairseq outputs (tests/assets/fairseq_hubert_tiny, see its README),
fairseq checkpoint variants read without fairseq, transformers directories, framing, padding and errors."""

import argparse
import copy
import pickle
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from audiolm_pytorch import HubertWithKmeans
from audiolm_pytorch.audio import resample
from audiolm_pytorch.semantic.base import SemanticTokenizer
from audiolm_pytorch.semantic.fairseq_checkpoint import (
    FairseqCheckpointError,
    FairseqDictionary,
    convert_state_dict,
    fairseq_configs,
    parse_conv_feature_layers,
    read_fairseq_checkpoint,
    transformers_config_from_fairseq,
)
from audiolm_pytorch.semantic.kmeans import KMeans, KMeansFileError
from tests.helpers import ASSETS, NAN


@pytest.fixture(scope = 'module')
def fx():
    root = ASSETS / 'fairseq_hubert_tiny'
    load = lambda name: torch.from_numpy(np.load(root / name))
    return dict(
        root = root, ckpt = root / 'tiny_hubert.pt', km = root / 'tiny_hubert_L2_km16.bin',
        input = load('ref_input.npy'), layer1 = load('ref_layer1.npy'), layer2 = load('ref_layer2.npy'),
        conv = load('ref_conv_features.npy'), labels = load('ref_km_labels.npy'),
    )


@pytest.fixture(scope = 'module')
def tokenizer(fx):
    return HubertWithKmeans(fx['ckpt'], fx['km'], output_layer = 2)


@pytest.fixture(scope = 'module')
def fairseq_pkg(fx):
    return read_fairseq_checkpoint(fx['ckpt'])


def resave(pkg, path, **changes):
    pkg = copy.deepcopy(pkg)
    pkg.update(changes)
    torch.save(pkg, path)
    return path


# ---------------------------------------------------------------------------------------------------------
# parity with fairseq
# ---------------------------------------------------------------------------------------------------------

def test_reference_numbers_of_fixture(fx):
    # guards against a corrupted copy of the fixture (values from its README)
    assert torch.allclose(fx['layer1'][0, 0, :5], torch.tensor([0.342605, 1.303119, -1.148653, 1.102497, -1.123359]), atol = 1e-5)
    assert fx['labels'][:10].tolist() == [12, 6, 12, 0, 11, 11, 5, 2, 10, 11]


def test_conv_features_match_fairseq(fx, tokenizer):
    with torch.no_grad():
        conv = tokenizer.features.model.feature_extractor(fx['input'])
    assert conv.shape == fx['conv'].shape
    assert (conv - fx['conv']).abs().max() < 1e-4


@pytest.mark.parametrize('layer', [1, 2])
def test_layer_features_match_fairseq(fx, tokenizer, layer):
    t = tokenizer if layer == 2 else HubertWithKmeans(fx['ckpt'], None, output_layer = 1)
    features = t.extract_features(fx['input'])
    reference = fx[f'layer{layer}']
    assert features.shape == reference.shape == (1, 49, 64)
    assert (features - reference).abs().max() < 1e-4


def test_cluster_ids_match_fairseq(fx, tokenizer):
    ids = tokenizer(fx['input'])
    assert ids.shape == (1, 49) and ids.dtype == torch.long
    assert torch.equal(ids[0], fx['labels'])
    assert tokenizer.codebook_size == 16 and tokenizer.downsample_factor == 320


def test_checkpoint_read_safely(fx, fairseq_pkg):
    # a plain weights-only load refuses the file; ours reads it with an inert stand-in for the Dictionary
    with pytest.raises(pickle.UnpicklingError):
        torch.load(fx['ckpt'], weights_only = True)
    dictionary = fairseq_pkg['task_state']['dictionaries'][0]
    assert isinstance(dictionary, FairseqDictionary) and len(dictionary) == 504
    model_cfg, task_cfg = fairseq_configs(fairseq_pkg)
    assert model_cfg['encoder_layers'] == 2 and task_cfg['normalize'] is False


def test_conv_feature_layers_parser():
    assert parse_conv_feature_layers('[(32,10,5)] + [(32,3,2)] * 2') == [(32, 10, 5), (32, 3, 2), (32, 3, 2)]
    with pytest.raises(FairseqCheckpointError):
        parse_conv_feature_layers('__import__("os").system("true")')


# ---------------------------------------------------------------------------------------------------------
# the explicit key map fails loudly
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def empty_model(fairseq_pkg):
    model_cfg, _ = fairseq_configs(fairseq_pkg)
    return transformers.HubertModel(transformers_config_from_fairseq(model_cfg))


def test_key_map_covers_every_weight(fairseq_pkg, empty_model):
    converted = convert_state_dict(fairseq_pkg['model'], empty_model)
    assert set(converted) == set(empty_model.state_dict())
    assert torch.equal(converted['masked_spec_embed'], fairseq_pkg['model']['mask_emb'])


@pytest.mark.parametrize('corruption', ['missing', 'unexpected', 'shape'])
def test_key_map_fails_loudly(fairseq_pkg, empty_model, corruption):
    state = dict(fairseq_pkg['model'])
    if corruption == 'missing':
        del state['encoder.layers.1.fc2.weight']
        match = r'missing fairseq keys \[.encoder.layers.1.fc2.weight'
    elif corruption == 'unexpected':
        state['encoder.layers.2.fc1.weight'] = torch.zeros(128, 64)
        match = 'unexpected.*layers.2.fc1'
    else:
        state['post_extract_proj.weight'] = torch.zeros(64, 33)
        match = 'shape mismatch.*post_extract_proj'
    with pytest.raises(FairseqCheckpointError, match = match):
        convert_state_dict(state, empty_model)


# ---------------------------------------------------------------------------------------------------------
# checkpoint variants
# ---------------------------------------------------------------------------------------------------------

def test_old_args_style_checkpoint(fx, fairseq_pkg, tmp_path):
    model_cfg, task_cfg = fairseq_configs(fairseq_pkg)
    flat = {k: v for k, v in model_cfg.items() if k not in ('_name', 'conv_bias')}  # old files miss keys
    args = argparse.Namespace(arch = 'hubert', normalize = False, sample_rate = 16000, **flat)
    path = resave({'model': fairseq_pkg['model']}, tmp_path / 'old.pt', args = args, cfg = None)
    t = HubertWithKmeans(path, fx['km'], output_layer = 2)
    assert torch.equal(t(fx['input'])[0], fx['labels'])


def test_finetuned_checkpoint_prefix(fx, fairseq_pkg, tmp_path):
    state = {f'w2v_encoder.w2v_model.{k}': v for k, v in fairseq_pkg['model'].items()}
    state['w2v_encoder.proj.weight'] = torch.zeros(32, 64)
    cfg = {'model': {'_name': 'hubert_ctc', 'w2v_args': copy.deepcopy(fairseq_pkg['cfg'])}, 'task': {'normalize': False}}
    path = resave({}, tmp_path / 'ft.pt', model = state, cfg = cfg)
    features = HubertWithKmeans(path, None, output_layer = 2).extract_features(fx['input'])
    assert (features - fx['layer2']).abs().max() < 1e-4


def test_wav2vec2_fairseq_checkpoint(fx, fairseq_pkg, tmp_path):
    # wav2vec 2.0 shares HuBERT's encoder layout; its quantizer / project_q heads are pretraining-only
    cfg = copy.deepcopy(fairseq_pkg['cfg'])
    cfg['model']['_name'] = 'wav2vec2'
    state = dict(fairseq_pkg['model'], **{'quantizer.vars': torch.zeros(1, 8, 16), 'project_q.weight': torch.zeros(8, 16)})
    path = resave(fairseq_pkg, tmp_path / 'w2v.pt', cfg = cfg, model = state)
    t = HubertWithKmeans(path, None, output_layer = 2)
    assert isinstance(t.features.model, transformers.Wav2Vec2Model)
    assert (t.extract_features(fx['input']) - fx['layer2']).abs().max() < 1e-4


def test_task_normalize_is_honoured(fx, fairseq_pkg, tmp_path):
    cfg = copy.deepcopy(fairseq_pkg['cfg'])
    cfg['task']['normalize'] = True
    path = resave(fairseq_pkg, tmp_path / 'norm.pt', cfg = cfg)
    normalized = HubertWithKmeans(path, None, output_layer = 2)
    plain = HubertWithKmeans(fx['ckpt'], None, output_layer = 2)
    wave = fx['input'] * 0.3 + 0.2
    expected = plain.extract_features(F.layer_norm(wave, wave.shape[-1:]))  # fairseq: F.layer_norm(wav, wav.shape)
    assert normalized.features.normalize and not plain.features.normalize
    assert (normalized.extract_features(wave) - expected).abs().max() < 1e-4

    # the group-normed conv stack is nearly invariant to gain and offset, so check what the model receives
    seen = []
    normalized.features.model.feature_extractor.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    normalized.extract_features(wave)
    assert torch.allclose(seen[0], F.layer_norm(wave, wave.shape[-1:]), atol = 1e-5)


def test_layer_norm_first_reads_before_final_layer_norm(fx, fairseq_pkg, tmp_path):
    cfg = copy.deepcopy(fairseq_pkg['cfg'])
    cfg['model']['layer_norm_first'] = True
    path = resave(fairseq_pkg, tmp_path / 'large_style.pt', cfg = cfg)
    t = HubertWithKmeans(path, None, output_layer = 2)
    features = t.extract_features(fx['input'])

    from audiolm_pytorch.semantic.fairseq_checkpoint import load_fairseq_model
    full = load_fairseq_model(path).model
    with torch.no_grad():
        final = full(fx['input']).last_hidden_state            # has the encoder's final LayerNorm
    assert torch.allclose(full.encoder.layer_norm(features), final, atol = 1e-4)
    assert not torch.allclose(features, final, atol = 1e-2)


# ---------------------------------------------------------------------------------------------------------
# transformers directories
# ---------------------------------------------------------------------------------------------------------

def tiny_config(kind = 'hubert', **kw):
    cls = transformers.HubertConfig if kind == 'hubert' else transformers.Wav2Vec2Config
    return cls(hidden_size = 32, num_hidden_layers = 3, num_attention_heads = 2, intermediate_size = 64,
               conv_dim = (16, 16, 16), conv_stride = (5, 4, 2), conv_kernel = (10, 4, 2), num_conv_pos_embeddings = 16,
               num_conv_pos_embedding_groups = 4, **kw)


@pytest.fixture(scope = 'module')
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp('hf')
    dirs = {}
    for name, kind, kw in [('hubert', 'hubert', {}), ('wav2vec2', 'wav2vec2', {}),
                           ('hubert_layer', 'hubert', dict(feat_extract_norm = 'layer', do_stable_layer_norm = True))]:
        torch.manual_seed(0)
        model_cls = transformers.HubertModel if kind == 'hubert' else transformers.Wav2Vec2Model
        model_cls(tiny_config(kind, **kw)).save_pretrained(root / name)
        dirs[name] = root / name
    centroids = torch.randn(8, 32)
    dirs['km'] = KMeans(centroids).save(root / 'km.safetensors')
    return dirs


@pytest.mark.parametrize('name', ['hubert', 'wav2vec2'])
def test_transformers_directory(model_dirs, name):
    t = HubertWithKmeans(model_dirs[name], model_dirs['km'], output_layer = 2)
    assert isinstance(t, SemanticTokenizer)
    wave = torch.randn(2, 4000)
    ids = t(wave)
    assert t.downsample_factor == 40 and t.codebook_size == 8

    model_cls = transformers.HubertModel if name == 'hubert' else transformers.Wav2Vec2Model
    full = model_cls.from_pretrained(model_dirs[name], local_files_only = True).eval()
    with torch.no_grad():
        hidden = full(wave, output_hidden_states = True).hidden_states[2]       # output of layer 2
    expected = torch.cdist(hidden, KMeans.from_file(model_dirs['km']).centroids[None]).argmin(-1)
    assert torch.allclose(t.extract_features(wave), hidden, atol = 1e-5)
    assert torch.equal(ids, expected)


def test_fit_kmeans_on_transformers_directory(model_dirs, tmp_path):
    from audiolm_pytorch import fit_kmeans
    files = sorted(ASSETS.glob('music_[01]_16k.wav'))
    result = fit_kmeans(model_dirs['wav2vec2'], data = files, clusters = 5, out = tmp_path / 'km.safetensors',
                        output_layer = 3, batch_size = 64, epochs = 2, device = 'cpu')
    t = HubertWithKmeans(model_dirs['wav2vec2'], result.path, output_layer = 3)
    assert t.codebook_size == 5
    wave = torch.randn(1, 4000)
    features, ids = t.extract_features(wave), t(wave)
    assert ids.shape == features.shape[:2] == (1, t.num_frames(4000))
    assert torch.equal(ids, torch.cdist(features, result.centroids[None]).argmin(-1))
    with pytest.raises(KMeansFileError, match = '32-dim'):  # fitted at 32 dims, so it fits any 32-dim layer only
        HubertWithKmeans(ASSETS / 'fairseq_hubert_tiny' / 'tiny_hubert.pt', result.path, output_layer = 2)


def test_frames_follow_downsample_factor(model_dirs):
    t = HubertWithKmeans(model_dirs['hubert'], model_dirs['km'], output_layer = 1)
    df = t.downsample_factor
    for n in (t.features.min_samples, 1000, 1001, 2345, 4000):
        frames = t(torch.randn(1, n)).shape[-1]
        assert frames == t.num_frames(n)
        assert t.num_frames(n + 3 * df) == frames + 3   # one more token every downsample_factor samples
    with pytest.raises(ValueError, match = 'shorter than one frame'):
        t(torch.randn(1, t.features.min_samples - 1))


def test_padded_batch_matches_items(model_dirs):
    # layer-norm extractor: padding is fully masked, so a padded batch equals the items run alone
    t = HubertWithKmeans(model_dirs['hubert_layer'], model_dirs['km'], output_layer = 3)
    a, b = torch.randn(3000), torch.randn(1800)
    batch = torch.stack([a, F.pad(b, (0, 1200))])
    feats, frame_lengths = t.extract_features(batch, lengths = torch.tensor([3000, 1800]), return_lengths = True)
    ids = t(batch, lengths = torch.tensor([3000, 1800]))
    nb = t.num_frames(1800)
    assert frame_lengths.tolist() == [t.num_frames(3000), nb]
    assert torch.allclose(feats[0], t.extract_features(a)[0], atol = 1e-4)
    assert torch.allclose(feats[1, :nb], t.extract_features(b)[0], atol = 1e-4)
    assert torch.equal(ids[1, :nb], t(b)[0]) and (ids[1, nb:] == -1).all()


def test_resampling_and_seq_len_multiple_of(model_dirs):
    t = HubertWithKmeans(model_dirs['hubert'], model_dirs['km'], output_layer = 2, seq_len_multiple_of = 320)
    wave24 = torch.randn(1, 6000)
    ids = t(wave24, input_sample_hz = 24000)
    expected = t(resample(wave24, 24000, 16000))
    assert torch.equal(ids, expected)
    assert ids.shape[-1] == t.num_frames(4000) == t.features.num_frames(3840)

    # a tokenizer fed at 24 kHz counts its hop at 24 kHz
    t24 = HubertWithKmeans(model_dirs['hubert'], model_dirs['km'], target_sample_hz = 24000, output_layer = 2)
    assert t24.downsample_factor == 60
    assert t24(wave24).shape[-1] == t24.num_frames(6000) == t.features.num_frames(4000)


def test_frozen_eval_and_device_moves(model_dirs):
    class MyHubert(HubertWithKmeans):  # subclasses work like the base class
        pass

    t = MyHubert(model_dirs['hubert'], model_dirs['km'], output_layer = 2)
    parent = torch.nn.Sequential(t)
    parent.train()
    assert not t.features.model.training
    assert not any(p.requires_grad for p in t.parameters())
    wave = torch.randn(1, 2000, requires_grad = True)
    assert not t(wave).requires_grad
    t.to(torch.bfloat16)
    assert t.kmeans.centroids.dtype == torch.float32
    assert t(wave).shape == (1, t.num_frames(2000))


# ---------------------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------------------

def test_bad_files(fx, model_dirs, tmp_path):
    with pytest.raises(FileNotFoundError):
        HubertWithKmeans(tmp_path / 'missing.pt', fx['km'])
    with pytest.raises(FileNotFoundError):
        HubertWithKmeans(fx['ckpt'], tmp_path / 'missing.bin', output_layer = 2)

    not_a_checkpoint = tmp_path / 'text.pt'
    not_a_checkpoint.write_text('hello')
    with pytest.raises(FairseqCheckpointError, match = 'not a readable torch checkpoint'):
        HubertWithKmeans(not_a_checkpoint, fx['km'], output_layer = 2)

    torch.save({'weights': torch.zeros(3)}, tmp_path / 'other.pt')
    with pytest.raises(FairseqCheckpointError, match = 'not a fairseq checkpoint'):
        HubertWithKmeans(tmp_path / 'other.pt', fx['km'], output_layer = 2)

    with pytest.raises(ValueError, match = 'output_layer=9 but .* has 2 encoder layers'):
        HubertWithKmeans(fx['ckpt'], fx['km'])                 # the default layer 9 does not exist here

    with pytest.raises(KMeansFileError, match = '32-dim centroids but .* 64-dim features'):
        HubertWithKmeans(fx['ckpt'], model_dirs['km'], output_layer = 2)

    (tmp_path / 'empty_dir').mkdir()
    with pytest.raises(ValueError, match = 'without config.json'):
        HubertWithKmeans(tmp_path / 'empty_dir', fx['km'])

    with pytest.raises(ValueError, match = 'without kmeans_path'):
        HubertWithKmeans(fx['ckpt'], None, output_layer = 2)(fx['input'])


def test_vq_wav2vec_names_the_fairseq_problem(tmp_path):
    from audiolm_pytorch import FairseqVQWav2Vec
    try:
        import fairseq  # noqa: F401
        pytest.skip('fairseq is importable here')
    except Exception:
        pass
    expected = 'Python >= 3.11' if sys.version_info >= (3, 11) else 'pip install fairseq'
    with pytest.raises(ImportError, match = f'needs fairseq.*{re.escape(expected)}'):
        FairseqVQWav2Vec(tmp_path / 'vq-wav2vec.pt')


# ---- bad input called directly -------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def hubert(tmp_path_factory):
    import transformers

    from audiolm_pytorch import HubertWithKmeans
    from audiolm_pytorch.semantic.kmeans import KMeans
    root = tmp_path_factory.mktemp('hubert')
    torch.manual_seed(0)
    config = transformers.HubertConfig(hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2,
                                       intermediate_size = 16, conv_dim = (8, 8), conv_stride = (5, 4),
                                       conv_kernel = (10, 4), num_conv_pos_embeddings = 4,
                                       num_conv_pos_embedding_groups = 2)
    transformers.HubertModel(config).save_pretrained(root / 'model')
    KMeans(torch.randn(8, 16)).save(root / 'km.safetensors')
    return HubertWithKmeans(root / 'model', root / 'km.safetensors', output_layer = 1)


def test_hubert_rejects_bad_shapes_and_short_audio(hubert):
    with pytest.raises(ValueError, match = 'empty waveform'):
        hubert(torch.zeros(1, 0))
    with pytest.raises(ValueError, match = r'\(b, n\)'):
        hubert(torch.zeros(1, 1, 1, 800))


@pytest.mark.parametrize('wave', [torch.full((1, 800), NAN), torch.randint(-3000, 3000, (1, 800)), torch.zeros(0, 800)],
                         ids = ['nan', 'int', 'batch_zero'])
def test_tokenizer_called_directly_rejects_nan_int_and_empty_audio(hubert, wave):
    with pytest.raises(ValueError):
        hubert(wave)
