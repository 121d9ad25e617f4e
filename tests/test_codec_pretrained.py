"""Pretrained codec wrappers on tiny random transformers configs, saved and reloaded from a local directory."""

import math

import pytest
import torch
import transformers

from audiolm_pytorch import DacWrapper, EncodecWrapper, MimiWrapper
from audiolm_pytorch.codecs.base import Codec


def tiny_encodec_config():
    return transformers.EncodecConfig(
        target_bandwidths = [10.0, 20.0], sampling_rate = 8000, audio_channels = 1, normalize = False,
        chunk_length_s = None, overlap = None, hidden_size = 16, num_filters = 4, num_residual_layers = 1,
        upsampling_ratios = [4, 2], codebook_size = 32, codebook_dim = 16, num_lstm_layers = 1)


def tiny_dac_config():
    return transformers.DacConfig(
        encoder_hidden_size = 4, downsampling_ratios = [2, 4], decoder_hidden_size = 16, n_codebooks = 3,
        codebook_size = 32, codebook_dim = 4, hidden_size = 16, sampling_rate = 8000, upsampling_ratios = [4, 2])


def tiny_mimi_config():
    return transformers.MimiConfig(
        sampling_rate = 8000, upsample_groups = 16, audio_channels = 1, hidden_size = 16, num_filters = 4,
        num_residual_layers = 1, upsampling_ratios = [4, 2], kernel_size = 3, last_kernel_size = 3,
        residual_kernel_size = 3, codebook_size = 32, codebook_dim = 16, vector_quantization_hidden_dimension = 16, num_quantizers = 4,
        num_semantic_quantizers = 1, num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 2,
        head_dim = 8, intermediate_size = 32, sliding_window = 16, use_streaming = False)


CASES = [
    (EncodecWrapper, tiny_encodec_config, dict(bandwidth = 20.0)),
    (DacWrapper, tiny_dac_config, {}),
    (MimiWrapper, tiny_mimi_config, {}),
]


@pytest.mark.parametrize('wrapper_cls, make_config, kwargs', CASES, ids = ['encodec', 'dac', 'mimi'])
def test_round_trip_from_local_directory(tmp_path, wrapper_cls, make_config, kwargs):
    model_cls = getattr(transformers, wrapper_cls.model_class_name)
    model_cls(make_config()).save_pretrained(tmp_path)

    codec = wrapper_cls(pretrained_path = tmp_path, **kwargs)
    assert isinstance(codec, Codec)
    assert codec.rq_groups == 1 and codec.seq_len_multiple_of == codec.downsample_factor
    assert codec.target_sample_hz == 8000 and codec.codebook_size == 32

    wave = torch.randn(2, codec.downsample_factor * 12 + 3) * 0.1
    codes = codec.tokenize(wave)
    assert codes.shape[0] == 2 and codes.shape[-1] == codec.num_quantizers
    assert codes.shape[1] == 12
    assert ((codes >= 0) & (codes < codec.codebook_size)).all()

    audio = codec.decode_from_codebook_indices(codes)
    assert audio.shape == (2, 1, 12 * codec.downsample_factor)
    assert torch.isfinite(audio).all()

    # coarser bitrate: the first level only decodes to the same length
    coarse = codec.decode_from_codebook_indices(codec.tokenize(wave, num_quantizers = 1))
    assert coarse.shape == audio.shape

    # loading from the directory and from the config give the same weights -> same codes
    again = wrapper_cls(pretrained_path = tmp_path, **kwargs)
    assert torch.equal(again.tokenize(wave), codes)


def test_encodec_bandwidth_sets_quantizers():
    codec = EncodecWrapper(config = tiny_encodec_config(), bandwidth = 10.0)
    frame_rate = math.ceil(8000 / codec.downsample_factor)
    assert codec.num_quantizers == int(1000 * 10.0 // (frame_rate * math.log2(32)))
    with pytest.raises(ValueError, match = 'bandwidth'):
        EncodecWrapper(config = tiny_encodec_config(), bandwidth = 15.)


def test_requires_local_source(tmp_path):
    with pytest.raises(ValueError, match = 'local directory'):
        EncodecWrapper()
    with pytest.raises(ValueError, match = 'not a local directory'):
        DacWrapper(pretrained_path = tmp_path / 'facebook-encodec_24khz')
    codec = MimiWrapper(config = tiny_mimi_config())
    with pytest.raises(ValueError):
        codec.tokenize(torch.full((1, 400), float('nan')))
    with pytest.raises(ValueError, match = 'codes'):
        codec.decode_from_codebook_indices(torch.full((1, 3, 1), 99))
