"""MuLaN (arXiv 2208.12415): a two-tower contrastive joint embedding of music audio and text, and the
``MuLaNEmbedQuantizer`` that turns its embeddings into conditioning tokens for the three AudioLM stages
(MusicLM, arXiv 2301.11325).

The towers live in ``ast.py`` (``AudioSpectrogramTransformer``) and ``text.py`` (``TextTransformer``) and are
re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.musiclm.ast import AudioSpectrogramTransformer
# the functional losses and the loss modules live in contrastive.py, the gradient-keeping all-gather in
# distributed.py; both are re-exported here (their former home)
from audiolm_pytorch.musiclm.contrastive import (HierarchicalContrastiveLoss, SigmoidContrastiveLearning,
                                                 SoftmaxContrastiveLearning)
from audiolm_pytorch.musiclm.contrastive import softmax_contrastive_loss  # noqa: F401
from audiolm_pytorch.musiclm.distributed import all_gather_with_grad, distributed_ready  # noqa: F401
from audiolm_pytorch.musiclm.text import TextTransformer
from audiolm_pytorch.utils import beartype, exists

__all__ = ['AudioSpectrogramTransformer', 'TextTransformer', 'MuLaN', 'MuLaNEmbedQuantizer']


# ----------------------------------------------------------------------------------------------------------
# MuLaN
# ----------------------------------------------------------------------------------------------------------

def _depth(tower: nn.Module) -> int:
    encoder = getattr(tower, 'encoder', None)
    layers = getattr(encoder, 'layers', None)
    if layers is None:
        raise ValueError(f'hierarchical_contrastive_loss needs towers with encoder.layers; {type(tower).__name__} has none')
    return len(layers)


def _spread(layers: int, total: int) -> Tensor:
    """``layers`` indices spread evenly over ``total - 1`` intermediate layers (as musiclm-pytorch picks them)."""
    return (torch.arange(layers) * (total / layers)).floor().long().clamp(max = total - 2)


def _rename_old_temperature_keys(state_dict, prefix, *args):
    """Checkpoints written before the loss became a module stored ``log_temperature`` / ``sigmoid_bias``."""
    for old, new in (('log_temperature', 'contrast.temperatures'), ('sigmoid_bias', 'contrast.bias')):
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old).reshape(1, 1, 1)


class MuLaN(Checkpointable, nn.Module):
    """Contrastive music–text model.

    Args:
        audio_transformer: ``AudioSpectrogramTransformer`` (or any module mapping ``(b, n)`` waves to ``(b, dim)``
            with a ``dim`` attribute). text_transformer: ``TextTransformer``.
        dim_latent: size of the joint embedding; latents are L2-normalised.
        decoupled_contrastive_learning: softmax loss without the positive pair in the denominator (DCL).
        sigmoid_contrastive_loss: use the pairwise sigmoid loss instead of the softmax one.
        init_temperature: initial similarity scale (learned, in log space; capped at 100 as in CLIP).
            init_sigmoid_bias: initial logit bias of the sigmoid loss. The loss is the module ``self.contrast``
            (``SoftmaxContrastiveLearning`` or ``SigmoidContrastiveLearning``).
        hierarchical_contrastive_loss: add the contrastive loss of intermediate layers (ViCHA, arXiv 2208.13628):
            ``hierarchical_contrastive_loss_layers`` layers (default ``min(audio depth, text depth) - 1``) spread
            over each tower, each pooled, normalised and projected to its own latents.

    ``forward(wavs (b, n), texts=None (b, t) ids, raw_texts=None list[str]) -> scalar loss``. In distributed
    training (``torch.distributed`` initialised) latents of every process are gathered, so the loss contrasts
    against the global batch; gradients reach the local shard exactly.
    """

    @beartype
    def __init__(
        self, audio_transformer: nn.Module, text_transformer: nn.Module, *, dim_latent: int = 128,
        decoupled_contrastive_learning: bool = True, sigmoid_contrastive_loss: bool = False,
        init_temperature: float = 10., init_sigmoid_bias: float = -10., hierarchical_contrastive_loss: bool = False,
        hierarchical_contrastive_loss_layers: int | None = None,
    ):
        super().__init__()
        self.audio = audio_transformer
        self.text = text_transformer
        self.dim_latent = dim_latent
        self.decoupled_contrastive_learning = decoupled_contrastive_learning
        self.use_sigmoid_loss = sigmoid_contrastive_loss
        self.audio_to_latents = nn.Linear(audio_transformer.dim, dim_latent)
        self.text_to_latents = nn.Linear(text_transformer.dim, dim_latent)
        if sigmoid_contrastive_loss:
            self.contrast = SigmoidContrastiveLearning(init_temp = init_temperature, init_bias = init_sigmoid_bias,
                                                       max_temperature = 100.)
        else:
            self.contrast = SoftmaxContrastiveLearning(decoupled_contrastive_learning = decoupled_contrastive_learning,
                                                       init_temp = init_temperature, max_temperature = 100.)
        self.multi_layer_contrastive_learning = None
        if hierarchical_contrastive_loss:
            depths = (_depth(audio_transformer), _depth(text_transformer))
            num_layers = hierarchical_contrastive_loss_layers or min(depths) - 1
            if not 0 < num_layers < min(depths):
                raise ValueError(f'hierarchical_contrastive_loss needs 1 <= layers < min(tower depths) = {min(depths)}, '
                                 f'got {num_layers}')
            self.register_buffer('audio_layers_indices', _spread(num_layers, depths[0]), persistent = False)
            self.register_buffer('text_layers_indices', _spread(num_layers, depths[1]), persistent = False)
            self.multi_layer_contrastive_learning = HierarchicalContrastiveLoss(
                audio_dim = audio_transformer.dim, text_dim = text_transformer.dim, dim_latent = dim_latent,
                layers = num_layers, decoupled_contrastive_learning = decoupled_contrastive_learning,
                sigmoid_contrastive_loss = sigmoid_contrastive_loss)
        self._register_load_state_dict_pre_hook(_rename_old_temperature_keys)

    @property
    def audio_transformer(self) -> nn.Module:
        return self.audio

    @property
    def text_transformer(self) -> nn.Module:
        return self.text

    @beartype
    def get_audio_latents(self, wavs: Tensor, return_all_layers: bool = False):
        """``wavs (b, n)`` or ``(b, 1, n)`` -> L2-normalised ``(b, dim_latent)``; with ``return_all_layers`` also
        the audio tower's intermediate layers ``(depth - 1, b, patches, dim)``."""
        if return_all_layers:
            embeds, layers = self.audio(wavs, return_all_layers = True)
            return F.normalize(self.audio_to_latents(embeds), dim = -1), layers
        return F.normalize(self.audio_to_latents(self.audio(wavs)), dim = -1)

    @beartype
    def get_text_latents(self, texts: Tensor | list[str] | str | None = None,
                         raw_texts: list[str] | str | None = None, return_all_layers: bool = False):
        """Token ids ``texts (b, t)`` or strings ``raw_texts`` (strings passed as ``texts`` are accepted too)
        -> L2-normalised ``(b, dim_latent)``; with ``return_all_layers`` also the text tower's intermediate
        layers ``(depth - 1, b, 1 + t, dim)``."""
        if isinstance(texts, (list, str)):
            texts, raw_texts = (None, texts) if not exists(raw_texts) else (texts, raw_texts)
        if exists(texts) == exists(raw_texts):
            raise ValueError('pass exactly one of texts (token ids) or raw_texts (strings)')
        kwargs = dict(return_all_layers = True) if return_all_layers else {}
        out = self.text(texts, **kwargs) if exists(texts) else self.text(raw_texts = raw_texts, **kwargs)
        embeds, layers = out if return_all_layers else (out, None)
        latents = F.normalize(self.text_to_latents(embeds), dim = -1)
        return (latents, layers) if return_all_layers else latents

    @beartype
    def similarity(self, wavs: Tensor, texts: Tensor | list[str] | str | None = None,
                   raw_texts: list[str] | str | None = None) -> Tensor:
        """Cosine similarity of each (wave, text) pair: ``(b,)`` in [-1, 1]."""
        audio = self.get_audio_latents(wavs)
        text = self.get_text_latents(texts, raw_texts)
        if audio.shape[0] != text.shape[0]:
            raise ValueError(f'{audio.shape[0]} waves but {text.shape[0]} texts: pairs must line up')
        return (audio * text).sum(dim = -1)

    @beartype
    def forward(
        self, wavs: Tensor, texts: Tensor | list[str] | str | None = None, raw_texts: list[str] | str | None = None,
        return_latents: bool = False, return_similarities: bool = False, return_pairwise_similarities: bool = False,
    ):
        """Args:
            wavs: ``(b, n)`` waves. texts: ``(b, t)`` token ids. raw_texts: ``b`` strings.
            return_latents: return ``(audio_latents, text_latents)`` each ``(b, dim_latent)``.
            return_similarities: return the cosine similarity of each pair ``(b,)``.
            return_pairwise_similarities: return all text–audio cosine similarities ``(b_text, b_audio)``.

        Returns: the contrastive loss (scalar) by default.
        """
        hierarchical = exists(self.multi_layer_contrastive_learning) and not (
            return_latents or return_similarities or return_pairwise_similarities)
        audio_latents, audio_layers = self.get_audio_latents(wavs, return_all_layers = True) if hierarchical \
            else (self.get_audio_latents(wavs), None)
        text_latents, text_layers = self.get_text_latents(texts, raw_texts, return_all_layers = True) if hierarchical \
            else (self.get_text_latents(texts, raw_texts), None)

        if return_latents:
            return audio_latents, text_latents
        if return_similarities:
            return (audio_latents * text_latents).sum(dim = -1)
        if return_pairwise_similarities:
            return text_latents @ audio_latents.t()

        if audio_latents.shape[0] != text_latents.shape[0]:
            raise ValueError(f'{audio_latents.shape[0]} waves but {text_latents.shape[0]} texts: '
                             'contrastive training needs one text per wave')

        # the contrast modules gather every process's latents; the scale is capped at 100 as in CLIP
        # (arXiv 2103.00020): a runaway temperature destabilises training
        loss = self.contrast(audio_latents, text_latents)
        if not hierarchical:
            return loss
        return loss + self.multi_layer_contrastive_learning(audio_layers = audio_layers[self.audio_layers_indices],
                                                            text_layers = text_layers[self.text_layers_indices])


