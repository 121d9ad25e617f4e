import math

import pytest
import torch

from audiolm_pytorch import ConformerWrapper, SoundStorm
from audiolm_pytorch.codecs.base import Codec
from audiolm_pytorch.semantic.base import SemanticTokenizer
from audiolm_pytorch.soundstorm_pipeline import SemanticToAudio
from tests.helpers import STORM_CODEC, TINY_CONFORMER, StubCodec, StubSemantic, tiny_soundstorm


def test_stubs_follow_the_interfaces():
    assert isinstance(StubCodec(**STORM_CODEC), Codec) and isinstance(StubSemantic(), SemanticTokenizer)


def test_seed_config_constructs():
    conformer = ConformerWrapper(codebook_size = 1024, num_quantizers = 12, conformer = dict(dim = 512, depth = 2))
    model = SoundStorm(conformer, steps = 18, schedule = 'cosine')
    assert model.net.conformer.dim == 512 and len(model.net.conformer.layers) == 2
    assert model.net.to_logits_weight.shape == (12, 512, 1024)


def test_seed_codes_usage_small():
    # seed 001 first block, with a smaller width / length to keep CPU time low
    conformer = ConformerWrapper(codebook_size = 1024, num_quantizers = 12, conformer = dict(dim = 32, depth = 2, dim_head = 16))
    model = SoundStorm(conformer, steps = 18, schedule = 'cosine')
    codes = torch.randint(0, 1024, (2, 64, 12))
    loss, _ = model(codes)
    loss.backward()
    assert loss.item() > 0 and model.net.code_embeds.weight.grad is not None

    generated = model.generate(64, batch_size = 2)
    assert generated.shape == (2, 64, 12) and generated.dtype == torch.long
    assert generated.min() >= 0 and generated.max() < 1024
    assert model.training   # generate restores the training mode


def test_seed_raw_audio_usage_with_codec():
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC))
    audio = torch.randn(2, 1008)
    loss, _ = model(audio)
    loss.backward()
    generated_audio = model.generate(seconds = 0.5, batch_size = 2)
    assert generated_audio.shape == (2, 400)   # 0.5 s at 800 Hz
    codes = model.generate(seconds = 0.5, batch_size = 2, return_codes = True)
    assert codes.shape == (2, 25, 3)


def test_seed_raw_audio_usage_with_real_soundstream():
    from audiolm_pytorch import SoundStream
    soundstream = SoundStream(codebook_size = 64, rq_num_quantizers = 4, attn_window_size = 16, attn_depth = 1, use_local_attn = True,
                              channels = 8, codebook_dim = 16, strides = (2, 4), channel_mults = (2, 4))
    net = ConformerWrapper(codebook_size = 64, num_quantizers = 4, conformer = TINY_CONFORMER)
    model = SoundStorm(net, soundstream = soundstream)
    audio = torch.randn(2, 1280)
    loss, _ = model(audio)
    loss.backward()
    generated_audio = model.generate(seconds = 0.01, batch_size = 2)
    assert generated_audio.shape == (2, 160)


