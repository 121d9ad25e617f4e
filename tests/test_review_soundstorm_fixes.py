"""Adversarial review of SoundStorm: training-mask invariants (paper §3.2), decoding invariants (§3.3) and the
pipeline / decode fixes found in review. Tiny configs; every test can fail."""

import math

import pytest
import torch

from test_soundstorm import StubCodec, StubSemantic, tiny_soundstorm
from audiolm_pytorch.soundstorm_pipeline import SemanticToAudio


def spy_on_net(model):
    calls = []
    original = model.net.forward

    def spy(codes, **kwargs):
        calls.append((codes.clone(), kwargs))
        return original(codes, **kwargs)

    model.net.forward = spy
    return calls


# ---- training masking (paper §3.2) ----------------------------------------------------------------------

def test_training_mask_follows_the_paper():
    torch.manual_seed(3)
    g, q, c, n, b = 2, 3, 16, 20, 48
    # the paper's masking alone: the BERT-style corruption (no_replace_prob / random_token_prob, on in half the
    # batches) leaves some loss tokens visible or randomised, which the checks below would read as unmasked
    model = tiny_soundstorm(q = q, c = c, groups = g, no_replace_prob = 0., random_token_prob = 0.)
    calls = spy_on_net(model)
    codes = torch.randint(0, c, (b, n, g * q))
    mask = torch.ones(b, n, dtype = torch.bool)
    mask[::2, 13:] = False
    _, breakdown = model(codes, mask = mask)
    inputs = calls[0][0].view(b, n, g, q)
    is_masked = inputs == model.net.mask_id
    assert torch.equal(calls[0][1]['quantizers'], torch.arange(g) * q + breakdown.levels[:, None])
    for i in range(b):
        level, real = int(breakdown.levels[i]), mask[i]
        m = is_masked[i]
        assert m[~real].all()                                     # padding: every token masked
        assert torch.equal(inputs[i][~m], codes[i].view(n, g, q)[~m])   # visible tokens are the true codes
        assert not m[real][..., :level].any()                     # coarser levels always given
        assert m[real][..., level].any()                          # every sample contributes to the loss
        start = int(m[real].flatten(1).any(dim = -1).nonzero()[0])   # end of the (unmasked) prompt prefix
        assert m[real][start:, :, level + 1:].all()               # finer levels fully masked after the prompt
        assert m[real][start, :, level:].any()


def test_loss_is_only_on_masked_tokens_of_the_chosen_level():
    torch.manual_seed(0)
    # without the BERT-style corruption (no_replace / random tokens, tested in test_compat.py) every token in
    # the loss is a mask token in the input
    model = tiny_soundstorm(q = 3, no_replace_prob = 0., random_token_prob = 0.)
    calls = spy_on_net(model)
    codes = torch.randint(0, 16, (4, 10, 3))
    torch.manual_seed(5)
    loss, breakdown = model(codes)
    inputs = calls[0][0]
    # recompute the loss from the logits with the mask read off the inputs
    logits = model.net.__class__.forward(model.net, inputs, mask = calls[0][1]['mask'], cond = calls[0][1]['cond'],
                                         quantizers = calls[0][1]['quantizers'])[:, :, 0]
    level = breakdown.levels
    masked = inputs.gather(-1, level[:, None, None].expand(4, 10, 1))[..., 0] == model.net.mask_id
    labels = codes.gather(-1, level[:, None, None].expand(4, 10, 1))[..., 0]
    expected = torch.nn.functional.cross_entropy(logits[masked], labels[masked])
    assert torch.allclose(loss, expected, atol = 1e-6)


# ---- decoding (paper §3.3) -----------------------------------------------------------------------------

