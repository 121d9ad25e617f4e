"""Coarse and fine stages with a stub codec: token layouts, EOS, kv cache, grouped RVQ, losses, overfitting."""

import pytest
import torch

from audiolm_pytorch.lm.coarse import CoarseTransformer, CoarseTransformerWrapper
from audiolm_pytorch.lm.fine import FineTransformer, FineTransformerWrapper
from tests.helpers import INF, NAN, StubCodec

TINY = dict(dim = 32, depth = 2, heads = 2, dim_head = 16)


def test_coarse_loss_from_ids_and_audio_and_kv_cache_generation():
    from tests.helpers import StubSemanticTokenizer
    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    model = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, **TINY)
    wrapper = CoarseTransformerWrapper(transformer = model, codec = codec, wav2vec = wav2vec, mask_prob = 0.)
    wave = torch.randn(2, 64)
    loss = wrapper(raw_wave = wave, return_loss = True)
    loss_ids = wrapper(semantic_token_ids = wav2vec(wave), coarse_token_ids = codec.tokenize(wave)[..., :2],
                       return_loss = True)
    assert torch.allclose(loss, loss_ids)
    loss.backward()

    semantic = torch.tensor([[1, 2, 3, 4, -1], [5, 6, 7, 8, 9]])     # variable lengths
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outs.append(wrapper.generate(semantic_token_ids = semantic, max_time_steps = 6, use_kv_cache = use_cache,
                                     filter_thres = 0.))
    assert torch.equal(outs[0], outs[1])
    assert outs[0].shape[0] == 2 and outs[0].shape[-1] == 2 and outs[0].shape[1] <= 6
    assert ((outs[0] >= 0) & (outs[0] < 16) | (outs[0] == -1)).all()
    wave = wrapper.generate(semantic_token_ids = semantic[:1], max_time_steps = 5, reconstruct_wave = True)
    assert torch.isfinite(wave if torch.is_tensor(wave) else torch.cat(wave)).all()


def test_coarse_causal_and_semantic_padding_invariant():
    model = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, **TINY).eval()
    coarse = torch.randint(0, 16, (1, 3, 2))
    _, ref = model(semantic_token_ids = torch.tensor([[1, 2, 20]]), coarse_token_ids = coarse)
    _, padded = model(semantic_token_ids = torch.tensor([[1, 2, 20, -1, -1]]), coarse_token_ids = coarse)
    assert torch.allclose(ref, padded, atol = 1e-5)
    # changing a later coarse token never changes earlier logits
    changed = coarse.clone()
    changed[0, 2, 1] = (changed[0, 2, 1] + 1) % 16
    _, after = model(semantic_token_ids = torch.tensor([[1, 2, 20]]), coarse_token_ids = changed)
    assert torch.allclose(after[:, :6], ref[:, :6]) and not torch.allclose(after[:, 6], ref[:, 6])


def test_coarse_eos_only_at_frame_boundary_and_stops():
    model = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 3, **TINY)
    with torch.no_grad():
        model.coarse_head_bias[:, 16] = 1e4                        # EOS always preferred where allowed
    wrapper = CoarseTransformerWrapper(transformer = model)
    prime = torch.randint(0, 16, (2, 2, 3))
    out = wrapper.generate(semantic_token_ids = torch.randint(0, 20, (2, 4)), prime_coarse_token_ids = prime,
                           max_time_steps = 8)
    assert torch.equal(out, prime)        # EOS at the first frame boundary after the prime: nothing leaks
    with torch.no_grad():
        model.coarse_head_bias[0, 16] = -1e4           # slot 0 (a frame boundary) never prefers EOS
        model.coarse_head_bias[1:, 16] = 0.
        model.coarse_head_bias[1:, :16] = -1e4         # slots 1, 2 would emit EOS if it were allowed mid-frame
    out = wrapper.generate(semantic_token_ids = torch.randint(0, 20, (2, 4)), max_time_steps = 3)
    assert out.shape == (2, 3, 3) and out.min() >= 0 and out.max() < 16   # full frames of real codes, no EOS
    assert ((out[..., 1:] < 16)).all()


