"""The language models' self-attention stays on the flash-attention kernel path.

CUDA's flash kernel (FlashAttention-2, Hopper included) refuses any explicit ``attn_mask``, needs equal q/k/v head
widths that are multiples of 8 (at most 256), and only aligns ``is_causal`` correctly when queries and keys
have the same length. CI has no GPU, so these tests record every ``scaled_dot_product_attention`` call that
the stages make in training (with padding and forgetful causal masking) and in kv-cache decoding, and check
those rules directly: a change that quietly moved training onto the slow masked kernels fails here.
"""

import pytest
import torch
import torch.nn.functional as F

from audiolm_pytorch.lm.coarse import CoarseTransformer, CoarseTransformerWrapper
from audiolm_pytorch.lm.fine import FineTransformer, FineTransformerWrapper
from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper

TINY = dict(dim = 32, depth = 2, heads = 2, dim_head = 16)


@pytest.fixture
def sdpa_calls(monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask = None, dropout_p = 0., is_causal = False, **kwargs):
        calls.append(dict(q = tuple(q.shape), k = tuple(k.shape), v = tuple(v.shape), mask = attn_mask is not None,
                          is_causal = is_causal))
        return original(q, k, v, attn_mask = attn_mask, dropout_p = dropout_p, is_causal = is_causal, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', recording)
    return calls


def flash_eligible(call) -> bool:
    widths = {call['q'][-1], call['k'][-1], call['v'][-1]}
    same_width = len(widths) == 1 and widths.pop() % 8 == 0 and call['q'][-1] <= 256
    causal_aligned = not call['is_causal'] or call['q'][-2] == call['k'][-2]
    return not call['mask'] and same_width and causal_aligned


def test_training_with_padding_and_forgetful_masking_stays_on_flash(sdpa_calls):
    semantic = SemanticTransformerWrapper(transformer = SemanticTransformer(num_semantic_tokens = 20, **TINY),
                                          mask_prob = 0.3).train()
    semantic(semantic_token_ids = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, -1, -1, -1]]), return_loss = True).backward()

    coarse = CoarseTransformerWrapper(transformer = CoarseTransformer(
        num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, **TINY), mask_prob = 0.3).train()
    coarse(semantic_token_ids = torch.tensor([[1, 2, 3, 4], [5, 6, -1, -1]]),
           coarse_token_ids = torch.randint(0, 16, (2, 5, 2)), return_loss = True).backward()

    fine = FineTransformerWrapper(transformer = FineTransformer(
        num_coarse_quantizers = 1, num_fine_quantizers = 2, codebook_size = 16, **TINY), mask_prob = 0.3).train()
    fine(token_ids = torch.randint(0, 16, (2, 6, 3)), return_loss = True).backward()

    assert len(sdpa_calls) >= 3 * TINY['depth']
    offending = [call for call in sdpa_calls if not flash_eligible(call)]
    assert not offending, f'self-attention left the flash path: {offending}'


def test_kv_cache_decoding_stays_on_flash(sdpa_calls):
    wrapper = SemanticTransformerWrapper(transformer = SemanticTransformer(num_semantic_tokens = 20, **TINY))
    wrapper.generate(max_length = 6, batch_size = 2, prime_ids = torch.tensor([[1, 2, 3]]), min_new_tokens = 3)
    decode_steps = [call for call in sdpa_calls if call['q'][-2] == 1]
    assert len(decode_steps) >= 2 * TINY['depth']          # the prefill plus at least two one-token steps per layer
    offending = [call for call in sdpa_calls if not flash_eligible(call)]
    assert not offending, f'decoding left the flash path: {offending}'


def test_the_recorder_would_catch_a_masked_call(sdpa_calls):
    # an explicit (b, n_q, n_k) mask must take the masked kernel: the check above is not vacuous
    from audiolm_pytorch.nn.attention import Attention
    attention = Attention(dim = 32, heads = 2, dim_head = 16, causal = True)
    attention(torch.randn(1, 5, 32), mask = torch.rand(1, 5, 5) > 0.3)
    attention(torch.randn(1, 5, 32), mask = torch.rand(1, 5) > 0.3)      # key mask: stays on flash
    assert [flash_eligible(call) for call in sdpa_calls] == [False, True]


@pytest.mark.parametrize('prefix', [False, True])
def test_conditioned_training_and_guided_decoding_stay_on_flash(sdpa_calls, prefix):
    # text conditions with padding, classifier-free dropout in training, guidance (cond + null halves) in decoding
    model = SemanticTransformer(num_semantic_tokens = 20, has_condition = True, cond_dim = 8, cond_drop_prob = 0.5,
                                cond_as_self_attn_prefix = prefix, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model, mask_prob = 0.3).train()
    text_embeds = torch.randn(2, 4, 8)
    text_embeds[1, 2:] = 0.                               # padding (zero rows = hidden)
    wrapper(semantic_token_ids = torch.randint(0, 20, (2, 6)), text_embeds = text_embeds, return_loss = True).backward()
    wrapper.generate(max_length = 4, text_embeds = text_embeds, cond_scale = 3., min_new_tokens = 4)
    assert any(call['k'][-2] != call['q'][-2] for call in sdpa_calls)   # cross-attention or cached decoding ran
    offending = [call for call in sdpa_calls if not flash_eligible(call)]
    assert not offending, f'conditioned attention left the flash path: {offending}'


def test_padded_soundstorm_conformer_stays_on_flash(sdpa_calls):
    from audiolm_pytorch import ConformerWrapper, SoundStorm
    net = ConformerWrapper(codebook_size = 16, num_quantizers = 2, conformer = dict(dim = 32, depth = 1, heads = 2, dim_head = 16))
    model = SoundStorm(net, num_semantic_token_ids = 10)
    mask = torch.ones(2, 12, dtype = torch.bool)
    mask[1, 8:] = False
    loss, _ = model(torch.randint(0, 16, (2, 12, 2)), cond_semantic_token_ids = torch.randint(0, 10, (2, 12)), mask = mask)
    loss.backward()
    model.generate(cond_semantic_token_ids = torch.randint(0, 10, (2, 12)), mask = mask, steps = 2)
    assert sdpa_calls
    offending = [call for call in sdpa_calls if not flash_eligible(call)]
    assert not offending, f'the conformer left the flash path: {offending}'