def test_overfits_one_sequence_and_reproduces_it_from_semantic_tokens():
    n, q, c = 24, 3, 16
    # semantic tokens at half the codec frame rate: exercises the rate alignment
    model = tiny_soundstorm(q, c, num_semantic_token_ids = 12, steps = 4, codec_target_sample_hz = 800,
                            codec_downsample_factor = 16, wav2vec_target_sample_hz = 800, wav2vec_downsample_factor = 32)
    codes = torch.randint(0, c, (1, n, q))
    semantic = torch.randperm(12)[None]
    optimizer = torch.optim.Adam(model.parameters(), lr = 3e-3)
    for _ in range(200):
        loss, _ = model(codes.expand(8, -1, -1), cond_semantic_token_ids = semantic.expand(8, -1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1

    generated = model.generate(cond_semantic_token_ids = semantic)          # length from the semantic tokens
    assert generated.shape == (1, n, q)
    assert (generated == codes).float().mean() >= 0.9


def test_prompt_tokens_are_kept():
    model = tiny_soundstorm(num_semantic_token_ids = 10)
    prompt = torch.randint(0, 16, (2, 7, 3))
    semantic = torch.randint(0, 10, (2, 20))
    out = model.generate(cond_semantic_token_ids = semantic, prompt_acoustic_token_ids = prompt, steps = 3)
    assert out.shape == (2, 20, 3)
    assert torch.equal(out[:, :7], prompt)
    assert out.min() >= 0 and out.max() < 16


def test_padding_does_not_change_logits():
    model = tiny_soundstorm(num_semantic_token_ids = 10).eval()
    codes = torch.randint(0, 16, (2, 12, 3))
    mask = torch.ones(2, 12, dtype = torch.bool)
    mask[1, 8:] = False
    cond = model.embed_semantic(torch.randint(0, 10, (2, 12)), 2, 12)
    logits = model.net(codes, mask = mask, cond = cond)
    other = codes.clone()
    other[1, 8:] = torch.randint(0, 16, (4, 3))
    logits_other = model.net(other, mask = mask, cond = cond)
    assert torch.equal(logits[1, :8], logits_other[1, :8]) and torch.equal(logits[0], logits_other[0])


def test_padded_generation_matches_unpadded():
    model = tiny_soundstorm(num_semantic_token_ids = 10)
    semantic = torch.randint(0, 10, (2, 16))
    mask = torch.ones(2, 16, dtype = torch.bool)
    mask[1, 10:] = False
    kwargs = dict(steps = 4, start_temperature = 0.)   # greedy: deterministic
    padded = model.generate(cond_semantic_token_ids = semantic, mask = mask, **kwargs)
    alone = model.generate(cond_semantic_token_ids = semantic[1:, :10], **kwargs)
    assert torch.equal(padded[1, :10], alone[0])
    assert (padded[1, 10:] == model.pad_id).all() and (padded[0] >= 0).all()

    # semantic padding (-1) marks padded frames the same way
    semantic_padded = semantic.clone()
    semantic_padded[1, 10:] = -1
    assert torch.equal(model.generate(cond_semantic_token_ids = semantic_padded, **kwargs), padded)


def test_padding_in_training_is_ignored():
    model = tiny_soundstorm()
    codes = torch.randint(0, 16, (2, 12, 3))
    mask = torch.ones(2, 12, dtype = torch.bool)
    mask[1, 6:] = False
    other = codes.clone()
    other[1, 6:] = (other[1, 6:] + 1) % 16
    torch.manual_seed(1)
    loss, _ = model(codes, mask = mask)
    torch.manual_seed(1)
    loss_other, _ = model(other, mask = mask)
    assert torch.equal(loss, loss_other)


def test_grouped_quantizers_and_linear_schedule():
    model = tiny_soundstorm(q = 2, groups = 2, schedule = 'linear')
    codes = torch.randint(0, 16, (2, 10, 4))
    loss, breakdown = model(codes)
    loss.backward()
    assert breakdown.levels.shape == (2,) and 0 <= breakdown.accuracy <= 1
    out = model.generate(10, batch_size = 3, steps = (3, 2))
    assert out.shape == (3, 10, 4) and out.min() >= 0 and out.max() < 16


def test_classifier_free_guidance_extrapolates_from_the_unconditional_logits(monkeypatch):
    """Guided logits are ``u + s (c - u)`` (arXiv 2207.12598). The network is replaced by one whose logits are read
    off its condition, so greedy decoding must pick ``argmax(u + s (c - u))`` at every frame and level.
    Checked against: guidance returning the unconditional logits, or the conditional ones, fails."""
    model = tiny_soundstorm(num_semantic_token_ids = 10, cond_drop_prob = 0.2).eval()
    c = model.net.codebook_size

    def logits_from_condition(codes, *, mask = None, cond = None, quantizers = None):
        k = len(quantizers)
        return cond[..., :c][:, :, None].expand(codes.shape[0], codes.shape[1], k, c)

    monkeypatch.setattr(model.net, 'forward', logits_from_condition)
    semantic = torch.randint(0, 10, (2, 12))
    frames = semantic.shape[1]
    conditional = model.embed_semantic(model.align_semantic(semantic, frames), 2, frames)[..., :c]
    unconditional = model.embed_semantic(None, 2, frames)[..., :c]
    scale = 3.
    guided = unconditional + (conditional - unconditional) * scale
    # the check can tell the three apart
    assert (guided.argmax(-1) != conditional.argmax(-1)).any() and (guided.argmax(-1) != unconditional.argmax(-1)).any()

    kwargs = dict(cond_semantic_token_ids = semantic, steps = 2, start_temperature = 0.)
    out = model.generate(cond_scale = scale, **kwargs)
    expected = guided.argmax(-1)[..., None].expand(-1, -1, model.net.num_quantizers)
    assert torch.equal(out, expected)
    assert torch.equal(model.generate(cond_scale = 1., **kwargs), conditional.argmax(-1)[..., None].expand_as(out))


def test_wav2vec_conditioning_and_checkpoint(tmp_path):
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), wav2vec = StubSemantic())
    assert model.num_semantic_token_ids == 10 and model.semantic_frame_hz == 25 and model.codec_frame_hz == 50
    loss, _ = model(torch.randn(2, 800))
    loss.backward()
    assert model.semantic_token_emb.weight.grad.abs().sum() > 0

    # the codec is attached, not owned: not in the state dict, but its rates are in the config
    assert not any(k.startswith(('soundstream', 'wav2vec')) for k in model.state_dict())
    model.save(tmp_path / 'soundstorm.pt')
    loaded = SoundStorm.init_and_load_from(tmp_path / 'soundstorm.pt')
    assert loaded.soundstream is None and loaded.codec_frame_hz == 50 and loaded.semantic_frame_hz == 25
    codes = torch.randint(0, 16, (1, 8, 3))
    model.eval(), loaded.eval()
    assert torch.equal(model.net(codes), loaded.net(codes))
    loaded.soundstream = StubCodec(**STORM_CODEC)
    assert loaded.generate(seconds = 0.1).shape == (1, 80)


