"""Conditioning for the language models: T5 text embeddings (local, lazy) and the audio-conditioner protocol.

T5 is loaded only when text is actually embedded — never when a model is constructed — and only from local
files (``local_files_only=True``): pass ``t5_name`` as a local directory (or a name already in the local
Hugging Face cache). Without T5 available, pass precomputed ``text_embeds`` instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from audiolm_pytorch.utils import exists

DEFAULT_T5_NAME = 'google/t5-v1_1-base'

# d_model of well-known T5 checkpoints, so models build offline without reading any config
_KNOWN_T5_DIMS = {
    't5-small': 512, 't5-base': 768, 't5-large': 1024, 't5-3b': 1024, 't5-11b': 1024,
    'google/t5-v1_1-small': 512, 'google/t5-v1_1-base': 768, 'google/t5-v1_1-large': 1024,
    'google/t5-v1_1-xl': 2048, 'google/t5-v1_1-xxl': 4096,
    'google/flan-t5-small': 512, 'google/flan-t5-base': 768, 'google/flan-t5-large': 1024,
    'google/flan-t5-xl': 2048, 'google/flan-t5-xxl': 4096,
}
_FALLBACK_DIM = 768  # t5-v1_1-base


def t5_embed_dim(name: str | None) -> int:
    """Embedding width of T5 ``name`` without contacting the hub: a local directory's ``config.json``, the
    table of known checkpoints, else 768 (t5-v1_1-base)."""
    if name is None:
        return _FALLBACK_DIM
    config_path = Path(name) / 'config.json'
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        return int(config.get('d_model', config.get('hidden_size', _FALLBACK_DIM)))
    return _KNOWN_T5_DIMS.get(name, _FALLBACK_DIM)


class T5Embedder:
    """Lazily loaded T5 encoder. Not an ``nn.Module`` on purpose: its frozen weights stay out of the language
    model's state dict and checkpoints.

    ``__call__(texts: list[str], device) -> (embeds (b, n, d), mask (b, n) bool)``.
    """

    def __init__(self, name: str = DEFAULT_T5_NAME, max_length: int = 256):
        self.name, self.max_length = name, max_length
        self._tokenizer = self._encoder = None

    def _load(self):
        looks_like_path = self.name.startswith(('.', '/', '~')) or os.sep in self.name.strip('/').split('/', 1)[-1]
        if looks_like_path and not Path(self.name).expanduser().exists():
            raise RuntimeError(
                f'T5 directory {self.name!r} does not exist. Pass t5_name=<local T5 directory>, or pass '
                'precomputed text_embeds=(b, n, cond_dim) instead of text.')
        try:
            from transformers import AutoTokenizer, T5EncoderModel
            tokenizer = AutoTokenizer.from_pretrained(self.name, local_files_only = True)
            encoder = T5EncoderModel.from_pretrained(self.name, local_files_only = True)
        except (OSError, ValueError) as error:
            raise RuntimeError(
                f'T5 model {self.name!r} is not available locally ({error}). Download it once and pass '
                't5_name=<local directory>, or pass precomputed text_embeds=(b, n, cond_dim) instead of text.'
            ) from error
        self._tokenizer, self._encoder = tokenizer, encoder.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], device: torch.device | str = 'cpu') -> tuple[Tensor, Tensor]:
        if self._encoder is None:
            self._load()
        self._encoder.to(device)
        encoded = self._tokenizer(list(texts), return_tensors = 'pt', padding = 'longest', truncation = True,
                                  max_length = self.max_length)
        ids, mask = encoded.input_ids.to(device), encoded.attention_mask.to(device).bool()
        embeds = self._encoder(input_ids = ids, attention_mask = mask).last_hidden_state
        embeds = embeds.masked_fill(~mask[..., None], 0.)
        return embeds, mask


@runtime_checkable
class AudioConditioner(Protocol):
    """Joint audio-text embedder (e.g. ``MuLaNEmbedQuantizer``): audio in training, text at generation.

    ``__call__(wavs=None, texts=None, namespace='semantic'|'coarse'|'fine') -> (b, n, dim)``. A conditioner
    whose ``__call__`` / ``forward`` also takes ``input_sample_hz`` is told the rate of ``wavs`` (each stage
    holds audio at its own tokenizer's rate).
    """

    def __call__(self, wavs: Tensor | None = None, texts: Sequence[str] | Tensor | None = None,
                 namespace: str | None = None) -> Tensor: ...


def _takes_input_sample_hz(conditioner) -> bool:
    import inspect
    target = conditioner.forward if isinstance(conditioner, torch.nn.Module) else conditioner
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return 'input_sample_hz' in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def audio_condition(conditioner, *, namespace: str, wavs: Tensor | None = None, texts=None,
                    input_sample_hz: int | None = None) -> Tensor:
    """Call ``conditioner`` without gradients and check its output is ``(b, n, dim)``. ``input_sample_hz``: the
    rate of ``wavs``, passed on to conditioners that take it."""
    extra = dict(input_sample_hz = input_sample_hz) if exists(wavs) and exists(input_sample_hz) and \
        _takes_input_sample_hz(conditioner) else {}
    with torch.no_grad():
        embeds = conditioner(wavs = wavs, texts = texts, namespace = namespace, **extra)
    if embeds.ndim == 2:
        embeds = embeds[:, None]
    if embeds.ndim != 3:
        raise ValueError(f'audio_conditioner must return (b, n, dim) embeddings, got shape {tuple(embeds.shape)}')
    return embeds.detach()
