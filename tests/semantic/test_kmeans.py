"""k-means: safe reading of scikit-learn / joblib files, plain centroid formats, assignment, fitting."""

import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from audiolm_pytorch import fit_kmeans
from audiolm_pytorch.semantic.kmeans import (
    KMeans,
    KMeansFileError,
    load_kmeans_centroids,
    minibatch_kmeans,
    read_sklearn_kmeans_pickle,
)
from tests.helpers import ASSETS

KM_BIN = ASSETS / 'fairseq_hubert_tiny' / 'tiny_hubert_L2_km16.bin'


def sklearn_centers(path):
    joblib = pytest.importorskip('joblib')
    pytest.importorskip('sklearn')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # InconsistentVersionWarning: pickled by scikit-learn 1.7.2
        return joblib.load(path).cluster_centers_


def test_restricted_reader_matches_joblib():
    centroids = read_sklearn_kmeans_pickle(KM_BIN)
    assert centroids.shape == (16, 64) and centroids.dtype == np.float32
    assert np.array_equal(centroids, sklearn_centers(KM_BIN))


def test_restricted_reader_needs_neither_sklearn_nor_joblib():
    # also: the semantic modules import no heavy optional dependency until it is needed
    code = ('import sys; from audiolm_pytorch.semantic.kmeans import load_kmeans_centroids; '
            'import audiolm_pytorch.semantic.hubert_kmeans, audiolm_pytorch.semantic.vq_wav2vec; '
            f'c, _ = load_kmeans_centroids({str(KM_BIN)!r}); assert c.shape == (16, 64); '
            'loaded = [m for m in ("sklearn", "joblib", "fairseq", "transformers") if m in sys.modules]; '
            'assert not loaded, loaded')
    subprocess.run([sys.executable, '-c', code], check = True, env = {**os.environ, 'OMP_NUM_THREADS': '1'})


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.bin'
    path.write_bytes(pickle.dumps({'cluster_centers_': _Payload(marker)}, protocol = 4))
    with pytest.raises(KMeansFileError, match = 'not allowed'):
        load_kmeans_centroids(path)
    assert not marker.exists()


def test_other_pickle_layouts(tmp_path):
    centers = sklearn_centers(KM_BIN)
    joblib = pytest.importorskip('joblib')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        estimator = joblib.load(KM_BIN)
    estimator.random_state_ = np.random.RandomState(0)                      # incidental objects stay inert

    pickle.dump(estimator, open(tmp_path / 'plain.pkl', 'wb'))              # plain pickle: numpy reconstructs
    joblib.dump(estimator, tmp_path / 'old.joblib', protocol = 2)
    for name in ('plain.pkl', 'old.joblib'):
        assert np.array_equal(load_kmeans_centroids(tmp_path / name)[0].numpy(), centers)

    joblib.dump(estimator, tmp_path / 'zipped.joblib', compress = 3)        # compressed: opt-in only
    with pytest.raises(KMeansFileError, match = 'allow_pickle=True'):
        load_kmeans_centroids(tmp_path / 'zipped.joblib')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trusted, _ = load_kmeans_centroids(tmp_path / 'zipped.joblib', allow_pickle = True)
    assert np.array_equal(trusted.numpy(), centers)


def test_plain_centroid_formats_round_trip(tmp_path):
    centroids = torch.randn(5, 3)
    np.save(tmp_path / 'c.npy', centroids.numpy())
    torch.save({'centroids': centroids}, tmp_path / 'c.pt')
    KMeans(centroids).save(tmp_path / 'c.safetensors', {'note': 'hi'})
    for name in ('c.npy', 'c.pt', 'c.safetensors'):
        loaded, config = load_kmeans_centroids(tmp_path / name)
        assert torch.equal(loaded, centroids)
    assert config['note'] == 'hi' and config['clusters'] == 5 and config['dim'] == 3
    assert json.loads((tmp_path / 'c.json').read_text())['note'] == 'hi'


def test_bad_kmeans_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_kmeans_centroids(tmp_path / 'missing.npy')
    (tmp_path / 'c.txt').write_text('1 2 3')
    with pytest.raises(KMeansFileError, match = 'unknown k-means file type'):
        load_kmeans_centroids(tmp_path / 'c.txt')
    np.save(tmp_path / 'vector.npy', np.zeros(4, dtype = np.float32))
    with pytest.raises(KMeansFileError, match = r'\(clusters, dim\)'):
        load_kmeans_centroids(tmp_path / 'vector.npy')
    (tmp_path / 'broken.pt').write_bytes(b'not a torch file')
    with pytest.raises(KMeansFileError, match = 'cannot read'):
        load_kmeans_centroids(tmp_path / 'broken.pt')
    (tmp_path / 'text.bin').write_text('hello')
    with pytest.raises(KMeansFileError, match = 'not an uncompressed pickle'):
        load_kmeans_centroids(tmp_path / 'text.bin')
    with pytest.raises(KMeansFileError, match = 'dimension 3 but the features have dimension 4'):
        KMeans(torch.randn(2, 3))(torch.randn(5, 4))


