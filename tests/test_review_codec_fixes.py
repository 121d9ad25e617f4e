"""Regression tests from the adversarial review of the codecs (SoundStream, pretrained wrappers)."""

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers

from audiolm_pytorch import EncodecWrapper, SoundStream
from audiolm_pytorch.audio import load_audio

TINY = dict(codebook_size = 32, rq_num_quantizers = 3, channels = 4, channel_mults = (2, 4), strides = (2, 4),
            codebook_dim = 16, attn_window_size = 12, attn_heads = 2, attn_dim_head = 8, attn_depth = 1,
            stft_discriminator = False, discr_multi_scales = ())


def tiny_encodec_config(**kwargs):
    config = dict(target_bandwidths = [10.0, 20.0], sampling_rate = 8000, audio_channels = 1, normalize = False,
                  chunk_length_s = None, overlap = None, hidden_size = 16, num_filters = 4, num_residual_layers = 1,
                  upsampling_ratios = [4, 2], codebook_size = 32, codebook_dim = 16, num_lstm_layers = 1)
    config.update(kwargs)
    return transformers.EncodecConfig(**config)


def test_stereo_loaded_audio_is_one_item_not_a_batch(tmp_path):
    # a LoadedAudio wave is (channels, n): a stereo file must not be read as a batch of two mono signals
    stereo = (np.random.default_rng(0).standard_normal((1600, 2)) * 0.1).astype('float32')
    sf.write(tmp_path / 'stereo.wav', stereo, 16000)
    loaded = load_audio(tmp_path / 'stereo.wav', mono = False)
    assert loaded.wave.shape == (2, 1600)

    mono_codec = SoundStream(**TINY).eval()
    with pytest.raises(ValueError, match = 'mono=True'):
        mono_codec.tokenize(loaded)

    stereo_codec = SoundStream(**TINY, input_channels = 2).eval()
    codes = stereo_codec.tokenize(loaded)
    assert codes.shape == (1, 1600 // stereo_codec.downsample_factor, 3)
    assert torch.equal(codes, stereo_codec.tokenize(loaded.wave[None]))

    mono = load_audio(tmp_path / 'stereo.wav')                     # (1, n): one mono item
    assert torch.equal(mono_codec.tokenize(mono), mono_codec.tokenize(mono.wave))


def test_tokenize_in_train_mode_never_initialises_codebooks():
    # tokenize is inference: even on a model left in train mode it must not k-means-initialise codebooks from
    # its input (the same checkpoint would then give different codes depending on what was tokenized first)
    model = SoundStream(**TINY).train()
    state = {k: v.clone() for k, v in model.rq.state_dict().items()}
    model.tokenize(torch.randn(1, 800) * 0.1)
    stream_state = model.init_encoder_state()
    model.encode_chunk(torch.randn(1, 80) * 0.1, stream_state)
    assert all(torch.equal(state[k], v) for k, v in model.rq.state_dict().items())
    assert model.training and model.rq.training                   # modes restored
    model(torch.randn(2, 800) * 0.1, return_codes_only = True)   # a training forward still initialises
    assert any(not torch.equal(state[k], v) for k, v in model.rq.state_dict().items())


def test_pretrained_codes_are_usable_in_training():
    # codes feed embeddings of transformers being trained: they must not be inference-mode tensors
    codec = EncodecWrapper(config = tiny_encodec_config(), bandwidth = 20.0)
    codes = codec.tokenize(torch.randn(2, 800) * 0.1)
    assert not codes.is_inference() and codes.dtype == torch.long
    embedding = torch.nn.Embedding(codec.codebook_size, 4)
    embedding(codes).sum().backward()
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0
    codes[:, 0] = 0                                                # in-place masking works too
    audio = codec.decode_from_codebook_indices(codes)
    assert not audio.is_inference()
    gain = torch.ones(1, requires_grad = True)
    (audio * gain).sum().backward()                                # decoded audio can feed a loss
    assert gain.grad is not None and torch.isfinite(gain.grad).all() and gain.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs', [dict(chunk_length_s = 0.05, overlap = 0.1), dict(normalize = True)])
def test_encodec_rejects_chunked_or_normalized_models(kwargs):
    # such models give one code sequence per overlapping chunk (and a loudness scale per chunk); keeping only
    # the first chunk silently dropped all but the first 50 ms of audio
    with pytest.raises(ValueError, match = 'chunk_length_s'):
        EncodecWrapper(config = tiny_encodec_config(**kwargs), bandwidth = 20.0)


def test_mel_loss_names_too_short_segments():
    from audiolm_pytorch.codecs.losses import MultiResolutionMelLoss
    loss = MultiResolutionMelLoss(sample_hz = 16000, window_powers_of_two = (6, 11))
    with pytest.raises(ValueError, match = 'too short'):
        loss(torch.randn(1, 1, 800), torch.randn(1, 1, 800))
    with pytest.raises(ValueError, match = 'equal shapes'):
        loss(torch.randn(1, 1, 4000), torch.randn(1, 1, 3999))
    assert loss(torch.randn(1, 1, 1025), torch.randn(1, 1, 1025)) > 0


def test_save_audio_refuses_integer_pcm(tmp_path):
    # clipping int16 samples to [-1, 1] used to write a file of -1 / 0 / 1 values without a word
    from audiolm_pytorch.audio import save_audio
    pcm = (np.sin(np.arange(800) / 5.) * 20000).astype(np.int16)
    with pytest.raises(ValueError, match = 'integer PCM'):
        save_audio(tmp_path / 'a.wav', pcm, 16000)
    with pytest.raises(ValueError, match = 'integer PCM'):
        save_audio(tmp_path / 'a.wav', torch.from_numpy(pcm), 16000)
    save_audio(tmp_path / 'a.wav', pcm.astype(np.float32) / 32768, 16000)
    assert np.abs(load_audio(tmp_path / 'a.wav').wave.numpy()[0] * 32768 - pcm).max() <= 1
