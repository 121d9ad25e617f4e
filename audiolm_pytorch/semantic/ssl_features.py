"""Frame features of self-supervised speech encoders, up to an intermediate layer (what ``HubertWithKmeans`` /
``W2VBertWithKmeans`` cluster):

- ``HubertFeatures``: HuBERT or wav2vec 2.0 from a fairseq ``.pt`` (read without fairseq) or a local
  ``transformers`` model directory;
- ``W2VBertFeatures``: w2v-BERT 2.0 (``transformers.Wav2Vec2BertModel``) on its kaldi-style fbank front-end,
  computed in torch (``KaldiFbank``).

Each returns ``(features (b, frames, d), frame_lengths (b,))``, with the encoder frozen and cut after
``output_layer``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.transformers_dirs import transformers_model_type
from audiolm_pytorch.utils import exists

__all__ = ['HubertFeatures', 'W2VBertFeatures', 'KaldiFbank']


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _check_output_layer(output_layer: int, num_layers: int, path) -> None:
    if not 1 <= output_layer <= num_layers:
        raise ValueError(f'output_layer={output_layer} but {path} has {num_layers} encoder layers: '
                         f'choose 1..{num_layers}')


def _frame_lengths(num_frames_fn, lengths: Tensor | None, batch: int, frames: int, device) -> Tensor:
    if not exists(lengths):
        return torch.full((batch,), frames, dtype = torch.long, device = device)
    return num_frames_fn(lengths).clamp(min = 0, max = frames)


# ----------------------------------------------------------------------------------------------------------
# HuBERT / wav2vec 2.0 features
# ----------------------------------------------------------------------------------------------------------

class HubertFeatures(nn.Module):
    """HuBERT / wav2vec 2.0 encoder cut after ``output_layer`` (1-based, fairseq's meaning: the output of that
    transformer layer; for pre-LN models (``layer_norm_first``) taken before the encoder's final LayerNorm).

    ``forward(wave (b, n) at sample_hz, lengths (b,) | None) -> (features (b, frames, dim), frame_lengths (b,))``.
    """

    def __init__(self, checkpoint_path: str | os.PathLike, *, output_layer: int, normalize: bool | None = None):
        super().__init__()
        path = Path(checkpoint_path)
        if not path.exists():
            raise FileNotFoundError(f'checkpoint not found: {path}')

        if path.is_dir():
            model, file_normalize, sample_hz, eps = self._load_transformers(path)
        else:
            from audiolm_pytorch.semantic.fairseq_checkpoint import load_fairseq_model
            loaded = load_fairseq_model(path)
            model, file_normalize, sample_hz = loaded.model, loaded.normalize, loaded.sample_rate
            eps = 1e-5  # fairseq: F.layer_norm(wav, wav.shape)

        config = model.config
        _check_output_layer(output_layer, len(model.encoder.layers), path)
        model.encoder.layers = model.encoder.layers[:output_layer]  # later layers are never needed
        if config.do_stable_layer_norm:
            model.encoder.layer_norm = nn.Identity()  # pre-LN: layer L is read before the final LayerNorm
        if getattr(model, 'adapter', None) is not None:
            model.adapter = None

        self.model = model.eval().requires_grad_(False)
        self.output_layer = output_layer
        self.normalize = file_normalize if normalize is None else normalize
        self.norm_eps = eps
        self.sample_hz = int(sample_hz)
        self.dim = int(config.hidden_size)
        self.conv_kernels = [int(k) for k in config.conv_kernel]
        self.conv_strides = [int(s) for s in config.conv_stride]

    @staticmethod
    def _load_transformers(path: Path):
        model_type = transformers_model_type(path)
        if model_type == 'hubert':
            from transformers import HubertModel as model_cls
        elif model_type == 'wav2vec2':
            from transformers import Wav2Vec2Model as model_cls
        elif model_type == 'wav2vec2-bert':
            raise ValueError(f'{path} holds a w2v-BERT model: use W2VBertWithKmeans')
        else:
            raise ValueError(f'{path} holds a transformers model of type {model_type!r}; HubertWithKmeans reads '
                             '"hubert" and "wav2vec2" models')
        model = model_cls.from_pretrained(str(path), local_files_only = True)
        preprocessor = _read_json(path / 'preprocessor_config.json')
        # without a preprocessor config follow the released models: layer-norm extractors normalize the wave
        normalize = bool(preprocessor.get('do_normalize', model.config.feat_extract_norm == 'layer'))
        return model, normalize, int(preprocessor.get('sampling_rate', 16000)), 1e-7

    @property
    def hop_length(self) -> int:
        return math.prod(self.conv_strides)

    def num_frames(self, num_samples):
        """Frames produced for ``num_samples`` (int or tensor) input samples: the conv stack's output length."""
        n = num_samples
        for kernel, stride in zip(self.conv_kernels, self.conv_strides):
            n = (n - kernel) // stride + 1
        return n.clamp(min = 0) if isinstance(n, Tensor) else max(n, 0)

    @property
    def min_samples(self) -> int:
        """Receptive field of one frame (the shortest input giving one frame)."""
        field = 1
        for kernel, stride in reversed(list(zip(self.conv_kernels, self.conv_strides))):
            field = (field - 1) * stride + kernel
        return field

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mask = None
        if exists(lengths):
            mask = torch.arange(wave.shape[-1], device = wave.device) < lengths[:, None]   # (b, n)

        wave = wave.float()
        if self.normalize:  # zero mean, unit variance per utterance over its real samples
            weights = mask.float() if exists(mask) else torch.ones_like(wave)
            count = weights.sum(-1, keepdim = True).clamp(min = 1)
            mean = (wave * weights).sum(-1, keepdim = True) / count
            var = ((wave - mean).pow(2) * weights).sum(-1, keepdim = True) / count
            wave = (wave - mean) * torch.rsqrt(var + self.norm_eps)
        if exists(mask):
            wave = wave * mask

        dtype = next(self.model.parameters()).dtype
        out = self.model(wave.to(dtype), attention_mask = mask.long() if exists(mask) else None)
        features = out.last_hidden_state                                                     # (b, frames, d)
        frame_lengths = _frame_lengths(self.num_frames, lengths, wave.shape[0], features.shape[1], wave.device)
        return features, frame_lengths


# ----------------------------------------------------------------------------------------------------------
# w2v-BERT 2.0 features
# ----------------------------------------------------------------------------------------------------------

class KaldiFbank(nn.Module):
    """Kaldi-style log-mel filterbank in torch, as ``SeamlessM4TFeatureExtractor`` computes it (the w2v-BERT 2.0
    front-end): 25 ms povey windows every 10 ms on 16-bit-scaled audio, per-frame DC removal, pre-emphasis 0.97,
    512-point power spectrum, 80 kaldi-mel filters (20 Hz to Nyquist, triangles in mel space), natural log.

    ``forward(wave (b, n)) -> (b, frames, n_mels)`` with ``frames = 1 + (n - 400) // 160``.
    """

    def __init__(self, *, sample_hz: int = 16000, n_mels: int = 80, frame_length: int = 400, hop_length: int = 160,
                 n_fft: int = 512, preemphasis: float = 0.97, low_hz: float = 20., mel_floor: float = 1.192092955078125e-07):
        super().__init__()
        self.frame_length, self.hop_length, self.n_fft = frame_length, hop_length, n_fft
        self.preemphasis, self.mel_floor = preemphasis, mel_floor

        window = torch.hann_window(frame_length, periodic = False, dtype = torch.float64).pow(0.85)  # povey
        self.register_buffer('window', window.float(), persistent = False)

        mel = lambda hz: 1127. * np.log1p(np.asarray(hz, dtype = np.float64) / 700.)
        n_freqs = n_fft // 2 + 1
        fft_mels = mel(np.arange(n_freqs) * sample_hz / n_fft)                         # (f,)
        edges = np.linspace(mel(low_hz), mel(sample_hz // 2), n_mels + 2)              # (m + 2,)
        rising = (fft_mels[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
        falling = (edges[None, 2:] - fft_mels[:, None]) / (edges[2:] - edges[1:-1])
        filters = np.maximum(0., np.minimum(rising, falling))                           # (f, m)
        self.register_buffer('filters', torch.from_numpy(filters).float(), persistent = False)

    def num_frames(self, num_samples):
        n = (num_samples - self.frame_length) // self.hop_length + 1
        return n.clamp(min = 0) if isinstance(n, Tensor) else max(n, 0)

    def forward(self, wave: Tensor) -> Tensor:
        with torch.autocast(device_type = wave.device.type, enabled = False):
            frames = wave.float().mul(32768.).unfold(-1, self.frame_length, self.hop_length)   # (b, t, 400)
            frames = frames - frames.mean(-1, keepdim = True)
            frames = torch.cat((frames[..., :1] * (1. - self.preemphasis),
                                frames[..., 1:] - self.preemphasis * frames[..., :-1]), dim = -1)
            frames = frames * self.window
            power = torch.fft.rfft(frames, n = self.n_fft).abs().pow(2)                       # (b, t, f)
            return (power @ self.filters).clamp(min = self.mel_floor).log()                   # (b, t, m)


class W2VBertFeatures(nn.Module):
    """w2v-BERT 2.0 encoder cut after ``output_layer``, fed by ``KaldiFbank`` features normalized per mel bin
    over each utterance and stacked in pairs (``stride`` frames -> one 20 ms frame of ``stride * n_mels`` dims).

    ``forward(wave (b, n), lengths (b,) | None) -> (features (b, frames, dim), frame_lengths (b,))``.
    """

    def __init__(self, checkpoint_path: str | os.PathLike, *, output_layer: int):
        super().__init__()
        path = Path(checkpoint_path)
        if not path.exists():
            raise FileNotFoundError(f'checkpoint not found: {path}')
        if not path.is_dir():
            raise ValueError(f'{path} is a file: W2VBertWithKmeans loads a transformers Wav2Vec2BertModel directory')
        model_type = transformers_model_type(path)
        if model_type != 'wav2vec2-bert':
            raise ValueError(f'{path} holds a {model_type!r} model, not w2v-BERT ("wav2vec2-bert"); '
                             'use HubertWithKmeans for HuBERT / wav2vec 2.0')

        from transformers import Wav2Vec2BertModel
        model = Wav2Vec2BertModel.from_pretrained(str(path), local_files_only = True)
        _check_output_layer(output_layer, len(model.encoder.layers), path)
        model.encoder.layers = model.encoder.layers[:output_layer]
        model.intermediate_ffn = None
        model.adapter = None
        self.model = model.eval().requires_grad_(False)

        preprocessor = _read_json(path / 'preprocessor_config.json')
        self.stride = int(preprocessor.get('stride', 2))
        input_dim = int(model.config.feature_projection_input_dim)
        if input_dim % self.stride:
            raise ValueError(f'feature_projection_input_dim {input_dim} is not a multiple of the stride {self.stride}')
        self.sample_hz = int(preprocessor.get('sampling_rate', 16000))
        self.fbank = KaldiFbank(sample_hz = self.sample_hz, n_mels = int(preprocessor.get('num_mel_bins', input_dim // self.stride)))
        if self.fbank.filters.shape[1] * self.stride != input_dim:
            raise ValueError(f'{path}: {self.fbank.filters.shape[1]} mel bins x stride {self.stride} != model input '
                             f'dimension {input_dim}')
        self.output_layer = output_layer
        self.dim = int(model.config.hidden_size)

    @property
    def hop_length(self) -> int:
        return self.fbank.hop_length * self.stride

    def num_frames(self, num_samples):
        return self.fbank.num_frames(num_samples) // self.stride

    @property
    def min_samples(self) -> int:
        return self.fbank.frame_length + (self.stride - 1) * self.fbank.hop_length

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        fbank = self.fbank(wave)                                                        # (b, t, m)
        b, t, _ = fbank.shape
        fbank_lengths = self.fbank.num_frames(lengths).clamp(max = t) if exists(lengths) else torch.full(
            (b,), t, device = wave.device)
        valid = (torch.arange(t, device = wave.device) < fbank_lengths[:, None]).unsqueeze(-1).float()  # (b, t, 1)

        # per-utterance, per-mel-bin zero mean / unit variance (unbiased variance, as the transformers extractor)
        count = valid.sum(1, keepdim = True)
        mean = (fbank * valid).sum(1, keepdim = True) / count.clamp(min = 1)
        var = ((fbank - mean).pow(2) * valid).sum(1, keepdim = True) / (count - 1).clamp(min = 1)
        fbank = (fbank - mean) / torch.sqrt(var + 1e-7) * valid                       # padding frames are 0

        frames = t // self.stride
        stacked = rearrange(fbank[:, :frames * self.stride], 'b (t s) m -> b t (s m)', s = self.stride)
        frame_lengths = fbank_lengths // self.stride
        mask = None
        if exists(lengths):
            mask = (torch.arange(frames, device = wave.device) < frame_lengths[:, None]).long()

        dtype = next(self.model.parameters()).dtype
        features = self.model(input_features = stacked.to(dtype), attention_mask = mask).last_hidden_state
        return features, frame_lengths
