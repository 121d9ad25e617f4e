"""Tokenizer and codec attributes behave like the established library's plain attributes: subclasses written
against audiolm-pytorch 2.4.0 assign ``target_sample_hz`` / ``seq_len_multiple_of`` in their own ``__init__``
(issue 15, point 4), or override ``codebook_size`` / ``downsample_factor`` with their own property or class
attribute."""

from pathlib import Path

import pytest
import torch

from audiolm_pytorch import HubertWithKmeans, SoundStream, SpectralKmeansTokenizer
from audiolm_pytorch.audio import resample

ASSETS = Path(__file__).parents[1] / 'assets' / 'fairseq_hubert_tiny'
CKPT, KM = ASSETS / 'tiny_hubert.pt', ASSETS / 'tiny_hubert_L2_km16.bin'


class Hubert24k(HubertWithKmeans):
    """Written as the reference allows: plain assignments after super().__init__."""

    def __init__(self, checkpoint_path, kmeans_path):
        super().__init__(checkpoint_path = checkpoint_path, kmeans_path = kmeans_path, output_layer = 2)
        self.target_sample_hz = 24000
        self.seq_len_multiple_of = 480


class HubertSetsFirst(HubertWithKmeans):
    """Assignments before super().__init__ (plain ints are allowed there on an nn.Module); super() then
    overwrites them with its own arguments, as in the reference."""

    def __init__(self, checkpoint_path, kmeans_path):
        self.target_sample_hz = 8000
        super().__init__(checkpoint_path = checkpoint_path, kmeans_path = kmeans_path, output_layer = 2,
                         target_sample_hz = 16000)


class HubertOverrides(HubertWithKmeans):
    """Read-only attributes in the reference (properties) are overridden by a subclass's own definitions."""
    downsample_factor = 999

    @property
    def codebook_size(self):
        return 1234


def test_hubert_subclass_sets_rate_and_multiple_in_init():
    t = Hubert24k(CKPT, KM)
    assert (t.target_sample_hz, t.seq_len_multiple_of) == (24000, 480)
    # the hop follows the reassigned rate (320 samples at 16 kHz = 480 at 24 kHz), and so does the tokenizing
    assert t.downsample_factor == 480
    base = HubertWithKmeans(CKPT, KM, output_layer = 2)
    wave24 = torch.randn(1, 24000 // 4 + 100)             # cropped to a multiple of 480 at 24 kHz
    ids = t(wave24)
    assert ids.shape[-1] == t.num_frames(wave24.shape[-1])
    cropped = wave24[:, :wave24.shape[-1] // 480 * 480]
    assert torch.equal(ids, base(resample(cropped, 24000, 16000)))

    assert HubertSetsFirst(CKPT, KM).target_sample_hz == 16000


def test_hubert_subclass_overrides_read_only_attributes():
    t = HubertOverrides(CKPT, KM, output_layer = 2)
    assert (t.downsample_factor, t.codebook_size) == (999, 1234)


def test_assigned_values_are_checked():
    t = HubertWithKmeans(CKPT, KM, output_layer = 2)
    with pytest.raises(ValueError, match = 'fractional hop'):
        t.target_sample_hz = 44101
    with pytest.raises(ValueError, match = 'positive int'):
        t.target_sample_hz = 0
    with pytest.raises(ValueError, match = 'seq_len_multiple_of'):
        t.seq_len_multiple_of = -3
    assert t.target_sample_hz == 16000                     # a refused value leaves the old one
    t.seq_len_multiple_of = None
    assert t.cropped_num_samples(1001) == 1001


def test_spectral_tokenizer_rate_is_fixed_after_build():
    class Sub(SpectralKmeansTokenizer):
        def __init__(self):
            super().__init__(codebook_size = 4, target_sample_hz = 16000)
            self.seq_len_multiple_of = 320
            self.target_sample_hz = 16000                 # same rate: fine

    t = Sub()
    assert t.seq_len_multiple_of == 320
    with pytest.raises(ValueError, match = 'built for target_sample_hz=16000'):
        t.target_sample_hz = 24000


def test_soundstream_subclass_sets_plain_attributes():
    class MyStream(SoundStream):
        def __init__(self):
            super().__init__(codebook_size = 32, rq_num_quantizers = 2, channels = 8, strides = (2, 2),
                             channel_mults = (1, 2), codebook_dim = 8, attn_depth = 0, target_sample_hz = 16000)
            self.target_sample_hz = 8000
            self.codebook_size = 32

    s = MyStream()
    assert (s.target_sample_hz, s.codebook_size, s.downsample_factor, s.seq_len_multiple_of) == (8000, 32, 4, 4)
