"""Reference-keyword decisions for the semantic / coarse / fine transformers, their wrappers and AudioLM."""

from __future__ import annotations

from audiolm_pytorch.compat.core import AddMethod, Drop, Fixed, Handle, Ignore, Note

_ATTENTION = 'attention is always torch SDPA (flash / memory-efficient kernels where the device supports them)'
_POSITIONS = ('positions are rotary embeddings here (no T5 relative position bias); rel_pos_bias=True / False '
              'both give rotary attention')


def _semantic_return_loss(obj, value, args, kwargs):
    """The reference drops the last id when ``return_loss=True`` (the caller computes the loss on the logits)."""
    if value and kwargs.get('ids') is not None:
        kwargs['ids'] = kwargs['ids'][:, :-1]
    return args, kwargs


def _prime_wave_input_sample_hz(obj, value, args, kwargs):
    """Resample ``prime_wave`` from ``value`` Hz to the codec's rate before it is tokenized."""
    prime = kwargs.get('prime_wave')
    codec = getattr(obj, 'codec', None)
    if value is None or prime is None or codec is None or value == codec.target_sample_hz:
        return args, kwargs
    from audiolm_pytorch.audio import resample
    kwargs['prime_wave'] = resample(prime, value, codec.target_sample_hz)
    return args, kwargs


def _embed_text(self, text):
    """Text embeddings of the wrapped transformer (reference ``SemanticTransformerWrapper.embed_text``)."""
    return self.transformer.embed_text(text)


def _transformer_table(extra: dict | None = None) -> dict:
    return {
        'rel_pos_bias': Ignore(note = _POSITIONS),
        'flash_attn': Fixed(value = True, otherwise = 'warn', note = _ATTENTION),
        **(extra or {}),
    }


_EMBED_CACHE = Ignore(note = 'the embedding cache is not kept here: embeddings are recomputed (same output); '
                             'only the key / value cache (kv_cache=, return_kv_cache=True) is reused')
_RETURN_CACHE = Fixed(value = False, otherwise = 'refuse',
                      note = 'use return_kv_cache=True and pass the returned cache as kv_cache= (the wrappers do '
                             'this in generate(use_kv_cache=True))')

TABLES = {
    'SemanticTransformer': {
        '__init__': _transformer_table(),
        'forward': {
            'return_loss': Handle(note = 'as in the reference: drops the last id and returns the logits (the '
                                         'loss itself comes from SemanticTransformerWrapper(return_loss=True))',
                                  fn = _semantic_return_loss),
            'unique_consecutive': Drop(note = 'unused by the reference forward too (the wrapper collapses repeats)'),
        },
    },
    'CoarseTransformer': {
        '__init__': _transformer_table({
            'project_semantic_logits': Fixed(value = True, otherwise = 'warn',
                                             note = 'semantic logits are always projected; to not train them pass '
                                                    'semantic_cross_entropy_loss_weight=0 to the wrapper'),
        }),
        'forward_with_cond_scale': {'embed_cache': _EMBED_CACHE},
        'forward': {'return_cache': _RETURN_CACHE, 'embed_cache': _EMBED_CACHE},
    },
    'FineTransformer': {
        '__init__': _transformer_table({
            'project_coarse_logits': Fixed(value = True, otherwise = 'warn',
                                           note = 'coarse logits are always projected; to not train them pass '
                                                  'coarse_cross_entropy_loss_weight=0 to the wrapper'),
            'pad_id': Fixed(value = -1, otherwise = 'warn',
                            note = 'padding is handled by FineTransformerWrapper(pad_id=)'),
        }),
        'forward_with_cond_scale': {'embed_cache': _EMBED_CACHE},
        'forward': {'return_cache': _RETURN_CACHE, 'embed_cache': _EMBED_CACHE},
    },
    'SemanticTransformerWrapper': {
        'embed_text': {'*method': AddMethod(fn = _embed_text, note = 'the transformer\'s embed_text')},
        'generate': {
            'batch_size': Note(note = 'default None = one sample per text / text_embeds row / prime (else 1); '
                                      'the reference defaults to 1'),
            'include_eos_in_output': Note(note = 'honoured here (default False, the reference\'s actual output); '
                                                 'the reference ignores it'),
        },
    },
    'CoarseTransformerWrapper': {
        'generate': {'prime_wave_input_sample_hz': Handle(note = 'prime_wave is resampled to the codec rate',
                                                          fn = _prime_wave_input_sample_hz)},
    },
    'FineTransformerWrapper': {
        'generate': {'prime_wave_input_sample_hz': Handle(note = 'prime_wave is resampled to the codec rate',
                                                          fn = _prime_wave_input_sample_hz)},
    },
    'AudioLM': {
        'forward': {'batch_size': Note(note = 'default None = one sample per text / text_embeds row / prime wave '
                                              '(else 1); the reference defaults to 1')},
    },
}
