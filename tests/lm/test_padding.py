"""Review tests: padding never changes a row's result (prefix-conditioned stages), primes are checked, and a
single condition is repeated over several primes."""

import pytest
import torch

from audiolm_pytorch.audiolm import AudioLM
from audiolm_pytorch.lm.coarse import CoarseTransformer, CoarseTransformerWrapper
from audiolm_pytorch.lm.fine import FineTransformer, FineTransformerWrapper
from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper
from tests.helpers import StubCodec, StubSemanticTokenizer

TINY = dict(dim = 32, depth = 2, heads = 2, dim_head = 16)


def condition(prefix):
    return dict(has_condition = True, cond_dim = 8, cond_as_self_attn_prefix = prefix)


def padded_batch():
    """Row 0 is short (padded semantic ids, codes and text), row 1 is full."""
    gen = torch.Generator().manual_seed(1)
    semantic = torch.tensor([[1, 2, 3, -1, -1], [5, 6, 7, 8, 9]])
    coarse = torch.randint(0, 16, (2, 4, 2), generator = gen)
    fine = torch.randint(0, 16, (2, 4, 2), generator = gen)
    coarse[0, 3:] = fine[0, 3:] = -1
    text_embeds = torch.randn(2, 3, 8, generator = gen)
    text_embeds[0, 2] = 0.                                    # padded text token (mask inferred from zeros)
    return semantic, coarse, fine, text_embeds


@pytest.mark.parametrize('prefix', [False, True])
def test_padding_of_other_rows_does_not_change_a_rows_logits(prefix):
    # the short row alone must get the same logits as inside a padded batch: with the condition as a
    # self-attention prefix, the stage's prefix padding used to sit between the condition and the row's tokens,
    # changing rotary distances (batch-dependent predictions; training != inference)
    torch.manual_seed(0)
    semantic, coarse, fine, text_embeds = padded_batch()
    coarse_model = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2,
                                     **condition(prefix), **TINY).eval()
    coarse_wrapper = CoarseTransformerWrapper(transformer = coarse_model, mask_prob = 0.)
    sem_b, coarse_b = coarse_wrapper(semantic_token_ids = semantic, coarse_token_ids = coarse,
                                     text_embeds = text_embeds, cond_drop_prob = 0.)
    sem_1, coarse_1 = coarse_wrapper(semantic_token_ids = semantic[:1, :3], coarse_token_ids = coarse[:1, :3],
                                     text_embeds = text_embeds[:1, :2], cond_drop_prob = 0.)
    assert torch.allclose(sem_b[0, :4], sem_1[0], atol = 1e-5)          # 3 ids + EOS
    assert torch.allclose(coarse_b[0, :7], coarse_1[0], atol = 1e-5)    # 3 frames x 2 + EOS

    fine_model = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16,
                                 **condition(prefix), **TINY).eval()
    fine_wrapper = FineTransformerWrapper(transformer = fine_model, mask_prob = 0.)
    cl_b, fl_b = fine_wrapper(coarse_token_ids = coarse, fine_token_ids = fine, text_embeds = text_embeds,
                              cond_drop_prob = 0.)
    cl_1, fl_1 = fine_wrapper(coarse_token_ids = coarse[:1, :3], fine_token_ids = fine[:1, :3],
                              text_embeds = text_embeds[:1, :2], cond_drop_prob = 0.)
    assert torch.allclose(cl_b[0, :6], cl_1[0], atol = 1e-5)
    assert torch.allclose(fl_b[0, :7], fl_1[0], atol = 1e-5)


def test_guided_cached_generation_of_a_padded_row_equals_the_row_alone():
    # CFG + condition prefix + padding + kv cache, greedy: batched == alone, cache == no cache
    torch.manual_seed(0)
    _, coarse, _, text_embeds = padded_batch()
    model = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16,
                            **condition(True), **TINY)
    with torch.no_grad():                    # sharpen the heads so greedy choices reflect logit changes
        model.fine_head_weight.mul_(20.)
    wrapper = FineTransformerWrapper(transformer = model)
    kw = dict(temperature = 0., cond_scale = 2.)
    batched = [wrapper.generate(coarse_token_ids = coarse, text_embeds = text_embeds, use_kv_cache = c, **kw)
               for c in (True, False)]
    alone = wrapper.generate(coarse_token_ids = coarse[:1, :3], text_embeds = text_embeds[:1, :2], **kw)
    assert torch.equal(batched[0], batched[1])
    assert torch.equal(batched[0][:1, :3], alone)
    assert (batched[0][0, 3:] == -1).all()


def test_padded_or_mismatched_primes_are_errors_not_codes():
    coarse_wrapper = CoarseTransformerWrapper(transformer = CoarseTransformer(
        num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, **TINY))
    semantic = torch.tensor([[1, 2, 3], [4, 5, 6]])
    prime = torch.randint(0, 16, (2, 2, 2))
    prime[0, 1] = -1
    with pytest.raises(ValueError, match = 'padded'):
        coarse_wrapper.generate(semantic_token_ids = semantic, prime_coarse_token_ids = prime, max_time_steps = 3)
    with pytest.raises(ValueError, match = r'6 primes \(prime_coarse_token_ids\) for 2 semantic rows'):
        coarse_wrapper.generate(semantic_token_ids = semantic, prime_coarse_token_ids = prime[:, :1].repeat(3, 1, 1),
                                max_time_steps = 3)

    fine_wrapper = FineTransformerWrapper(transformer = FineTransformer(
        num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **TINY))
    with pytest.raises(ValueError, match = 'padded'):
        fine_wrapper.generate(coarse_token_ids = torch.randint(0, 16, (2, 3, 2)), prime_fine_token_ids = prime)


def test_one_condition_is_repeated_over_several_primes():
    torch.manual_seed(0)
    model = SemanticTransformer(num_semantic_tokens = 20, has_condition = True, cond_dim = 8, **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model)
    primes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = wrapper.generate(max_length = 6, prime_ids = primes, text_embeds = torch.randn(1, 2, 8), temperature = 0.)
    assert out.shape[0] == 2 and torch.equal(out[:, :3], primes)

    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    kw = dict(has_condition = True, cond_dim = 8, **TINY)
    audiolm = AudioLM(
        wav2vec = wav2vec, codec = codec,
        semantic_transformer = SemanticTransformer(num_semantic_tokens = 20, **kw),
        coarse_transformer = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, **kw),
        fine_transformer = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **kw))
    waves = audiolm(prime_wave = torch.randn(2, 32), text_embeds = torch.randn(1, 2, 8), max_length = 8,
                    max_coarse_time_steps = 10)
    assert len(waves) == 2
