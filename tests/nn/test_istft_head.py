"""The causal inverse-STFT head: synthesised values, causality, streaming = whole signal, clear errors."""
import math

import pytest
import torch

from audiolm_pytorch.nn.istft_head import CausalISTFTHead
from tests.helpers import streamed


def test_one_bin_synthesises_a_steady_cosine():
    n_fft, hop, frames, k, amplitude = 32, 8, 12, 4, 0.5
    head = CausalISTFTHead(3, hop = hop, n_fft = n_fft)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-30.)                               # every bin silent ...
        head.proj.bias[k] = math.log(amplitude)                  # ... but bin k, at phase 0 (phase biases below)
        head.proj.bias[head.bins:] = 0.
    out = head(torch.randn(1, 3, frames))                        # (1, 1, frames * hop)
    assert out.shape == (1, 1, frames * hop)
    # each frame: window * gain * 2 A / sqrt(n_fft) * cos(2 pi k n / n_fft); the periodic Hann window at hop n_fft / 4
    # overlap-adds to 2, and k * hop / n_fft is whole, so once n_fft - hop samples are in, the frames add up coherently
    t = torch.arange(n_fft - hop, frames * hop, dtype = torch.float32)
    expected = head.gain * 2 * (2 * amplitude / math.sqrt(n_fft)) * torch.cos(2 * math.pi * k * t / n_fft)
    assert torch.allclose(out[0, 0, n_fft - hop:], expected, atol = 1e-5)


def test_samples_depend_on_no_later_frame():
    torch.manual_seed(0)
    head = CausalISTFTHead(5, hop = 4, n_fft = 16)
    x = torch.randn(1, 5, 10, requires_grad = True)
    out = head(x)                                                # (1, 1, 40)
    for t in (1, 5, 17, 39):                                   # (a frame's first sample is 0: Hann)
        (grad,) = torch.autograd.grad(out[0, 0, t], x, retain_graph = True)
        frame = t // 4
        assert grad[0, :, frame + 1:].abs().sum() == 0
        assert grad[0, :, frame].abs().sum() > 0
        assert grad[0, :, :max(0, frame - 3)].abs().sum() == 0          # nor on frames whose window ended before t


@pytest.mark.parametrize('chunks', [[1, 1, 3, 0, 5], [10], [2, 8]])
def test_streaming_equals_the_whole_signal(chunks):
    torch.manual_seed(0)
    head = CausalISTFTHead(5, hop = 4, n_fft = 20, channels = 2)
    x = torch.randn(3, 5, 10)
    whole = head(x)
    assert whole.shape == (3, 2, 40)
    assert torch.allclose(streamed(head, x, chunks, batch_size = 3), whole, atol = 1e-6)


def test_time_major_layout_and_empty_input():
    torch.manual_seed(0)
    head = CausalISTFTHead(5, hop = 4, n_fft = 16)
    x = torch.randn(2, 5, 7)
    assert torch.allclose(head(x.unsqueeze(2).contiguous(memory_format = torch.channels_last)), head(x), atol = 1e-6)
    assert head(x[..., :0]).shape == (2, 1, 0)


def test_magnitudes_are_capped():
    head = CausalISTFTHead(2, hop = 4, n_fft = 16)
    out = head(torch.full((1, 2, 6), 1e4))                       # log-magnitudes far beyond the cap
    assert torch.isfinite(out).all() and out.abs().max() < 1e3


def test_bad_settings_raise():
    for hop, n_fft in ((8, 4), (4, 15), (0, 8)):
        with pytest.raises(ValueError, match = 'even n_fft >= hop >= 1'):
            CausalISTFTHead(4, hop = hop, n_fft = n_fft)