# ----------------------------------------------------------------------------------------------------------
# conditioning tokens for AudioLM
# ----------------------------------------------------------------------------------------------------------

class MuLaNEmbedQuantizer(Checkpointable, nn.Module):
    """Residual-quantized MuLaN embeddings as conditioning for the semantic / coarse / fine transformers.

    A frozen MuLaN embeds audio (training) or text (inference) into the shared space; a residual VQ turns the
    latent into ``rq_num_quantizers`` code ids; each namespace (one per AudioLM stage) has its own learned
    embedding table per quantizer, of that stage's width.

    Args:
        mulan: a trained ``MuLaN`` (kept frozen: no gradients, always run in eval mode).
        conditioning_dims: one width per namespace (or one int for all).
        rq_num_quantizers, codebook_size: residual VQ size. rq_ema_decay: codebook EMA decay. rq_kwargs: extra
            ResidualVQ options.
        freeze_codebook: never update the codebooks. By default (as in the established API) they are k-means
            initialised on the first batch and EMA-updated whenever this module embeds audio in training mode
            (text prompts never update them), i.e. while the AudioLM stages train. Stages trained one after another then see slowly drifting codes;
            fit the codebooks first (``quantizer.train(); quantizer(wavs=...)`` over music), then set
            ``quantizer.freeze_codebook = True`` to keep them fixed for all three stages.
        namespaces: names of the stages, in the order of ``conditioning_dims``.
        mulan_sample_hz: the rate MuLaN was trained at. The AudioLM stages hand this module audio at their own
            rates (the semantic and coarse stages at the semantic tokenizer's, the fine stage at the codec's) and
            say which (``input_sample_hz``); with ``mulan_sample_hz`` set, every stage's audio is resampled to it,
            so one clip gives the same conditioning tokens in all three stages. Without it audio is used as given.

    ``__call__(wavs=None, texts=None, namespace=None, input_sample_hz=None) -> (b, rq_num_quantizers,
    dim_of_namespace)``. ``texts`` may be strings or token ids.
    """

    @beartype
    def __init__(
        self, mulan: MuLaN, conditioning_dims: tuple[int, ...] | list[int] | int, *, rq_num_quantizers: int = 8,
        rq_ema_decay: float = 0.9, codebook_size: int = 1024, namespaces: tuple[str, ...] | list[str] = (
            'semantic', 'coarse', 'fine'), rq_kwargs: dict | None = None, freeze_codebook: bool = False,
        mulan_sample_hz: int | None = None,
    ):
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        namespaces = tuple(namespaces)
        if isinstance(conditioning_dims, int):
            conditioning_dims = (conditioning_dims,) * len(namespaces)
        conditioning_dims = tuple(conditioning_dims)
        if len(namespaces) == 0 or len(set(namespaces)) != len(namespaces):
            raise ValueError(f'namespaces must be distinct and non-empty, got {namespaces}')
        if len(conditioning_dims) != len(namespaces):
            raise ValueError(f'{len(conditioning_dims)} conditioning_dims for {len(namespaces)} namespaces '
                             f'{namespaces}: give one width per namespace')

        self.mulan = mulan
        self.namespaces = namespaces
        self.conditioning_dims = conditioning_dims
        self.rq_num_quantizers = rq_num_quantizers
        self.codebook_size = codebook_size
        self.freeze_codebook = freeze_codebook
        self.mulan_sample_hz = mulan_sample_hz
        self._default_namespace = namespaces[0]

        rq_options = dict(kmeans_init = True, threshold_ema_dead_code = 2, commitment_weight = 0.)
        rq_options.update(rq_kwargs or {})
        self.rq = ResidualVQ(dim = mulan.dim_latent, num_quantizers = rq_num_quantizers,
                             codebook_size = codebook_size, decay = rq_ema_decay, **rq_options)

        # one table per namespace: (quantizer, code, dim); small init like token embeddings
        self.cond_embeddings = nn.ParameterDict({
            namespace: nn.Parameter(torch.randn(rq_num_quantizers, codebook_size, dim) * 0.02)
            for namespace, dim in zip(namespaces, conditioning_dims)})

    def train(self, mode: bool = True):
        super().train(mode)
        self.mulan.eval()   # frozen: no dropout / augmentation when embedding
        return self

    @property
    def freeze_codebook(self) -> bool:
        return self._freeze_codebook

    @freeze_codebook.setter
    def freeze_codebook(self, value: bool):
        # also recorded in the config, so a quantizer frozen after fitting is saved (and reloaded) frozen
        self._freeze_codebook = bool(value)
        config = self.__dict__.get('_config')
        if isinstance(config, dict):
            config['freeze_codebook'] = self._freeze_codebook

    @property
    def dims(self) -> dict[str, int]:
        """Conditioning width per namespace."""
        return dict(zip(self.namespaces, self.conditioning_dims))

    def dim_for(self, namespace: str) -> int:
        return self.dims[self._check_namespace(namespace)]

    def set_default_namespace(self, namespace: str):
        self._default_namespace = self._check_namespace(namespace)

    def _check_namespace(self, namespace: str) -> str:
        if namespace not in self.namespaces:
            raise ValueError(f'unknown namespace {namespace!r}; this quantizer has {self.namespaces}')
        return namespace

    @torch.no_grad()
    def get_latents(self, wavs: Tensor | None = None, texts: Tensor | list[str] | str | None = None) -> Tensor:
        """Frozen MuLaN latents ``(b, dim_latent)`` of ``wavs`` or ``texts`` (strings or token ids)."""
        if exists(wavs) == exists(texts):
            raise ValueError('pass exactly one of wavs (training: audio embeddings) or texts (inference)')
        self.mulan.eval()
        if exists(wavs):
            return self.mulan.get_audio_latents(wavs)
        return self.mulan.get_text_latents(texts)

    def get_indices(self, latents: Tensor, freeze_codebook: bool | None = None) -> Tensor:
        """``(b, dim_latent)`` -> residual code ids ``(b, rq_num_quantizers)``. ``freeze_codebook=True`` keeps the
        codebooks fixed even in training mode (default: the module's ``freeze_codebook``)."""
        freeze = self.freeze_codebook or bool(freeze_codebook)
        _, indices, _ = self.rq(rearrange(latents, 'b d -> b 1 d'), freeze_codebook = freeze)
        return rearrange(indices, 'b 1 q -> b q')

    def embed_indices(self, indices: Tensor, namespace: str) -> Tensor:
        """``(b, q)`` code ids -> ``(b, q, dim_of_namespace)``."""
        table = self.cond_embeddings[self._check_namespace(namespace)]                 # (q, c, d)
        quantizer = torch.arange(self.rq_num_quantizers, device = indices.device)
        return table[quantizer[None], indices]

    @beartype
    def forward(self, wavs: Tensor | None = None, texts: Tensor | list[str] | str | None = None,
                namespace: str | None = None, input_sample_hz: int | None = None) -> Tensor:
        """Args:
            wavs: ``(b, n)`` waves (training). texts: ``b`` strings or ``(b, t)`` token ids (inference).
            namespace: stage name (default: the first namespace, or ``set_default_namespace``).
            input_sample_hz: rate of ``wavs``; resampled to ``mulan_sample_hz`` when both are known.

        Returns: ``(b, rq_num_quantizers, dim_of_namespace)`` conditioning embeddings.
        """
        namespace = self._check_namespace(namespace if exists(namespace) else self._default_namespace)
        if exists(wavs) and exists(input_sample_hz) and exists(self.mulan_sample_hz) \
                and input_sample_hz != self.mulan_sample_hz:
            from audiolm_pytorch.audio import resample
            wavs = resample(wavs, input_sample_hz, self.mulan_sample_hz)
        latents = self.get_latents(wavs = wavs, texts = texts)
        with torch.no_grad():
            # the codebooks quantize audio latents: only audio (training) may fit them; text latents (inference)
            # never move them, even when this module happens to be in training mode
            indices = self.get_indices(latents, freeze_codebook = exists(texts))
        return self.embed_indices(indices, namespace)