def test_decoding_reveals_per_schedule_and_never_changes_decided_tokens():
    torch.manual_seed(0)
    g, q, n = 2, 3, 20
    # decided tokens never change with can_mask_prev_unmasked=False (the reference default True re-masks them)
    model = tiny_soundstorm(q = q, groups = g, num_semantic_token_ids = 10, schedule = 'cosine',
                            can_mask_prev_unmasked = False)
    calls = spy_on_net(model)
    mask = torch.ones(2, n, dtype = torch.bool)
    mask[1, 12:] = False
    prompt = torch.randint(0, 16, (2, 4, g * q))
    steps = [5, 2, 1]
    out = model.generate(cond_semantic_token_ids = torch.randint(0, 10, (2, 10)), mask = mask,
                         prompt_acoustic_token_ids = prompt, steps = steps)
    assert len(calls) == sum(steps)
    assert torch.equal(out[:, :4], prompt)
    assert (out[1, 12:] == model.pad_id).all() and out[mask].min() >= 0 and out[mask].max() < 16

    masked_counts, previous = [], None
    for codes, _ in calls:
        seq = codes.view(2, n, g, q)
        if previous is not None:
            decided = previous != model.net.mask_id
            assert torch.equal(seq[decided], previous[decided])      # decided tokens never change
        masked_counts.append([(seq[i][mask[i]] == model.net.mask_id).sum(dim = (0, 1)).tolist() for i in range(2)])
        previous = seq
    final = out.view(2, n, g, q)
    assert torch.equal(final[mask][(previous[mask] != model.net.mask_id)], previous[mask][previous[mask] != model.net.mask_id])

    # level 0: the number of masked tokens follows the cosine schedule
    total = [(n - 4) * g, (12 - 4) * g]
    for step in range(steps[0]):
        for i in range(2):
            expected = total[i] if step == 0 else math.floor(total[i] * math.cos(math.pi / 2 * step / steps[0]))
            assert masked_counts[step][i][0] == expected


def test_cond_scale_one_equals_conditional_and_prompt_stays_exact_with_guidance():
    torch.manual_seed(0)
    model = tiny_soundstorm(num_semantic_token_ids = 10, cond_drop_prob = 0.3)
    semantic = torch.randint(0, 10, (2, 6))
    prompt = torch.randint(0, 16, (2, 3, 3))
    kwargs = dict(cond_semantic_token_ids = semantic, prompt_acoustic_token_ids = prompt, steps = 3,
                  start_temperature = 0.)
    plain = model.generate(**kwargs)
    assert torch.equal(model.generate(cond_scale = 1., **kwargs), plain)
    guided = model.generate(cond_scale = 4., **kwargs)
    assert torch.equal(guided[:, :3], prompt)


# ---- review fixes ----------------------------------------------------------------------------------------

def test_decode_without_mask_treats_pad_frames_as_padding():
    # bug: decode(codes) on generate's padded output fed pad_id (-1) to the codec as a code
    model = tiny_soundstorm(soundstream = StubCodec())
    mask = torch.ones(2, 10, dtype = torch.bool)
    mask[1, 6:] = False
    codes = model.generate(mask = mask, steps = 2, return_codes = True)
    assert (codes[1, 6:] == model.pad_id).all()
    waves = model.decode(codes)
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [160, 96]
    assert torch.equal(waves[1], model.decode(codes[1:, :6])[0])


def test_forward_accepts_pad_codes_at_padded_frames():
    # generate's output (pad_id at padded frames) with its mask is valid training input
    model = tiny_soundstorm()
    codes = torch.randint(0, 16, (2, 10, 3))
    mask = torch.ones(2, 10, dtype = torch.bool)
    mask[1, 6:] = False
    padded = codes.clone()
    padded[1, 6:] = model.pad_id
    torch.manual_seed(1)
    loss, _ = model(codes, mask = mask)
    torch.manual_seed(1)
    loss_padded, _ = model(padded, mask = mask)
    assert torch.equal(loss, loss_padded)
    # without the mask, frames holding pad_id are padding (soundstorm-pytorch's meaning of pad_id, issue 15)
    torch.manual_seed(1)
    assert torch.equal(model(padded)[0], loss)
    padded[1, 6:] = -2
    with pytest.raises(ValueError, match = r'\[0, 16\)'):
        model(padded)   # any other out-of-range code is still invalid


