"""Streaming: chunked encode/decode equals the whole-signal run; outputs are causal (checked by gradients)."""

import pytest
import torch

from audiolm_pytorch import SoundStream
from audiolm_pytorch.nn.causal_conv import CausalConv1d, CausalConvTranspose1d
from audiolm_pytorch.nn.local_attention import LocalTransformer

STREAM_TINY = dict(codebook_size = 32, rq_num_quantizers = 3, channels = 4, channel_mults = (2, 4), strides = (2, 4),
                   codebook_dim = 16, attn_window_size = 12, attn_heads = 2, attn_dim_head = 8, attn_depth = 2,
                   squeeze_excite = True, use_local_attn = True, stft_discriminator = False, discr_multi_scales = ())


# the spectral encoder front / decoder head replace the first encoder block and the last decoder block (2 samples)
MODEL_OPTIONS = dict(elu = {}, weight_norm_snake = dict(use_weight_norm = True, activation = 'snake'),
                     spectral = dict(stft_encoder_hop = 2, stft_encoder_n_fft = 6, istft_decoder_hop = 2,
                                     istft_decoder_n_fft = 8))


@pytest.fixture(scope = 'module', params = list(MODEL_OPTIONS))
def model(request):
    torch.manual_seed(0)
    options = MODEL_OPTIONS[request.param]
    model = SoundStream(**STREAM_TINY, **options)
    model.train()
    model(torch.randn(2, 800) * 0.1, return_codes_only = True)     # k-means init of the codebooks
    return model.eval()


def test_chunked_encode_decode_equals_whole_signal(model):
    hop, frames, chunk_frames = model.downsample_factor, 47, 10     # chunks: 10, 10, 10, 10, 7 frames
    x = torch.randn(2, frames * hop) * 0.1

    codes = model.tokenize(x)
    with torch.no_grad():
        whole_audio = model.decode_from_codebook_indices(codes)

    state, chunk_codes = model.init_encoder_state(batch_size = 2), []
    for chunk in x.split(chunk_frames * hop, dim = -1):
        c, state = model.encode_chunk(chunk, state)
        chunk_codes.append(c)
    assert state.frames == frames
    streamed_codes = torch.cat(chunk_codes, dim = 1)
    assert torch.equal(streamed_codes, codes)

    state, pieces = model.init_decoder_state(batch_size = 2), []
    for c in streamed_codes.split(chunk_frames, dim = 1):
        audio, state = model.decode_chunk(c, state)
        pieces.append(audio)
    assert torch.allclose(torch.cat(pieces, dim = -1), whole_audio, atol = 1e-5)

    # the generator form, with a coarser bitrate
    generated = torch.cat(list(model.stream_tokenize(x.split(3 * hop, dim = -1), num_quantizers = 2)), dim = 1)
    assert torch.equal(generated, codes[..., :2])


def test_chunks_must_hold_whole_frames(model):
    with pytest.raises(ValueError, match = 'whole frames'):
        model.encode_chunk(torch.randn(1, model.downsample_factor + 1), model.init_encoder_state())


def test_output_is_causal_by_gradients(model):
    hop, n = model.downsample_factor, 40 * model.downsample_factor
    x = (torch.randn(1, n) * 0.1).requires_grad_()
    latents = model.encode(model.process_input(x))                 # (1, frames, d)
    recon = model.decode(latents)                                   # (1, 1, n)

    # a codec emits a frame once all its samples arrived: output t depends on nothing after the end of its frame
    t = 17 * hop + 5
    frame_end = (t // hop + 1) * hop
    (grad,) = torch.autograd.grad(recon[0, 0, t], x, retain_graph = True)
    assert grad[0, frame_end:].abs().max() == 0
    assert grad[0, :t - hop].abs().sum() > 0

    frame = 21
    (grad,) = torch.autograd.grad(latents[0, frame].sum(), x)
    assert grad[0, (frame + 1) * hop:].abs().max() == 0


def test_local_transformer_long_input_path_matches_banded_mask():
    torch.manual_seed(0)
    net = LocalTransformer(dim = 16, depth = 2, heads = 2, dim_head = 8, window_size = 4).eval()
    x = torch.randn(2, 37, 16)
    with torch.no_grad():
        chunked = net(x)                                           # n > 4 * window: kv-cache path
        from audiolm_pytorch.nn.local_attention import banded_causal_mask
        positions = torch.arange(37)
        banded = net._run(x, 0, banded_causal_mask(positions, positions, 4), None)[0]
    assert torch.allclose(chunked, banded, atol = 1e-5)
    # a token beyond the window has no influence
    x2 = x.clone()
    x2[:, 10] += torch.randn(16)
    with torch.no_grad():
        changed = (net(x2) - chunked).abs().amax(dim = (0, 2)) > 1e-6
    assert not changed[:10].any() and changed[10] and not changed[10 + 2 * 4 - 1:].any()


@pytest.mark.parametrize('stride, kernel, dilation', [(1, 7, 3), (4, 8, 1), (5, 10, 1)])
def test_causal_conv_streams(stride, kernel, dilation):
    conv = CausalConv1d(3, 5, kernel, stride = stride, dilation = dilation)
    x = torch.randn(2, 3, stride * 23)
    state, outs = conv.init_state(2), []
    for chunk in x.split(stride * 4, dim = -1):
        out, state = conv.forward_stream(chunk, state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, dim = -1), conv(x), atol = 1e-6)

    up = CausalConvTranspose1d(3, 5, stride = stride + 1)
    state, outs = up.init_state(2), []
    for chunk in x.split(7, dim = -1):
        out, state = up.forward_stream(chunk, state)
        outs.append(out)
    assert torch.allclose(torch.cat(outs, dim = -1), up(x), atol = 1e-6)


def test_time_major_layout_matches_conv1d_path(model):
    from audiolm_pytorch.nn.causal_conv import from_time_major, to_time_major
    torch.manual_seed(0)
    x = torch.randn(2, 1, 640) * 0.1
    with torch.no_grad():
        for conv in (CausalConv1d(1, 6, 7, dilation = 3), CausalConv1d(6, 8, 4, stride = 2)):
            h = torch.randn(2, conv.chan_in, 64)
            assert torch.allclose(from_time_major(conv(to_time_major(h))), conv(h), atol = 1e-5)
        up = CausalConvTranspose1d(8, 4, stride = 4)
        h = torch.randn(2, 8, 16)
        assert torch.allclose(from_time_major(up(to_time_major(h))), up(h), atol = 1e-5)
        time_major = from_time_major(model.encoder(to_time_major(x)))     # squeeze-excite included
        assert torch.allclose(time_major, model.encoder(x), atol = 1e-5)