def test_assignment_is_nearest_centroid():
    centroids, x = torch.randn(50, 16), torch.randn(4, 30, 16)
    ids = KMeans(centroids)(x)
    assert ids.shape == (4, 30)
    assert torch.equal(ids, torch.cdist(x, centroids[None].expand(4, -1, -1)).argmin(-1))


def test_minibatch_kmeans_recovers_clusters():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 8, generator = generator) * 10
    labels = torch.randint(6, (3000,), generator = generator)
    x = centers[labels] + 0.1 * torch.randn(3000, 8, generator = generator)
    found, inertia = minibatch_kmeans(x, clusters = 6, batch_size = 256, epochs = 5, seed = 0, device = 'cpu')
    assert torch.cdist(centers, found).min(-1).values.max() < 0.1      # every true center found
    assert inertia < 0.1 * 1.1 ** 2 * 8                                 # ~ noise variance * dim
    with pytest.raises(ValueError, match = 'at least as many frames as clusters'):
        minibatch_kmeans(x[:3], clusters = 6, device = 'cpu')


def test_fit_kmeans_on_fairseq_features_round_trips(tmp_path):
    from audiolm_pytorch import HubertWithKmeans
    ckpt = ASSETS / 'fairseq_hubert_tiny' / 'tiny_hubert.pt'
    files = sorted(ASSETS.glob('speech_[01]_16k.wav'))
    result = fit_kmeans(ckpt, data = files, clusters = 8, out = tmp_path / 'km.safetensors', output_layer = 2,
                        batch_size = 64, epochs = 3, device = 'cpu')
    assert result.centroids.shape == (8, 64) and result.num_frames > 200
    config = json.loads((tmp_path / 'km.json').read_text())
    assert config['output_layer'] == 2 and config['clusters'] == 8 and config['num_files'] == 2

    tokenizer = HubertWithKmeans(ckpt, result.path, output_layer = 2)
    ids = tokenizer(torch.randn(1, 16000))
    assert tokenizer.codebook_size == 8 and ids.min() >= 0 and ids.max() < 8
    # fitted centroids quantize the fitting audio much better than the same number of its own random frames
    import soundfile
    features = torch.cat([tokenizer.extract_features(torch.from_numpy(soundfile.read(f, dtype = 'float32')[0]))[0]
                          for f in files])
    error = lambda centroids: torch.cdist(features, centroids).min(-1).values.pow(2).mean().item()
    random_frames = features[torch.randperm(features.shape[0])[:8]]
    assert abs(error(result.centroids) - result.inertia) < 1e-3 * result.inertia
    assert error(result.centroids) < 0.8 * error(random_frames)


def test_fit_kmeans_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        fit_kmeans('spectral', data = tmp_path / 'nowhere', clusters = 4)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match = 'no audio files'):
        fit_kmeans('spectral', data = tmp_path / 'empty', clusters = 4)
    with pytest.raises(ValueError, match = 'clusters must be'):
        fit_kmeans('spectral', data = ASSETS, clusters = 1)


def test_collect_features_samples_uniformly_with_bounded_memory():
    from audiolm_pytorch.semantic.kmeans import collect_features
    files = sorted(ASSETS.glob('*_16k.wav'))
    calls = []

    def extract(wave):  # tags every frame with the index of the file it came from
        calls.append(wave.shape[-1])
        return torch.full((1, wave.shape[-1] // 320, 3), float(len(calls) - 1))

    everything = collect_features(extract, files, sample_hz = 16000, device = torch.device('cpu'))
    assert everything.shape == (sum(n // 320 for n in calls), 3)
    calls.clear()
    sample = collect_features(extract, files, sample_hz = 16000, device = torch.device('cpu'), max_frames = 200)
    assert sample.shape == (200, 3)
    per_file = torch.bincount(sample[:, 0].long(), minlength = len(files)).float()
    assert (per_file > 0).all() and per_file.max() < 3 * per_file.mean()   # every file represented, none dominates


# ---- k-means of another layer, fitting on a module records its layer -----------------------------------------------

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