@pytest.mark.parametrize('groups', [1, 2])
def test_fine_loss_generation_kv_cache_and_groups(groups):
    codec = StubCodec(num_quantizers = 3, rq_groups = groups)
    model = FineTransformer(num_coarse_quantizers = 1, num_fine_quantizers = 2, codebook_size = 16,
                            rq_groups = groups, **TINY)
    wrapper = FineTransformerWrapper(transformer = model, soundstream = codec, mask_prob = 0.)
    wave = torch.randn(2, 4 * 6)
    loss = wrapper(raw_wave = wave, return_loss = True)
    codes = codec.tokenize(wave)
    assert torch.allclose(loss, wrapper(token_ids = codes, return_loss = True))
    loss.backward()

    coarse = codes.view(2, 6, groups, 3)[..., :1].reshape(2, 6, groups)
    coarse[1, 4:] = -1                                    # second row is shorter
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outs.append(wrapper.generate(coarse_token_ids = coarse, use_kv_cache = use_cache, filter_thres = 0.))
    assert torch.equal(outs[0], outs[1])
    assert outs[0].shape == (2, 6, 2 * groups)
    assert (outs[0][1, 4:] == -1).all() and (outs[0][0] >= 0).all()
    waves = wrapper.generate(coarse_token_ids = coarse, reconstruct_wave = True)
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [24, 16]
    same = wrapper.generate(coarse_token_ids = coarse[:1], reconstruct_wave = True)
    assert same.shape == (1, 24) and torch.isfinite(same).all()


def test_fine_prime_and_mask_out_generated():
    model = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **TINY)
    wrapper = FineTransformerWrapper(transformer = model)
    coarse = torch.randint(0, 16, (1, 5, 2))
    prime = torch.randint(0, 16, (1, 2, 2))
    out = wrapper.generate(coarse_token_ids = coarse, prime_fine_token_ids = prime)
    assert torch.equal(out[:, :2], prime)
    masked = wrapper.generate(coarse_token_ids = coarse, prime_fine_token_ids = prime,
                              mask_out_generated_fine_tokens = True)
    assert torch.equal(masked[:, :2], prime) and (masked[:, 2:] == -1).all()


def test_codec_compatibility_errors():
    model = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 3, codebook_size = 16, **TINY)
    with pytest.raises(ValueError, match = 'quantizers'):
        FineTransformerWrapper(transformer = model, codec = StubCodec(num_quantizers = 4))
    with pytest.raises(ValueError, match = 'codebook_size'):
        FineTransformerWrapper(transformer = model, codec = StubCodec(codebook_size = 8, num_quantizers = 5))
    with pytest.raises(ValueError, match = 'rq_groups'):
        FineTransformerWrapper(transformer = model, codec = StubCodec(num_quantizers = 5, rq_groups = 2))


def test_fine_overfits_and_wrappers_leave_eval_mode():
    model = FineTransformer(num_coarse_quantizers = 1, num_fine_quantizers = 2, codebook_size = 16, **TINY)
    wrapper = FineTransformerWrapper(transformer = model, mask_prob = 0.)
    codes = torch.randint(0, 16, (1, 6, 3))
    opt = torch.optim.Adam(model.parameters(), lr = 3e-3)
    for _ in range(120):
        loss = wrapper(token_ids = codes, return_loss = True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    wrapper.train()
    fine = wrapper.generate(coarse_token_ids = codes[..., :1], temperature = 0.)
    assert model.training                                     # generate() restored train mode
    assert torch.equal(fine, codes[..., 1:])


def test_coarse_text_embeds_guidance_and_prefix():
    model = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2,
                              has_condition = True, cond_dim = 8, cond_as_self_attn_prefix = True, **TINY)
    wrapper = CoarseTransformerWrapper(transformer = model)
    semantic, text_embeds = torch.randint(0, 20, (2, 4)), torch.randn(2, 3, 8)
    loss = wrapper(semantic_token_ids = semantic, coarse_token_ids = torch.randint(0, 16, (2, 3, 2)),
                   text_embeds = text_embeds, return_loss = True)
    loss.backward()
    outs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outs.append(wrapper.generate(semantic_token_ids = semantic, text_embeds = text_embeds, cond_scale = 3.,
                                     max_time_steps = 4, use_kv_cache = use_cache))
    assert torch.equal(*outs)


# ---- bad input to the wrappers and to generate ---------------------------------------------------------------------

SEM = torch.randint(0, 10, (2, 6))
COARSE = torch.randint(0, 8, (2, 3, 2))
FINE = torch.randint(0, 8, (2, 3, 2))