def test_semantic_to_audio_pipeline():
    class StubSemanticGenerator:
        def generate(self, *, max_length, batch_size, **kwargs):
            ids = torch.randint(0, 10, (batch_size, max_length))
            ids[1, 5] = 10          # EOS id of the semantic transformer
            ids[1, 6:] = -1         # padding after EOS
            return ids

    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), wav2vec = StubSemantic())
    pipeline = SemanticToAudio(semantic_transformer = StubSemanticGenerator(), soundstorm = model)
    waves = pipeline(batch_size = 2, max_length = 8, steps = 2)
    # 8 semantic tokens at 25 Hz -> 16 frames -> 256 samples; the second stops after 5 tokens -> 10 frames
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [256, 160]


def test_bad_inputs_raise_clear_errors():
    model = tiny_soundstorm()
    with pytest.raises(ValueError, match = r'\[0, 16\)'):
        model(torch.full((1, 5, 3), 16))
    with pytest.raises(ValueError, match = 'soundstream'):
        model(torch.randn(1, 320))
    with pytest.raises(ValueError, match = 'num_semantic_token_ids'):
        model(torch.randint(0, 16, (1, 5, 3)), cond_semantic_token_ids = torch.zeros(1, 5, dtype = torch.long))
    with pytest.raises(ValueError, match = 'spear_tts_text_to_semantic'):
        model.generate(texts = ['hello'])
    with pytest.raises(ValueError, match = 'seconds'):
        model.generate(seconds = 1.)
    with pytest.raises(ValueError, match = 'codec'):
        tiny_soundstorm(q = 4, soundstream = StubCodec(**STORM_CODEC))
    with pytest.raises(ValueError, match = 'prompt'):
        model.generate(4, prompt_acoustic_token_ids = torch.zeros(1, 4, 3, dtype = torch.long))


def test_pipeline_with_semantic_transformer_and_prime_wave():
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerWrapper
    wav2vec = StubSemantic()
    semantic = SemanticTransformerWrapper(
        transformer = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1, heads = 2, dim_head = 8),
        wav2vec = wav2vec, unique_consecutive = False)
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), wav2vec = wav2vec)
    pipeline = SemanticToAudio(semantic_transformer = semantic, soundstorm = model)
    prime = torch.rand(1, 128)                       # 4 semantic tokens, 8 codec frames
    out = pipeline(batch_size = 1, max_length = 10, prime_wave = prime, steps = 2, return_codes = True,
                   semantic_generate_kwargs = dict(cond_scale = 1.))
    out = out if torch.is_tensor(out) else out[0][None]
    prompt = model.tokenize(prime)
    kept = min(prompt.shape[1], out.shape[1] - 1)   # the prompt is cut when the semantic model stops early
    assert kept >= 6 and torch.equal(out[0, :kept], prompt[0, :kept])


