"""Reference-keyword decisions for SoundStorm, ConformerWrapper and Conformer (soundstorm-pytorch 0.6.1)."""

from __future__ import annotations

from audiolm_pytorch.compat.core import AddMethod, Drop, Fixed, Ignore, Note, Rename

_NO_CRITIC = ('there is no Token-Critic here (Token-Critic re-masking, its loss and speculative decoding are not '
              'implemented); generation re-masks by the generator\'s own confidence (can_mask_prev_unmasked=)')


def _maybe_get_condition(self, token_ids = None, length = None):
    """Semantic ids ``(b, m)`` -> condition ``(b, length, dim)`` aligned to ``length`` codec frames (None without
    ids), as the reference helper of the same name."""
    if token_ids is None:
        return None
    length = token_ids.shape[-1] if length is None else length
    aligned = self.align_semantic(token_ids.to(self.device).long(), length)
    return self.embed_semantic(aligned, token_ids.shape[0], length)


TABLES = {
    'SoundStorm': {
        '__init__': {
            'self_token_critic': Fixed(value = False, otherwise = 'refuse', note = _NO_CRITIC),
            'critic_loss_weight': Ignore(note = 'used only with self_token_critic=True, which is refused'),
            'pad_id': Note(note = 'default -1 here (None in the reference: no padding id). As in the reference, '
                                  'input frames holding pad_id are padding in forward (without mask=); here '
                                  'generate() also writes it into padded output frames'),
        },
        'generate': {
            'spec_decode': Fixed(value = False, otherwise = 'refuse', note = _NO_CRITIC),
            'spec_decode_gamma': Ignore(note = 'used only with spec_decode=True, which is refused'),
            'batch_size': Note(note = 'default None = the batch of the condition / prompt / mask, else 1'),
            'num_full_sampling_levels': Note(note = 'default None = the constructor\'s value (default 1, as in the '
                                                    'reference)'),
        },
        'maybe_get_condition': {'*method': AddMethod(fn = _maybe_get_condition,
                                                     note = 'aligned semantic condition embeddings')},
        'forward': {
            'only_train_generator': Drop(note = 'there is no critic: forward always trains the generator only'),
            'only_train_critic': Fixed(value = False, otherwise = 'refuse', note = _NO_CRITIC),
            'generator_sample_temperature': Ignore(note = 'used only to sample inputs for the Token-Critic, which is '
                                                          'not implemented'),
        },
    },
    'ConformerWrapper': {
        'forward': {'x': Rename(to = 'codes')},
    },
    'Conformer': {
        '__init__': {
            'attn_flash': Fixed(value = True, otherwise = 'warn',
                                note = 'attention is always torch SDPA (flash kernels where the device has them)'),
            't5_rel_pos_bias': Fixed(value = False, otherwise = 'warn',
                                     note = 'positions are rotary embeddings here (no T5 relative position bias)'),
            'num_residual_streams': Fixed(value = 1, otherwise = 'warn',
                                          note = 'plain residual connections here (one stream, no '
                                                 'hyper-connections); the reference default is 4'),
        },
    },
}
