"""Semantic tokens from a self-supervised speech encoder's intermediate layer + k-means (AudioLM, arXiv:2209.03143).

- ``HubertWithKmeans``: HuBERT or wav2vec 2.0, from a fairseq ``.pt`` (read without fairseq, see
  ``fairseq_checkpoint.py``) or a local ``transformers`` model directory.
- ``W2VBertWithKmeans``: w2v-BERT 2.0 (``transformers.Wav2Vec2BertModel``, the encoder family AudioLM used), with
  its kaldi-style fbank front-end computed in torch (``KaldiFbank``).

Both run the encoder only up to ``output_layer`` (later layers are dropped at load time), keep it frozen and in
eval mode whatever the parent module does, and assign k-means clusters on the model's device.
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

from audiolm_pytorch.audio import resample
from audiolm_pytorch.semantic.base import WaveInputMixin
from audiolm_pytorch.semantic.kmeans import KMeans, KMeansFileError
from audiolm_pytorch.utils import beartype, exists

__all__ = ['HubertWithKmeans', 'W2VBertWithKmeans', 'HubertFeatures', 'W2VBertFeatures', 'KaldiFbank',
           'feature_extractor_from_path']

PAD_ID = -1


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _transformers_model_type(path: Path) -> str:
    config = _read_json(path / 'config.json')
    if not config:
        raise ValueError(f'{path} is a directory without config.json: expected a transformers model directory '
                         '(saved with save_pretrained) or a fairseq .pt file')
    return str(config.get('model_type', ''))


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
        model_type = _transformers_model_type(path)
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
        model_type = _transformers_model_type(path)
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


# ----------------------------------------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------------------------------------

class HubertWithKmeans(WaveInputMixin, nn.Module):
    """HuBERT / wav2vec 2.0 features at ``output_layer`` quantized by k-means: the semantic tokenizer of AudioLM.

    Args:
        checkpoint_path: a fairseq HuBERT / wav2vec 2.0 ``.pt`` (e.g. ``hubert_base_ls960.pt``, read without
            fairseq) or a local ``transformers`` model directory (HuBERT or wav2vec 2.0).
        kmeans_path: centroids: a scikit-learn joblib dump (``hubert_base_ls960_L9_km500.bin``), ``.npy``,
            ``.safetensors`` or ``.pt`` (see ``kmeans.load_kmeans_centroids``). ``None`` builds a feature extractor
            only (``extract_features`` works, ``forward`` raises), e.g. to fit k-means.
        target_sample_hz: rate of the waveforms given to ``forward`` (after ``input_sample_hz`` resampling). When
            it differs from the model's own rate (16 kHz) the input is resampled again internally;
            ``downsample_factor`` is then counted at ``target_sample_hz``.
        seq_len_multiple_of: cut inputs to a multiple of this many samples before tokenizing.
        output_layer: 1-based transformer layer whose output is quantized (9 for HuBERT base in AudioLM).
        normalize: layer-normalize the waveform first; default from the checkpoint (fairseq ``task.normalize``,
            true for HuBERT large; transformers ``preprocessor_config.json`` ``do_normalize``).
        allow_pickle: allow ``joblib.load`` for k-means pickles the safe reader cannot parse (runs code from
            the file: trusted files only).

    ``forward(wav_input (b, n) or (n,), flatten=True, input_sample_hz=None, lengths=None) -> ids (b, frames)``.
    ``flatten`` is accepted for compatibility: ids are always ``(b, frames)`` (the established library returned a
    flat ``(b * frames,)`` vector for ``flatten=True``; use ``ids.flatten()`` for that). With ``lengths`` (valid
    samples per row of a zero-padded batch) padding is masked in the encoder and frames past each row's end
    are ``-1``. Models with a layer-norm conv stack (HuBERT large, wav2vec 2.0 large) then give every row exactly
    what it gives alone; group-norm models (HuBERT base) normalize their first conv over the padded length, as
    fairseq and transformers do, so padded rows differ slightly from the same audio alone.

    Extra methods: ``extract_features(wave, input_sample_hz=None, lengths=None) -> (b, frames, dim)`` (used by
    ``fit_kmeans``) and ``num_frames(num_samples)``.
    """

    features_cls = HubertFeatures

    @beartype
    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        kmeans_path: str | os.PathLike | None,
        target_sample_hz: int = 16000,
        seq_len_multiple_of: int | None = None,
        output_layer: int = 9,
        *,
        normalize: bool | None = None,
        allow_pickle: bool = False,
    ):
        super().__init__()
        self.checkpoint_path = str(checkpoint_path)
        self.features = self.build_features(checkpoint_path, output_layer = output_layer, normalize = normalize)
        self.output_layer = output_layer
        self.target_sample_hz = target_sample_hz          # checked: must give a whole hop (see downsample_factor)
        self.seq_len_multiple_of = seq_len_multiple_of

        self.kmeans = None
        if exists(kmeans_path):
            self.kmeans = KMeans.from_file(kmeans_path, allow_pickle = allow_pickle)
            if self.kmeans.dim != self.features.dim:
                transposed = self.kmeans.codebook_size == self.features.dim
                raise KMeansFileError(
                    f'k-means file {kmeans_path} has {self.kmeans.dim}-dim centroids but {checkpoint_path} gives '
                    f'{self.features.dim}-dim features at output_layer={output_layer}: ' + (
                        f'its matrix is {tuple(self.kmeans.centroids.shape)}, which looks transposed (dim, clusters); '
                        'save the centroids as (clusters, dim), e.g. cluster_centers_ rather than its transpose'
                        if transposed else 'it was fitted on another model'))
            fitted_layer = self.kmeans.config.get('output_layer')
            if exists(fitted_layer) and int(fitted_layer) != output_layer:
                # same dimension, other layer: every id would be silently meaningless
                raise KMeansFileError(
                    f'k-means file {kmeans_path} was fitted on features of output_layer={fitted_layer}, but this '
                    f'tokenizer reads output_layer={output_layer}: pass output_layer={fitted_layer} or refit k-means')

    def build_features(self, checkpoint_path, *, output_layer: int, normalize: bool | None) -> nn.Module:
        """The frozen feature extractor (override in subclasses to use another encoder)."""
        return self.features_cls(checkpoint_path, output_layer = output_layer, normalize = normalize)

    # interface (target_sample_hz, seq_len_multiple_of: WaveInputMixin) -----------------------------------

    def _hop_at(self, sample_hz: int) -> float:
        return self.features.hop_length * sample_hz / self.features.sample_hz

    def _check_target_sample_hz(self, value: int):
        features = self.__dict__.get('_modules', {}).get('features')
        if features is None:     # a subclass setting the rate before building its encoder
            return
        hop = self._hop_at(value)
        if hop != int(hop):
            raise ValueError(f'target_sample_hz={value} gives a fractional hop of {hop} samples per frame '
                             f'for a model running at {features.sample_hz} Hz; use target_sample_hz='
                             f'{features.sample_hz} (and input_sample_hz to resample)')

    @property
    def downsample_factor(self) -> int:
        """Input samples (at ``target_sample_hz``) per token: the encoder's hop (product of its conv strides)
        scaled to ``target_sample_hz``; follows ``target_sample_hz`` when a subclass reassigns it."""
        return int(self._hop_at(self.target_sample_hz))

    @property
    def codebook_size(self) -> int:
        self._require_kmeans()
        return self.kmeans.codebook_size

    @property
    def dim(self) -> int:
        return self.features.dim

    @property
    def device(self) -> torch.device:
        return next(self.features.parameters()).device

    def num_frames(self, num_samples: int) -> int:
        """Tokens produced for ``num_samples`` samples at ``target_sample_hz``."""
        return self.features.num_frames(self._to_model_rate(self.cropped_num_samples(num_samples)))

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen encoder: dropout / layer-drop stay off whatever the parent does
        return self

    # computation ----------------------------------------------------------------------------------------

    def _to_model_rate(self, n):
        return n * self.features.sample_hz // self.target_sample_hz

    def _require_kmeans(self):
        if self.kmeans is None:
            raise ValueError(f'{type(self).__name__} was built without kmeans_path: only extract_features() works')

    @torch.no_grad()
    def extract_features(
        self, wave: Tensor, input_sample_hz: int | None = None, *, lengths: Tensor | None = None,
        return_lengths: bool = False,
    ):
        """``wave (b, n)``, ``(n,)`` or ``(b, 1, n)`` -> features ``(b, frames, dim)`` (float32), and the valid
        frame count per row ``(b,)`` when ``return_lengths``."""
        wave = self.as_wave_batch(wave).to(self.device).float()
        if exists(lengths):
            lengths = self.lengths_at_target_rate(torch.as_tensor(lengths, device = wave.device).long(), input_sample_hz)
        wave = self.to_target_rate(wave, input_sample_hz)
        if self.target_sample_hz != self.features.sample_hz:
            wave = resample(wave, self.target_sample_hz, self.features.sample_hz)
            lengths = self._to_model_rate(lengths) if exists(lengths) else None
        if exists(lengths):
            lengths = lengths.clamp(max = wave.shape[-1])

        if wave.shape[-1] < self.features.min_samples:
            raise ValueError(f'input of {wave.shape[-1]} samples at {self.features.sample_hz} Hz is shorter than one '
                             f'frame ({self.features.min_samples} samples): give longer audio')

        features, frame_lengths = self.features(wave, lengths)
        features = features.float()
        return (features, frame_lengths) if return_lengths else features

    @torch.no_grad()
    def forward(
        self, wav_input: Tensor, flatten: bool = True, input_sample_hz: int | None = None, *,
        lengths: Tensor | None = None,
    ) -> Tensor:
        self._require_kmeans()
        features, frame_lengths = self.extract_features(wav_input, input_sample_hz, lengths = lengths,
                                                        return_lengths = True)
        ids = self.kmeans(features)                                                      # (b, frames)
        if exists(lengths):
            ids = ids.masked_fill(torch.arange(ids.shape[-1], device = ids.device) >= frame_lengths[:, None], PAD_ID)
        return ids


class W2VBertWithKmeans(HubertWithKmeans):
    """w2v-BERT 2.0 (``transformers.Wav2Vec2BertModel``, local directory) features at ``output_layer`` quantized
    by k-means. Same interface as ``HubertWithKmeans``; 50 tokens per second at 16 kHz (``downsample_factor``
    320). The default ``output_layer=17`` is the middle-upper layer commonly used for semantic tokens of the
    24-layer w2v-BERT 2.0.
    """

    features_cls = W2VBertFeatures

    @beartype
    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        kmeans_path: str | os.PathLike | None,
        target_sample_hz: int = 16000,
        seq_len_multiple_of: int | None = None,
        output_layer: int = 17,
        *,
        allow_pickle: bool = False,
    ):
        super().__init__(checkpoint_path, kmeans_path, target_sample_hz, seq_len_multiple_of, output_layer,
                         allow_pickle = allow_pickle)

    def build_features(self, checkpoint_path, *, output_layer: int, normalize: bool | None) -> nn.Module:
        return self.features_cls(checkpoint_path, output_layer = output_layer)


def feature_extractor_from_path(path: str | os.PathLike, *, output_layer: int = 9) -> HubertWithKmeans:
    """A k-means-free tokenizer (``extract_features`` only) for a fairseq ``.pt`` or transformers directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'tokenizer checkpoint not found: {path}')
    if path.is_dir() and _transformers_model_type(path) == 'wav2vec2-bert':
        return W2VBertWithKmeans(path, None, output_layer = output_layer)
    return HubertWithKmeans(path, None, output_layer = output_layer)