class SemanticWrapperStub:
    """Semantic transformer stand-in with a 25 Hz tokenizer attached (as SemanticTransformerWrapper has)."""

    eos_id, pad_id = 10, -1

    def __init__(self, wav2vec = None, lengths = (8, 5)):
        self.wav2vec, self.lengths = wav2vec, lengths

    def generate(self, *, max_length, batch_size, **kwargs):
        ids = torch.randint(0, 10, (batch_size, max_length))
        for i, length in enumerate(self.lengths[:batch_size]):
            if length < max_length:
                ids[i, length] = self.eos_id
                ids[i, length + 1:] = self.pad_id
        return ids


def test_pipeline_takes_the_semantic_rate_from_the_semantic_transformer():
    # bug: SoundStorm built with num_semantic_token_ids (no wav2vec / rates) generated one codec frame per
    # semantic token, so 25 Hz semantic tokens over a 50 Hz codec gave audio of half the duration
    torch.manual_seed(0)
    model = tiny_soundstorm(soundstream = StubCodec(), num_semantic_token_ids = 10)
    pipeline = SemanticToAudio(semantic_transformer = SemanticWrapperStub(StubSemantic()), soundstorm = model)
    waves = pipeline(batch_size = 2, max_length = 8, steps = 2)
    # 8 tokens at 25 Hz = 0.32 s = 16 frames = 256 samples; 5 tokens -> 10 frames -> 160 samples
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [256, 160]


def test_pipeline_ends_the_sequence_at_the_semantic_transformers_eos():
    # bug: an EOS id inside SoundStorm's semantic vocabulary was taken for a real token
    torch.manual_seed(0)
    model = tiny_soundstorm(soundstream = StubCodec(), wav2vec = StubSemantic(), num_semantic_token_ids = 12)
    pipeline = SemanticToAudio(semantic_transformer = SemanticWrapperStub(), soundstorm = model)
    waves = pipeline(batch_size = 2, max_length = 8, steps = 2)
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [256, 160]


def test_pipeline_alignment_respects_an_asked_length():
    torch.manual_seed(0)
    model = tiny_soundstorm(soundstream = StubCodec(), num_semantic_token_ids = 10)
    pipeline = SemanticToAudio(semantic_transformer = SemanticWrapperStub(StubSemantic(), lengths = (8, 8)),
                               soundstorm = model)
    codes = pipeline(batch_size = 2, max_length = 8, steps = 2, num_latents = 20, return_codes = True)
    # 8 tokens at 25 Hz cover 16 codec frames; the 4 asked for past them are padding
    assert isinstance(codes, torch.Tensor) and codes.shape == (2, 20, 3)
    assert (codes[:, 16:] == model.pad_id).all() and (codes[:, :16] >= 0).all()


def test_pipeline_prime_wave_with_rates_from_the_semantic_transformer():
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerWrapper
    torch.manual_seed(0)
    semantic = SemanticTransformerWrapper(
        transformer = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1, heads = 2, dim_head = 8),
        wav2vec = StubSemantic(), unique_consecutive = False)
    model = tiny_soundstorm(soundstream = StubCodec(), num_semantic_token_ids = 10)
    pipeline = SemanticToAudio(semantic_transformer = semantic, soundstorm = model)
    prime = torch.rand(1, 128)                       # 4 semantic tokens (25 Hz), 8 codec frames (50 Hz)
    out = pipeline(max_length = 10, prime_wave = prime, steps = 2, return_codes = True,
                   semantic_generate_kwargs = dict(cond_scale = 1., min_new_tokens = 6))
    assert out.shape == (1, 20, 3)                   # 10 semantic tokens -> 20 codec frames
    assert torch.equal(out[0, :8], model.tokenize(prime)[0])