class CodesAndSemantic(torch.utils.data.Dataset):
    def __init__(self, n = 6):
        self.codes = torch.randint(0, 16, (n, 16, 3))
        self.semantic = torch.randint(0, 10, (n, 8))

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, index):
        return self.semantic[index], self.codes[index]


class Audio(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(320) * (index + 1) / 4


def test_trainer_on_codes_writes_loadable_checkpoints(tmp_path):
    from audiolm_pytorch import SoundStormTrainer
    model = tiny_soundstorm(num_semantic_token_ids = 10, codec_target_sample_hz = 800, codec_downsample_factor = 16,
                            wav2vec_target_sample_hz = 800, wav2vec_downsample_factor = 32)
    trainer = SoundStormTrainer(model, num_train_steps = 3, batch_size = 2, dataset = CodesAndSemantic(), lr = 1e-3,
                                save_model_every = 2, save_results_every = 100, results_folder = tmp_path / 'results',
                                force_clear_prev_results = True, progress_bar = False)
    trainer.train()
    assert sorted(p.name for p in (tmp_path / 'results').glob('soundstorm.*.pt')) == ['soundstorm.0.pt', 'soundstorm.2.pt']
    loaded = SoundStorm.init_and_load_from(tmp_path / 'results' / 'soundstorm.2.pt').eval()
    codes = torch.randint(0, 16, (1, 8, 3))
    assert torch.allclose(loaded.net(codes), trainer.soundstorm.eval().net(codes))


def test_trainer_on_audio_with_codec_and_samples(tmp_path):
    from audiolm_pytorch import SoundStormTrainer
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), wav2vec = StubSemantic())
    trainer = SoundStormTrainer(model, num_train_steps = 2, batch_size = 2, dataset = Audio(), lr = 1e-3,
                                save_model_every = 100, save_results_every = 1, results_folder = tmp_path / 'results',
                                force_clear_prev_results = True, progress_bar = False, num_sample_steps = 2)
    trainer.train()
    samples = sorted(p.name for p in (tmp_path / 'results' / 'samples').glob('*.wav'))
    assert 'soundstorm.1.generated.wav' in samples and 'soundstorm.1.original.wav' in samples
    assert trainer.generate(10, return_codes = True).shape == (1, 10, 3)


