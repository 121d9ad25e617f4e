"""SpectralKmeansTokenizer: pretrained-free k-means on log-mel frames at 50 Hz."""


import pytest
import torch

from audiolm_pytorch import SpectralKmeansTokenizer, fit_kmeans
from audiolm_pytorch.audio import load_audio, resample
from audiolm_pytorch.semantic.base import SemanticTokenizer
from tests.helpers import ASSETS


@pytest.fixture(scope = 'module')
def fitted():
    tokenizer = SpectralKmeansTokenizer(codebook_size = 32, n_mels = 40)
    files = sorted(ASSETS.glob('*_16k.wav'))[:6]
    inertia, num_frames = tokenizer.fit(files, batch_size = 256, epochs = 5)
    return tokenizer, files, inertia, num_frames


def test_interface_and_framing(fitted):
    tokenizer, *_ = fitted
    assert isinstance(tokenizer, SemanticTokenizer)
    assert tokenizer.downsample_factor == 320 and tokenizer.target_sample_hz == 16000 and tokenizer.codebook_size == 32
    for n in (tokenizer.min_samples, 1000, 16000, 16319, 33333):
        ids = tokenizer(torch.randn(2, n))
        assert ids.shape == (2, n // 320) == (2, tokenizer.num_frames(n))
        assert ids.dtype == torch.long and 0 <= ids.min() and ids.max() < 32


def test_fit_standardizes_and_uses_the_codebook(fitted):
    tokenizer, files, inertia, num_frames = fitted
    waves = [load_audio(f).wave for f in files]
    assert num_frames == sum(w.shape[-1] // 320 for w in waves)
    features = torch.cat([tokenizer.extract_features(w)[0] for w in waves])
    assert features.mean(0).abs().max() < 1e-3 and (features.std(0) - 1).abs().max() < 1e-2
    ids = torch.cat([tokenizer(w)[0] for w in waves])
    assert ids.unique().numel() >= 24            # no dead codebook
    # speech and music fall into different tokens
    speech, music = tokenizer(waves[-1])[0], tokenizer(waves[0])[0]
    overlap = len(set(speech.tolist()) & set(music.tolist())) / len(set(speech.tolist()) | set(music.tolist()))
    assert overlap < 0.5
    assert inertia < 0.5 * features.shape[-1]    # well below the total variance (n_mels after standardizing)


def test_save_load_round_trip(fitted, tmp_path):
    tokenizer, files, *_ = fitted
    wave = load_audio(files[0]).wave
    for name in ('spectral.pt', 'spectral.safetensors'):
        tokenizer.save(tmp_path / name)
        loaded = SpectralKmeansTokenizer.init_and_load_from(tmp_path / name)
        assert loaded.codebook_size == 32 and loaded.dim == 40
        assert torch.equal(loaded(wave), tokenizer(wave))


def test_resampling_padding_and_errors(fitted):
    tokenizer, files, *_ = fitted
    wave = load_audio(files[0]).wave
    wave24 = resample(wave, 16000, 24000)
    assert torch.equal(tokenizer(wave24, input_sample_hz = 24000), tokenizer(resample(wave24, 24000, 16000)))

    padded = torch.cat([wave, torch.zeros(1, 3200)], dim = -1).expand(2, -1)
    ids = tokenizer(padded, lengths = torch.tensor([padded.shape[-1], wave.shape[-1]]))
    assert (ids[1, wave.shape[-1] // 320:] == -1).all() and (ids[0] >= 0).all()

    with pytest.raises(RuntimeError, match = 'not fitted'):
        SpectralKmeansTokenizer(codebook_size = 4)(wave)
    with pytest.raises(ValueError, match = 'multiple of frame_hz'):
        SpectralKmeansTokenizer(target_sample_hz = 16000, frame_hz = 75)
    with pytest.raises(ValueError, match = 'shorter'):
        tokenizer(torch.randn(1, 100))


def test_fit_kmeans_spectral_writes_a_tokenizer(tmp_path):
    result = fit_kmeans('spectral', data = ASSETS, clusters = 8, out = tmp_path / 'spectral.safetensors',
                        max_files = 3, batch_size = 128, epochs = 2, device = 'cpu')
    loaded = SpectralKmeansTokenizer.init_and_load_from(result.path)
    assert loaded.codebook_size == 8 and torch.equal(loaded.kmeans.centroids, result.centroids)

    fit_on_batch = SpectralKmeansTokenizer(codebook_size = 4, n_mels = 16)
    fit_on_batch.fit(torch.randn(2, 8000), epochs = 2)
    assert fit_on_batch(torch.randn(1, 8000)).shape == (1, 25)
