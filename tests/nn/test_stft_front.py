"""The causal STFT front end: spectral values, causality, streaming = whole signal, clear errors."""
import math

import pytest
import torch

from audiolm_pytorch.nn.stft_front import CausalSTFTFront
from tests.helpers import streamed


def test_a_sinusoid_peaks_at_its_bin():
    torch.manual_seed(0)
    front = CausalSTFTFront(8, hop = 8, n_fft = 32)
    t = torch.arange(32 * 8, dtype = torch.float32)
    x = torch.sin(2 * math.pi * 5 / 32 * t).reshape(1, 1, -1)     # bin 5 of a 32-point FFT
    padded = torch.nn.functional.pad(x, (32 - 8, 0))
    features = front.spectral_features(padded)                    # (1, 1, frames, 3 * 17)
    assert features.shape == (1, 1, 32, 3 * 17)
    log_magnitude = features[0, 0, 4:, :17]                       # frames whose window is inside the signal
    assert (log_magnitude.argmax(dim = -1) == 5).all()
    # Hann window, orthonormal FFT: |X_5| = sum(w) / (2 sqrt(32)) = 16 / (2 sqrt(32))
    assert torch.allclose(log_magnitude[:, 5], torch.tensor(16 / (2 * math.sqrt(32))).log10(), atol = 1e-3)
    assert front(x).shape == (1, 8, 32)


def test_frames_depend_on_no_later_sample():
    torch.manual_seed(0)
    front = CausalSTFTFront(6, hop = 4, n_fft = 16)
    x = torch.randn(1, 1, 64, requires_grad = True)
    out = front(x)                                                # (1, 6, 16)
    for frame in (0, 3, 9, 15):
        (grad,) = torch.autograd.grad(out[0, :, frame].sum(), x, retain_graph = True)
        end = (frame + 1) * 4
        assert grad[0, 0, end:].abs().sum() == 0
        assert grad[0, 0, end - 1].abs() > 0                      # its own last sample counts
        assert grad[0, 0, :max(0, end - 16)].abs().sum() == 0      # nor on samples before its window


@pytest.mark.parametrize('chunks', [[4, 4, 8, 0, 28, 20], [64], [12, 52]])
def test_streaming_equals_the_whole_signal(chunks):
    torch.manual_seed(0)
    front = CausalSTFTFront(6, hop = 4, n_fft = 20, channels = 2)
    x = torch.randn(3, 2, 64)
    whole = front(x)
    assert torch.allclose(streamed(front, x, chunks, batch_size = 3), whole, atol = 1e-5)


def test_time_major_layout_gives_the_same_frames():
    torch.manual_seed(0)
    front = CausalSTFTFront(6, hop = 4, n_fft = 16)
    x = torch.randn(2, 1, 40)
    time_major = front(x.unsqueeze(2).contiguous(memory_format = torch.channels_last))
    assert time_major.shape == (2, 6, 1, 10)
    assert torch.allclose(time_major.squeeze(2), front(x), atol = 1e-6)


def test_bad_settings_and_chunks_raise():
    with pytest.raises(ValueError, match = 'n_fft >= hop'):
        CausalSTFTFront(4, hop = 8, n_fft = 4)
    front = CausalSTFTFront(4, hop = 4, n_fft = 8)
    with pytest.raises(ValueError, match = 'whole hops'):
        front.forward_stream(torch.randn(1, 1, 6), front.init_state(1))