@pytest.mark.parametrize('kwargs, message', [
    (dict(semantic_token_ids = SEM, coarse_token_ids = torch.full((2, 3, 2), 8)), r'\[0, 8\)'),   # coarse EOS id
    (dict(semantic_token_ids = SEM, coarse_token_ids = torch.full((2, 3, 2), 100)), r'\[0, 8\)'),
    (dict(semantic_token_ids = SEM, coarse_token_ids = torch.full((2, 3, 2), -3)), r'\[0, 8\)'),
    (dict(semantic_token_ids = SEM, coarse_token_ids = COARSE.float()), 'integer'),
    (dict(semantic_token_ids = SEM, coarse_token_ids = COARSE[..., :1]), r'\(b, frames, 2\)'),
    (dict(semantic_token_ids = SEM + 50, coarse_token_ids = COARSE), r'\[0, 11\)'),
    (dict(semantic_token_ids = SEM[0], coarse_token_ids = COARSE), r'\[None\]'),                  # was RuntimeError
    (dict(semantic_token_ids = SEM[:1], coarse_token_ids = COARSE), 'rows'),                      # was RuntimeError
    (dict(raw_wave = torch.full((2, 64), NAN)), 'NaN'),
    (dict(raw_wave = torch.zeros(2, 1, 1, 64)), 'mono waveform'),
])
def test_coarse_wrapper_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['coarse'](**kwargs, return_loss = True)


@pytest.mark.parametrize('kwargs, message', [
    (dict(semantic_token_ids = SEM + 50), r'\[0, 11\)'),
    (dict(semantic_token_ids = SEM, prime_coarse_token_ids = torch.full((1, 1, 2), 30)), r'\[0, 8\)'),
    (dict(semantic_token_ids = SEM, prime_coarse_token_ids = torch.full((1, 1, 2), 3.)), 'integer'),
    (dict(semantic_token_ids = SEM, max_time_steps = 0), 'max_time_steps'),
    (dict(semantic_token_ids = SEM[:0]), 'empty batch'),
])
def test_coarse_generate_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['coarse'].generate(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(coarse_token_ids = COARSE, fine_token_ids = torch.full((2, 3, 2), 8)), r'\[0, 8\)'),    # was IndexError
    (dict(coarse_token_ids = torch.full((2, 3, 2), 8), fine_token_ids = FINE), r'\[0, 8\)'),
    (dict(coarse_token_ids = COARSE, fine_token_ids = torch.full((2, 3, 2), -3)), r'\[0, 8\)'),
    (dict(coarse_token_ids = COARSE.float(), fine_token_ids = FINE.float() + .5), 'integer'),     # was silent
    (dict(coarse_token_ids = COARSE[:1], fine_token_ids = FINE), 'same batch'),                   # was silent
    (dict(token_ids = torch.randint(0, 8, (2, 3, 3))), 'at least 4 levels'),
    (dict(token_ids = torch.randint(0, 8, (2, 3))), 'at least 4 levels'),                          # was EinopsError
    (dict(token_ids = torch.randint(0, 8, (2, 3, 4)) + 8), r'\[0, 8\)'),
    (dict(raw_wave = torch.full((2, 64), INF)), 'NaN'),
])
def test_fine_wrapper_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['fine'](**kwargs, return_loss = True)


@pytest.mark.parametrize('kwargs, message', [
    (dict(coarse_token_ids = torch.full((1, 2, 2), 50)), r'\[0, 8\)'),
    (dict(coarse_token_ids = torch.full((1, 2, 2), 2.5)), 'integer'),                              # was silent
    (dict(coarse_token_ids = torch.full((1, 2, 3), 2)), r'\(b, frames, 2\)'),                      # was silent
    (dict(coarse_token_ids = torch.full((0, 2, 2), 2)), 'empty batch'),                            # was RuntimeError
    (dict(coarse_token_ids = torch.full((1, 2, 2), 2), prime_fine_token_ids = torch.full((1, 1, 2), 99)), r'\[0, 8\)'),
])
def test_fine_generate_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['fine'].generate(**kwargs)


def test_fine_wrapper_raw_wave_without_codec():
    # was AttributeError: 'NoneType' object has no attribute 'num_quantizers'
    from audiolm_pytorch import FineTransformer, FineTransformerWrapper
    wrapper = FineTransformerWrapper(transformer = FineTransformer(num_coarse_quantizers = 1, num_fine_quantizers = 1,
                                                                   codebook_size = 8, **TINY))
    with pytest.raises(ValueError, match = 'no codec'):
        wrapper(raw_wave = torch.randn(1, 64), return_loss = True)
