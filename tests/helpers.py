"""Shared tiny models and stand-ins for the tests (imported as ``tests.helpers`` from every test folder; the
pytest fixtures built on them live in ``tests/conftest.py``).

Everything here is deterministic and small enough for CPU tests: one tiny SoundStream builder, one stub codec and
one stub semantic tokenizer (for the LM stages, AudioLM, MusicLM and SoundStorm), the tiny LM stages on a spectral
k-means tokenizer, the tiny SoundStorm, and a toy trainer on a toy denoiser for the shared training loop.
"""

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn
from torch.utils.data import Dataset

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.trainers.base import Sample, Trainer

ASSETS = Path(__file__).parent / 'assets'
NAN, INF = float('nan'), float('inf')

# ---- codec ----------------------------------------------------------------------------------------------------

def tiny_soundstream(**kwargs):
    from audiolm_pytorch import SoundStream
    config = dict(codebook_size = 32, rq_num_quantizers = 4, channels = 8, strides = (2, 4), channel_mults = (2, 4),
                  codebook_dim = 16, attn_window_size = 16, attn_depth = 1, attn_heads = 2, attn_dim_head = 8,
                  use_local_attn = True,   # the bottleneck transformers stay under test (off by default)
                  multi_spectral_window_powers_of_two = (6, 7, 8), multi_spectral_n_mels = 16,
                  discr_multi_scales = (), target_sample_hz = 16000)  # the STFT discriminator stays: a real GAN step
    return SoundStream(**{**config, **kwargs})


def sixteen_k_folder(tmp_path, count = 4):
    folder = tmp_path / 'audio'
    folder.mkdir(exist_ok = True)
    for path in sorted(ASSETS.glob('*_16k.wav'))[:count]:
        (folder / path.name).symlink_to(path)
    return folder


class StubCodec(nn.Module):
    """Deterministic codec: each frame of ``hop`` samples gives one code per level; decoding sums per-level
    codebook vectors (level codes of -1 are absent)."""

    def __init__(self, codebook_size = 16, num_quantizers = 4, rq_groups = 1, hop = 4, target_sample_hz = 1600):
        super().__init__()
        self.codebook_size, self.num_quantizers, self.rq_groups = codebook_size, num_quantizers, rq_groups
        self.downsample_factor = self.seq_len_multiple_of = hop
        self.target_sample_hz = target_sample_hz
        self.register_buffer('codebooks', torch.randn(num_quantizers * rq_groups, codebook_size, hop,
                                                      generator = torch.Generator().manual_seed(0)))

    def tokenize(self, wave):
        wave = wave.reshape(wave.shape[0], -1)
        frames = wave.shape[-1] // self.downsample_factor
        x = wave[:, :frames * self.downsample_factor].reshape(wave.shape[0], frames, -1)
        levels = [((x * (7. * (i + 1))).sum(-1).floor().long() % self.codebook_size)
                  for i in range(self.num_quantizers * self.rq_groups)]
        return torch.stack(levels, dim = -1)

    def decode_from_codebook_indices(self, codes):
        out = 0.
        for i in range(codes.shape[-1]):
            level = codes[..., i]
            vec = self.codebooks[i][level.clamp(min = 0)] * (level >= 0)[..., None]
            out = out + vec
        return out.reshape(codes.shape[0], 1, -1)


# the codec SoundStorm's tests use: 800 Hz audio, 16 samples per frame (50 Hz), 3 levels
STORM_CODEC = dict(num_quantizers = 3, hop = 16, target_sample_hz = 800)


# ---- semantic tokenizers --------------------------------------------------------------------------------------

class StubSemanticTokenizer(nn.Module):
    """Deterministic stand-in for HuBERT + k-means: quantised frame means."""

    def __init__(self, codebook_size = 20, downsample_factor = 8, target_sample_hz = 800):
        super().__init__()
        self.codebook_size, self.downsample_factor, self.target_sample_hz = codebook_size, downsample_factor, target_sample_hz
        self.seq_len_multiple_of = downsample_factor
        self.calls = 0

    def forward(self, wave, flatten = True, input_sample_hz = None):
        self.calls += 1
        if input_sample_hz is not None and input_sample_hz != self.target_sample_hz:
            from audiolm_pytorch.audio import resample
            wave = resample(wave, input_sample_hz, self.target_sample_hz)
        frames = wave.shape[-1] // self.downsample_factor
        means = wave[..., :frames * self.downsample_factor].reshape(wave.shape[0], frames, -1).mean(-1)
        return ((means * 40).floor().long() % self.codebook_size)