class VariableCodesAndSemantic(torch.utils.data.Dataset):
    """Items of different lengths: collate_pad pads codes and ids with -1."""

    def __init__(self):
        self.items = [(torch.randint(0, 10, (n // 2,)), torch.randint(0, 16, (n, 3))) for n in (16, 10, 12, 8)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_trainer_on_codes_of_different_lengths_masks_the_padding(tmp_path):
    from audiolm_pytorch import SoundStormTrainer
    from audiolm_pytorch.data import collate_pad
    from audiolm_pytorch.trainers.data_stream import Batch
    model = tiny_soundstorm(num_semantic_token_ids = 10, codec_target_sample_hz = 800, codec_downsample_factor = 16,
                            wav2vec_target_sample_hz = 800, wav2vec_downsample_factor = 32)
    dataset = VariableCodesAndSemantic()
    trainer = SoundStormTrainer(model, num_train_steps = 2, batch_size = 2, dataset = dataset, lr = 1e-3,
                                save_model_every = 100, save_results_every = 100, results_folder = tmp_path / 'results',
                                force_clear_prev_results = True, progress_bar = False)
    semantic, codes = collate_pad([dataset[0], dataset[1]])
    assert (codes[1, 10:] == -1).all()
    torch.manual_seed(0)
    loss, _ = trainer.compute_loss(model, Batch(waves = (semantic, codes), texts = None))
    torch.manual_seed(0)
    expected, _ = model(codes.clamp(min = 0), cond_semantic_token_ids = semantic,
                        mask = torch.arange(16)[None] < torch.tensor([[16], [10]]))
    assert torch.isfinite(loss) and torch.allclose(loss, expected)
    trainer.train()


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_trainer_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    """Exact resume: steps 2-3 of a run loaded from its step-1 checkpoint give the same losses, weights, EMA
    weights and optimizer state as the run that never stopped (masking RNG, data order, optimizer, warmup and EMA
    all continue). Checked against: restoring the RNG states disabled (``load(restore_rng=False)`` in the
    resumed trainer) fails on the losses."""
    from audiolm_pytorch import SoundStormTrainer

    def build(results):
        torch.manual_seed(0)
        model = tiny_soundstorm(num_semantic_token_ids = 10, cond_drop_prob = 0.2)
        return SoundStormTrainer(model, num_train_steps = 4, batch_size = 2, dataset = CodesAndSemantic(n = 8),
                                 lr = 1e-3, num_warmup_steps = 2, save_model_every = 1, save_results_every = 100,
                                 valid_frac = 0.25, results_folder = results, force_clear_prev_results = True,
                                 progress_bar = False, use_ema = True, ema_update_after_step = 0, ema_update_every = 1)

    a = build(tmp_path / 'a')
    losses = [a.train_step()['loss'] for _ in range(4)]
    assert len(set(losses)) == 4

    b = build(tmp_path / 'b')
    b.load(tmp_path / 'a' / 'soundstorm.1.pt')
    assert b.steps == 2
    assert [b.train_step()['loss'] for _ in range(2)] == losses[2:]
    assert all(torch.equal(v, _state(a.model)[k]) for k, v in _state(b.model).items())
    assert all(torch.equal(v, _state(a.ema_model)[k]) for k, v in _state(b.ema_model).items())
    for phase_a, phase_b in zip(a._phases, b._phases, strict = True):
        opt_a, opt_b = phase_a.optimizer.state_dict()['state'], phase_b.optimizer.state_dict()['state']
        assert opt_a.keys() == opt_b.keys() and opt_a
        assert all(torch.equal(opt_a[i][key], opt_b[i][key]) for i in opt_a for key in opt_a[i])


# ---- bad codes, empty batches --------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def soundstorm():
    from tests.helpers import tiny_soundstorm
    torch.manual_seed(0)
    return tiny_soundstorm()


@pytest.mark.parametrize('change, message', [
    (lambda c: c + 16, r'\[0, 16\)'), (lambda c: c - 5, r'\[0, 16\)'), (lambda c: c[..., :2], r'\(batch, frames, 3\)'),
    (lambda c: c[0, :, 0], r'\(batch, frames, 3\)'), (lambda c: c[None], r'\(batch, frames, 3\)'),
    (lambda c: c[:, :0], 'at least one real'), (lambda c: c.float(), 'codec'),
])
def test_soundstorm_rejects_bad_codes(soundstorm, change, message):
    with pytest.raises(ValueError, match = message):
        soundstorm(change(torch.randint(0, 16, (2, 8, 3))))
    with pytest.raises(ValueError, match = 'prompt_acoustic_token_ids'):
        soundstorm.generate(4, prompt_acoustic_token_ids = torch.full((1, 2, 3), 99))


@pytest.mark.parametrize('call', ['forward', 'generate'])
def test_soundstorm_rejects_an_empty_batch(soundstorm, call):
    with pytest.raises(ValueError):
        soundstorm(torch.randint(0, 16, (0, 8, 3))) if call == 'forward' else soundstorm.generate(4, batch_size = 0)


# ---- training mask (paper 3.2), decoding invariants (3.3), pad frames ----------------------------------------------

def spy_on_net(model):
    calls = []
    original = model.net.forward

    def spy(codes, **kwargs):
        calls.append((codes.clone(), kwargs))
        return original(codes, **kwargs)

    model.net.forward = spy
    return calls


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
    # without the BERT-style corruption (no_replace / random tokens, tested in compat/test_shims.py) every token in
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


def test_decode_without_mask_treats_pad_frames_as_padding():
    # bug: decode(codes) on generate's padded output fed pad_id (-1) to the codec as a code
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC))
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
