"""SoundStorm's attached (not owned) modules: the codec, the semantic tokenizer and the text-to-semantic model.

They are checked against the network when attached, moved with ``.to()`` and shared (not copied) by
``copy.deepcopy`` (an EMA model), but are not submodules: they are not in ``state_dict()`` or checkpoints.
"""

from __future__ import annotations

import copy

from torch import nn

from audiolm_pytorch.utils import exists

EXTERNAL = ('soundstream', 'wav2vec', 'spear_tts_text_to_semantic')


class AttachedModulesMixin:
    """Attribute handling of ``SoundStorm`` for the names in ``EXTERNAL``; uses the model's ``net`` and
    ``num_semantic_token_ids``. Must come before ``nn.Module`` in the bases."""

    def __setattr__(self, name, value):
        if name in EXTERNAL:
            self._attach(name, value)
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name):
        if name in EXTERNAL:
            return self.__dict__.get('_attached', {}).get(name)
        return super().__getattr__(name)

    def __deepcopy__(self, memo):
        # copies (e.g. an EMA model) share the attached codec / tokenizer instead of duplicating them
        for value in self.__dict__.get('_attached', {}).values():
            if exists(value):
                memo[id(value)] = value
        return copy._reconstruct(self, memo, *self.__reduce_ex__(4))

    def _attach(self, name: str, value):
        if name == 'soundstream' and exists(value):
            net = self.net
            for attr in ('num_quantizers', 'codebook_size', 'target_sample_hz', 'downsample_factor'):
                if not hasattr(value, attr):
                    raise ValueError(f'soundstream must follow the codec interface (codecs/base.py); it lacks {attr!r}')
            groups = getattr(value, 'rq_groups', 1)
            if (value.num_quantizers, groups, value.codebook_size) != (net.num_quantizers, net.grouped_quantizers, net.codebook_size):
                raise ValueError(
                    f'codec has {value.num_quantizers} quantizers x {groups} groups of {value.codebook_size} codes, but the '
                    f'ConformerWrapper was built for {net.num_quantizers} x {net.grouped_quantizers} of {net.codebook_size}: '
                    'build it with num_quantizers, grouped_quantizers and codebook_size matching the codec')
            if hasattr(value, 'eval'):
                value.eval()
        if name == 'wav2vec' and exists(value):
            for attr in ('codebook_size', 'target_sample_hz', 'downsample_factor'):
                if not hasattr(value, attr):
                    raise ValueError(f'wav2vec must follow the semantic tokenizer interface (semantic/base.py); it lacks {attr!r}')
            if exists(getattr(self, 'num_semantic_token_ids', None)) and value.codebook_size > self.num_semantic_token_ids:
                raise ValueError(f'wav2vec has {value.codebook_size} ids but the model embeds {self.num_semantic_token_ids}')
            if hasattr(value, 'eval'):
                value.eval()
        self.__dict__['_attached'][name] = value

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for value in self.__dict__['_attached'].values():
            if isinstance(value, nn.Module):
                value._apply(fn, *args, **kwargs)
        return self