class StubSemantic(nn.Module):
    """Toy semantic tokenizer at 25 Hz (half the stub codec's frame rate)."""

    target_sample_hz, downsample_factor, seq_len_multiple_of, codebook_size = 800, 32, None, 10

    def forward(self, wave, flatten = True, input_sample_hz = None):
        frames = wave.shape[-1] // self.downsample_factor
        chunks = wave[:, :frames * self.downsample_factor].reshape(wave.shape[0], frames, -1)
        return (chunks.abs().mean(-1) * 131).long() % self.codebook_size


def spectral_tokenizer():
    from audiolm_pytorch import SpectralKmeansTokenizer
    tokenizer = SpectralKmeansTokenizer(codebook_size = 16, target_sample_hz = 16000)
    tokenizer.fit(sorted(ASSETS.glob('*_16k.wav'))[:3], epochs = 2)
    return tokenizer


# ---- LM stages and SoundStorm ---------------------------------------------------------------------------------

TINY_LM = dict(dim = 32, depth = 1, heads = 2, dim_head = 16)


def stages(wav2vec, codebook_size = 32):
    from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer
    semantic = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **TINY_LM)
    coarse = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = codebook_size,
                               num_coarse_quantizers = 2, **TINY_LM)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = codebook_size, **TINY_LM)
    return semantic, coarse, fine


TINY_CONFORMER = dict(dim = 32, depth = 1, dim_head = 8, heads = 4, conv_kernel_size = 5)


def tiny_soundstorm(q = 3, c = 16, groups = 1, **kwargs):
    from audiolm_pytorch import ConformerWrapper, SoundStorm
    net = ConformerWrapper(codebook_size = c, num_quantizers = q, conformer = TINY_CONFORMER, grouped_quantizers = groups)
    return SoundStorm(net, **kwargs)


# ---- the shared training loop ---------------------------------------------------------------------------------

class ToyDenoiser(Checkpointable, nn.Module):
    def __init__(self, *, dim = 16, dropout = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, dim))
        self.dim = dim

    def forward(self, wave):
        frames = wave.reshape(wave.shape[0], -1, self.dim)
        noisy = frames + 0.1 * torch.randn_like(frames)          # consumes the torch RNG: resume must restore it
        return nn.functional.mse_loss(self.net(noisy), frames)


class ToyWaves(Dataset):
    """Random crops of fixed sine waves (the crop offset consumes the torch RNG, as SoundDataset does)."""

    def __init__(self, n = 10, length = 64, text = None):
        t = torch.arange(256) / 256
        self.waves = [torch.sin(2 * math.pi * (i + 1) * t) for i in range(n)]
        self.length, self.text = length, text

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, index):
        offset = int(torch.randint(0, 256 - self.length, ()))
        wave = self.waves[index][offset:offset + self.length]
        if self.text == 'first':
            return f'text {index}', wave
        if self.text == 'last':
            return wave, f'text {index}'
        return wave


class ToyTrainer(Trainer):
    checkpoint_name = 'toy'

    def __init__(self, model, **kwargs):
        self.nan_on_steps = set()
        self.seen_texts = []
        super().__init__(model, **kwargs)

    def compute_loss(self, module, batch):
        loss = module(batch.waves[0])
        if batch.texts is not None:
            self.seen_texts.extend(batch.texts)
        if self.steps in self.nan_on_steps:
            loss = loss * float('nan')
        return loss, {}

    def make_samples(self, batch):
        return [Sample('input', batch.waves[0][0], 16000)]


# ---- bad audio files ------------------------------------------------------------------------------------------

def write_bad_files(folder: Path) -> dict:
    """Corrupt / truncated / zero-length / NaN files: name -> path."""
    folder.mkdir(parents = True, exist_ok = True)
    good = folder / 'good.wav'
    sf.write(good, (np.sin(np.arange(4000) / 10.) * 0.3).astype(np.float32), 16000)
    raw = good.read_bytes()
    files = dict(good = good)
    files['zero_bytes'] = folder / 'zero_bytes.wav'
    files['zero_bytes'].write_bytes(b'')
    files['truncated_header'] = folder / 'truncated_header.wav'
    files['truncated_header'].write_bytes(raw[:30])
    files['not_audio'] = folder / 'not_audio.flac'
    files['not_audio'].write_bytes(b'this is not audio at all ' * 40)
    files['zero_frames'] = folder / 'zero_frames.wav'
    sf.write(files['zero_frames'], np.zeros(0, dtype = np.float32), 16000)
    files['nan'] = folder / 'nan.wav'
    sf.write(files['nan'], np.full(100, np.nan, dtype = np.float32), 16000, subtype = 'FLOAT')
    return files


def streamed(module, x, chunks, batch_size: int):
    """``module.forward_stream`` over ``x`` split into ``chunks`` (lengths on the last axis), outputs concatenated."""
    state, pieces = module.init_state(batch_size), []
    for piece in x.split(chunks, dim = -1):
        out, state = module.forward_stream(piece, state)
        pieces.append(out)
    return torch.cat(pieces, dim = -1)
