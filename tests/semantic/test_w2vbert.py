"""W2VBertWithKmeans: the torch fbank front-end against transformers' SeamlessM4TFeatureExtractor, and the
whole tokenizer against transformers' Wav2Vec2BertModel fed by that extractor."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

from audiolm_pytorch import HubertWithKmeans, W2VBertWithKmeans
from audiolm_pytorch.semantic.base import SemanticTokenizer
from audiolm_pytorch.semantic.hubert_kmeans import KaldiFbank
from audiolm_pytorch.semantic.kmeans import KMeans, KMeansFileError


@pytest.fixture(scope = 'module')
def extractor():
    return transformers.SeamlessM4TFeatureExtractor()


@pytest.fixture(scope = 'module')
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('w2vbert')
    config = transformers.Wav2Vec2BertConfig(
        hidden_size = 32, num_hidden_layers = 3, num_attention_heads = 2, intermediate_size = 64,
        output_hidden_size = 32, conv_depthwise_kernel_size = 5, layerdrop = 0.5)
    torch.manual_seed(0)
    transformers.Wav2Vec2BertModel(config).save_pretrained(root / 'model')
    KMeans(torch.randn(12, 32)).save(root / 'km.safetensors')
    return root


def test_fbank_matches_transformers(extractor):
    wave = torch.randn(16000 + 123) * 0.1
    expected = extractor._extract_fbank_features(wave.numpy())           # float64 numpy reference
    ours = KaldiFbank()(wave[None])[0].numpy()
    assert ours.shape == expected.shape == (99, 80)
    assert np.abs(ours - expected).max() < 1e-3                          # values span about [-10, 25]


def test_features_match_transformers_pipeline(extractor, model_dir):
    t = W2VBertWithKmeans(model_dir / 'model', model_dir / 'km.safetensors', output_layer = 2)
    assert isinstance(t, SemanticTokenizer)
    assert t.downsample_factor == 320 and t.codebook_size == 12

    wave = torch.randn(9000) * 0.1
    inputs = extractor(wave.numpy(), sampling_rate = 16000, return_tensors = 'pt')
    full = transformers.Wav2Vec2BertModel.from_pretrained(model_dir / 'model', local_files_only = True).eval()
    with torch.no_grad():
        hidden = full(**inputs, output_hidden_states = True).hidden_states[2]       # output of layer 2
    frames = int(inputs['attention_mask'].sum())                                  # the odd last fbank frame is masked

    features = t.extract_features(wave)
    assert features.shape == (1, frames, 32) == (1, t.num_frames(9000), 32)
    assert torch.allclose(features[0], hidden[0, :frames], atol = 2e-4)
    expected = KMeans.from_file(model_dir / 'km.safetensors')(hidden[:, :frames])
    assert torch.equal(t(wave), expected)


def test_frames_follow_downsample_factor(model_dir):
    t = W2VBertWithKmeans(model_dir / 'model', model_dir / 'km.safetensors', output_layer = 1)
    for n in (t.features.min_samples, 1234, 8000, 8001, 16000):
        frames = t(torch.randn(1, n)).shape[-1]
        assert frames == t.num_frames(n) >= 1
        assert t.num_frames(n + 2 * t.downsample_factor) == frames + 2
    with pytest.raises(ValueError, match = 'shorter than one frame'):
        t(torch.randn(1, t.features.min_samples - 1))


def test_padded_batch_matches_items(model_dir):
    t = W2VBertWithKmeans(model_dir / 'model', model_dir / 'km.safetensors', output_layer = 3)
    torch.nn.Sequential(t).train()                                # stays in eval: layer-drop 0.5 would show
    a, b = torch.randn(8000) * 0.1, torch.randn(5000) * 0.1
    batch = torch.stack([a, F.pad(b, (0, 3000))])
    feats, lengths = t.extract_features(batch, lengths = torch.tensor([8000, 5000]), return_lengths = True)
    nb = t.num_frames(5000)
    assert lengths.tolist() == [t.num_frames(8000), nb]
    assert torch.allclose(feats[0], t.extract_features(a)[0], atol = 1e-4)
    assert torch.allclose(feats[1, :nb], t.extract_features(b)[0], atol = 1e-4)
    ids = t(batch, lengths = torch.tensor([8000, 5000]))
    assert (ids[1, nb:] == -1).all() and torch.equal(ids[1, :nb], t(b)[0])


def test_wrong_directories(model_dir, tmp_path):
    with pytest.raises(ValueError, match = 'use W2VBertWithKmeans'):
        HubertWithKmeans(model_dir / 'model', model_dir / 'km.safetensors', output_layer = 1)
    transformers.HubertModel(transformers.HubertConfig(
        hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 32,
        conv_dim = (8, 8), conv_stride = (5, 2), conv_kernel = (10, 3), num_conv_pos_embeddings = 8,
        num_conv_pos_embedding_groups = 2)).save_pretrained(tmp_path / 'hubert')
    with pytest.raises(ValueError, match = 'use HubertWithKmeans'):
        W2VBertWithKmeans(tmp_path / 'hubert', model_dir / 'km.safetensors', output_layer = 1)
    with pytest.raises(ValueError, match = 'is a file'):
        W2VBertWithKmeans(model_dir / 'km.safetensors', model_dir / 'km.safetensors')
    with pytest.raises(ValueError, match = 'output_layer=17 but .* has 3 encoder layers'):
        W2VBertWithKmeans(model_dir / 'model', model_dir / 'km.safetensors')
    KMeans(torch.randn(4, 7)).save(tmp_path / 'km7.safetensors')
    with pytest.raises(KMeansFileError, match = '7-dim centroids'):
        W2VBertWithKmeans(model_dir / 'model', tmp_path / 'km7.safetensors', output_layer = 1)


def test_fit_kmeans_on_w2vbert_features(model_dir, tmp_path):
    from pathlib import Path

    from audiolm_pytorch import fit_kmeans
    files = sorted((Path(__file__).parents[1] / 'assets').glob('speech_[01]_16k.wav'))
    result = fit_kmeans(model_dir / 'model', data = files, clusters = 6, out = tmp_path / 'km.safetensors',
                        output_layer = 2, batch_size = 64, epochs = 2, device = 'cpu')
    t = W2VBertWithKmeans(model_dir / 'model', result.path, output_layer = 2)
    assert t.codebook_size == 6 and result.centroids.shape == (6, 32)
    ids = t(torch.randn(1, 16000) * 0.1)
    assert ids.shape == (1, t.num_frames(16000)) and 0 <= ids.min() and ids.max() < 6
