"""Semantic stage: losses from ids and audio, generation (kv cache, EOS, primes, guidance), overfitting."""

import pytest
import torch

from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper
from tests.helpers import NAN, StubSemanticTokenizer

TINY = dict(dim = 32, depth = 2, heads = 2, dim_head = 16)


def test_loss_from_ids_and_from_raw_audio():
    wav2vec = StubSemanticTokenizer()
    model = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model, wav2vec = wav2vec, mask_prob = 0.)
    wave = torch.randn(2, 8 * 12)
    loss_wave = wrapper(raw_wave = wave, return_loss = True)
    loss_ids = wrapper(semantic_token_ids = wav2vec(wave), return_loss = True)
    assert torch.allclose(loss_wave, loss_ids)
    loss_wave.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match = 'num_semantic_tokens'):
        SemanticTransformerWrapper(transformer = model, wav2vec = StubSemanticTokenizer(codebook_size = 7))


def test_causality_by_gradients():
    model = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    ids = torch.randint(0, 20, (1, 8))
    embeds = []
    def keep(module, inputs, output):
        output.retain_grad()
        embeds.append(output)

    handle = model.semantic_embedding.register_forward_hook(keep)
    logits = model(ids = ids)
    handle.remove()
    logits[:, 3].sum().backward()                     # position 3 predicts ids[:, 3] from start + ids[:, :3]
    grad = embeds[0].grad.abs().sum(dim = (0, 2))
    assert (grad[3:] == 0).all() and (grad[:3] > 0).all()


@pytest.mark.parametrize('conditioned', [False, True])
def test_kv_cache_generation_matches_no_cache(conditioned):
    kw = dict(has_condition = True, cond_dim = 8) if conditioned else {}
    model = SemanticTransformer(num_semantic_tokens = 20, **kw, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model)
    text_embeds = torch.randn(3, 2, 8) if conditioned else None
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(42)
        outs.append(wrapper.generate(max_length = 16, batch_size = 3, text_embeds = text_embeds,
                                     use_kv_cache = use_cache, temperature = 1., filter_thres = 0.5))
    assert torch.equal(outs[0], outs[1])
    greedy = [wrapper.generate(max_length = 16, batch_size = 3, text_embeds = text_embeds, use_kv_cache = c,
                               temperature = 0.) for c in (True, False)]
    assert torch.equal(*greedy)


def test_eos_stops_generation_and_pads():
    model = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    with torch.no_grad():                         # EOS becomes certain after the first sampled token
        model.to_logits.bias[model.eos_id] = -1e4
    wrapper = SemanticTransformerWrapper(transformer = model)
    with torch.no_grad():
        model.to_logits.bias[model.eos_id] = 1e4
    out = wrapper.generate(max_length = 10, batch_size = 2, prime_ids = torch.tensor([[1, 2, 3]]))
    assert out.tolist() == [[1, 2, 3], [1, 2, 3]]            # stopped right after the prime, EOS not kept
    assert (wrapper.generate(max_length = 10, batch_size = 2) == -1).all()


def test_variable_lengths_padded_after_eos():
    model = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model)
    # EOS about one step in ten
    with torch.no_grad():
        model.to_logits.bias[:] = 0.
        model.to_logits.bias[model.eos_id] = 2.
    torch.manual_seed(3)
    out = wrapper.generate(max_length = 30, batch_size = 8, temperature = 1., filter_thres = 0.)
    lengths = (out != -1).sum(dim = 1)
    assert out.shape[1] <= 30
    for row, n in zip(out, lengths):           # a row's padding is contiguous at its end
        assert (row[:n] >= 0).all() and (row[:n] < 20).all() and (row[n:] == -1).all()
    assert lengths.unique().numel() > 1


def test_generate_restores_training_mode():
    model = SemanticTransformer(num_semantic_tokens = 20, attn_dropout = 0.5, ff_dropout = 0.5, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model).train()
    wrapper.generate(max_length = 4)
    assert model.training and all(m.training for m in model.modules())
    wrapper.eval()
    wrapper.generate(max_length = 4)
    assert not model.training


def test_prime_wave_and_text_embeds_guidance():
    wav2vec = StubSemanticTokenizer()
    model = SemanticTransformer(num_semantic_tokens = 20, has_condition = True, cond_dim = 8, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model, wav2vec = wav2vec)
    prime = torch.randn(1, 8 * 5)
    out = wrapper.generate(max_length = 12, prime_wave = prime, text_embeds = torch.randn(1, 3, 8), cond_scale = 2.)
    prime_ids = torch.unique_consecutive(wav2vec(prime)[0])
    assert torch.equal(out[0, :len(prime_ids)], prime_ids)


