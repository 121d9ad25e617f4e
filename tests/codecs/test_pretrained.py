"""Pretrained codec wrappers on tiny random transformers configs, saved and reloaded from a local directory."""

import math

import pytest
import torch
import transformers

from audiolm_pytorch import DacWrapper, EncodecWrapper, MimiWrapper
from audiolm_pytorch.codecs.base import Codec


def tiny_encodec_config(**kwargs):
    config = dict(target_bandwidths = [10.0, 20.0], sampling_rate = 8000, audio_channels = 1, normalize = False,
                  chunk_length_s = None, overlap = None, hidden_size = 16, num_filters = 4, num_residual_layers = 1,
                  upsampling_ratios = [4, 2], codebook_size = 32, codebook_dim = 16, num_lstm_layers = 1)
    return transformers.EncodecConfig(**{**config, **kwargs})


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


def transformers_reference(wrapper_cls, model, wave, num_quantizers):
    """Codes ``(b, q, n)`` and audio from the ``transformers`` model's own forward (encode + decode)."""
    if wrapper_cls is EncodecWrapper:
        out = model(wave, bandwidth = 20.0, return_dict = True)
        return out.audio_codes[0], out.audio_values
    if wrapper_cls is DacWrapper:
        out = model(wave, n_quantizers = num_quantizers, return_dict = True)
        return out.audio_codes[:, :num_quantizers], out.audio_values
    out = model(wave, num_quantizers = num_quantizers, return_dict = True)
    return out.audio_codes, out.audio_values


@pytest.mark.parametrize('wrapper_cls, make_config, kwargs', CASES, ids = ['encodec', 'dac', 'mimi'])
def test_codes_and_audio_equal_the_transformers_model(wrapper_cls, make_config, kwargs):
    """The wrapper's ``(b, frames, q)`` codes are the transformers model's codes (level ``i`` at ``[..., i]``) and
    its decoded audio is the model's own decode. Checked against: the quantizer levels reversed in ``tokenize``
    (``codes[:, ::-1]``) fails here, as does decoding with the levels reversed."""
    torch.manual_seed(0)
    codec = wrapper_cls(config = make_config(), **kwargs)
    with torch.no_grad():   # random configs start with empty (zero) codebooks: every frame would get code 0
        for name, buffer in codec.model.named_buffers():
            if name.rsplit('.', 1)[-1] in ('embed', 'embed_avg', 'embed_sum'):
                buffer.normal_(std = 0.5)
    model_cls = getattr(transformers, wrapper_cls.model_class_name)
    reference = model_cls(codec.model.config).eval()
    reference.load_state_dict(codec.model.state_dict())

    frames = 10
    wave = torch.randn(2, codec.downsample_factor * frames) * 0.3
    with torch.no_grad():
        ref_codes, ref_audio = transformers_reference(wrapper_cls, reference, wave[:, None], codec.num_quantizers)
    codes = codec.tokenize(wave)
    assert codes.shape == (2, frames, codec.num_quantizers)
    assert torch.equal(codes, ref_codes.permute(0, 2, 1))
    # the levels differ from each other, so a reordering of levels cannot pass unnoticed
    assert len({tuple(codes[..., level].flatten().tolist()) for level in range(codes.shape[-1])}) == codes.shape[-1]

    audio = codec.decode_from_codebook_indices(codes)
    assert audio.shape == (2, 1, frames * codec.downsample_factor)
    torch.testing.assert_close(audio, ref_audio.reshape(2, 1, -1)[..., :audio.shape[-1]].float(), rtol = 1e-5, atol = 1e-6)
    # fewer levels: the first ones, as transformers decodes them
    if wrapper_cls is not EncodecWrapper:   # EnCodec picks its levels by bandwidth only
        first = codec.tokenize(wave, num_quantizers = 2)
        assert torch.equal(first, codes[..., :2])
        with torch.no_grad():
            _, ref_first = transformers_reference(wrapper_cls, reference, wave[:, None], 2)
        torch.testing.assert_close(codec.decode_from_codebook_indices(first), ref_first.reshape(2, 1, -1)[..., :audio.shape[-1]].float(),
                                   rtol = 1e-5, atol = 1e-6)


# ---- codes usable in training, chunked / normalized models refused -------------------------------------------------

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
