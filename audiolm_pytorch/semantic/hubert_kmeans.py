"""Semantic tokens from a self-supervised speech encoder's intermediate layer + k-means (AudioLM, arXiv:2209.03143).

- ``HubertWithKmeans``: HuBERT or wav2vec 2.0, from a fairseq ``.pt`` (read without fairseq, see
  ``fairseq_checkpoint.py``) or a local ``transformers`` model directory.
- ``W2VBertWithKmeans``: w2v-BERT 2.0 (``transformers.Wav2Vec2BertModel``, the encoder family AudioLM used), with
  its kaldi-style fbank front-end computed in torch (``KaldiFbank``).

The encoders' feature extractors live in ``ssl_features.py`` (re-exported here).

Both run the encoder only up to ``output_layer`` (later layers are dropped at load time), keep it frozen and in
eval mode whatever the parent module does, and assign k-means clusters on the model's device.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from audiolm_pytorch.audio import resample
from audiolm_pytorch.semantic.base import WaveInputMixin
from audiolm_pytorch.semantic.kmeans import KMeans, KMeansFileError
from audiolm_pytorch.semantic.ssl_features import HubertFeatures, KaldiFbank, W2VBertFeatures
from audiolm_pytorch.transformers_dirs import transformers_model_type
from audiolm_pytorch.utils import beartype, exists

__all__ = ['HubertWithKmeans', 'W2VBertWithKmeans', 'HubertFeatures', 'W2VBertFeatures', 'KaldiFbank',
           'feature_extractor_from_path']

PAD_ID = -1


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
    if path.is_dir() and transformers_model_type(path) == 'wav2vec2-bert':
        return W2VBertWithKmeans(path, None, output_layer = output_layer)
    return HubertWithKmeans(path, None, output_layer = output_layer)