def test_tiny_model_overfits_one_sequence():
    model = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model, mask_prob = 0.)
    ids = torch.randint(0, 20, (1, 16))
    opt = torch.optim.Adam(model.parameters(), lr = 5e-3)
    for _ in range(100):
        loss = wrapper(semantic_token_ids = ids, return_loss = True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    # the model then reproduces the sequence greedily (EOS included)
    target = torch.unique_consecutive(ids[0])
    out = wrapper.generate(max_length = 40, prime_ids = target[None, :1], temperature = 0.)
    assert torch.equal(out[0], target)


def test_training_with_forgetful_masking_and_padding():
    model = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model, mask_prob = 0.3).train()
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, -1, -1, -1]])
    loss = wrapper(semantic_token_ids = ids, return_loss = True)
    assert torch.isfinite(loss)
    loss.backward()


def test_batch_follows_the_conditions_and_mismatches_are_errors():
    model = SemanticTransformer(num_semantic_tokens = 20, has_condition = True, cond_dim = 8, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model)
    two = torch.randn(2, 3, 8)
    assert wrapper.generate(max_length = 5, text_embeds = two, min_new_tokens = 5).shape == (2, 5)
    # one condition for a larger batch is repeated; with greedy sampling every sample is then the same
    out = wrapper.generate(max_length = 5, batch_size = 3, text_embeds = two[:1], temperature = 0., min_new_tokens = 5)
    assert out.shape == (3, 5) and (out == out[:1]).all()
    # a batch-1 condition given to the model directly also applies to every sample
    ids = torch.randint(0, 20, (3, 4))
    with torch.no_grad():
        expanded = model.forward_with_cond_scale(ids = ids, text_embeds = two[:1].expand(3, -1, -1), cond_scale = 2.)
        assert torch.allclose(model.forward_with_cond_scale(ids = ids, text_embeds = two[:1], cond_scale = 2.), expanded)

    with pytest.raises(ValueError, match = '2 conditions .* batch of 3'):
        wrapper.generate(max_length = 5, batch_size = 3, text_embeds = two)
    with pytest.raises(ValueError, match = 'batch'):
        model.forward_with_cond_scale(ids = ids[:1], text_embeds = two, cond_scale = 2.)
    with pytest.raises(ValueError, match = 'batch'):
        model(ids = ids, text_embeds = two)
    with pytest.raises(ValueError, match = '2 primes for a batch of 3'):
        wrapper.generate(max_length = 8, batch_size = 3, prime_ids = torch.randint(0, 20, (2, 2)))


# ---- bad input to the wrapper and to generate ----------------------------------------------------------------------

SEM = torch.randint(0, 10, (2, 6))

COARSE = torch.randint(0, 8, (2, 3, 2))
FINE = torch.randint(0, 8, (2, 3, 2))

BAD_SEMANTIC_IDS = {
    'beyond_eos': (torch.full((2, 6), 11), r'\[0, 11\)'),          # was IndexError from the embedding
    'negative_not_pad': (torch.full((2, 6), -5), r'\[0, 11\)'),    # was IndexError from cross_entropy
    'float': (SEM.float() + 0.5, 'integer'),                       # was silently truncated
    'one_dim': (SEM[0], r'\[None\]'),                              # was read as 6 sequences of one token
    'three_dim': (SEM[..., None], r'\(b, n\)'),
    'batch_zero': (SEM[:0], 'empty batch'),                        # was a NaN loss
    'no_tokens': (torch.full((2, 6), -1), 'no tokens'),            # was IndexError in forgetful masking
}


@pytest.mark.parametrize('case', sorted(BAD_SEMANTIC_IDS))
def test_semantic_wrapper_rejects_bad_ids(wrappers, case):
    ids, message = BAD_SEMANTIC_IDS[case]
    with pytest.raises(ValueError, match = message):
        wrappers['semantic'](semantic_token_ids = ids, return_loss = True)


def test_semantic_wrapper_accepts_eos_and_padding(wrappers):
    ids = SEM.clone()
    ids[0, -2:] = -1
    ids[1, -1] = 10   # EOS id (num_semantic_tokens)
    assert torch.isfinite(wrappers['semantic'](semantic_token_ids = ids, return_loss = True))


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_length = 0), 'max_length'),
    (dict(max_length = 4, batch_size = 0), 'batch_size'),
    (dict(max_length = 4, prime_ids = torch.full((1, 3), 20)), r'\[0, 10\)'),
    (dict(max_length = 4, prime_ids = torch.full((1, 3), 10)), r'\[0, 10\)'),          # EOS in a prime
    (dict(max_length = 4, prime_ids = torch.full((1, 3), 2.7)), 'integer'),
    (dict(max_length = 4, prime_ids = torch.full((3,), 2)), r'\[None\]'),
    (dict(max_length = 4, prime_wave = torch.full((1, 64), NAN)), 'NaN'),
    (dict(max_length = 4, prime_wave = torch.randint(0, 9, (1, 64))), 'floating-point'),
    (dict(max_length = 4, prime_wave = torch.zeros(1, 0)), 'empty'),
    (dict(max_length = 4, prime_wave = torch.zeros(1, 1, 1, 64)), 'mono waveform'),
    (dict(max_length = 4, prime_wave = torch.zeros(1, 64), prime_wave_input_sample_hz = 0), 'input_sample_hz'),
])
def test_semantic_generate_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['semantic'].generate(**kwargs)
