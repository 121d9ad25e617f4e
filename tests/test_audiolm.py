"""AudioLM end to end: stub tokenizers and a tiny real SoundStream, primes, text_embeds, compatibility checks."""

import pytest
import torch

from audiolm_pytorch.audiolm import AudioLM
from audiolm_pytorch.lm.coarse import CoarseTransformer
from audiolm_pytorch.lm.fine import FineTransformer
from audiolm_pytorch.lm.semantic import SemanticTransformer
from tests.helpers import NAN, StubCodec, StubSemanticTokenizer, tiny_soundstream

TINY = dict(dim = 32, depth = 1, heads = 2, dim_head = 16)


def build(codec, wav2vec, conditioned = False, groups = 1):
    cond = dict(has_condition = True, cond_dim = 8) if conditioned else {}
    semantic = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **cond, **TINY)
    coarse = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = codec.codebook_size,
                               num_coarse_quantizers = 2, rq_groups = groups, **cond, **TINY)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = codec.codebook_size,
                           rq_groups = groups, **cond, **TINY)
    return AudioLM(wav2vec = wav2vec, codec = codec, semantic_transformer = semantic, coarse_transformer = coarse,
                   fine_transformer = fine)


def check_audio(out, hop, batch):
    waves = out if isinstance(out, list) else list(out)
    assert len(waves) == batch
    for wave in waves:
        assert wave.ndim == 1 and wave.shape[-1] % hop == 0 and torch.isfinite(wave).all()


@pytest.mark.parametrize('groups', [1, 2])
def test_audiolm_with_stubs(groups):
    codec, wav2vec = StubCodec(num_quantizers = 4, rq_groups = groups), StubSemanticTokenizer()
    audiolm = build(codec, wav2vec, groups = groups)
    out = audiolm(batch_size = 2, max_length = 6, max_coarse_time_steps = 5)
    check_audio(out, codec.downsample_factor, 2)
    assert all(w.shape[-1] <= 5 * codec.downsample_factor for w in out)

    prime = torch.randn(1, 32)                         # 8 frames at the codec's rate
    primed = audiolm(prime_wave = prime, max_length = 10, max_coarse_time_steps = 12)
    check_audio(primed, codec.downsample_factor, 1)
    waves = primed if isinstance(primed, list) else list(primed)
    # the prime's 8 frames are kept: the output starts with the prime's coarse + fine decoding
    expected = codec.decode_from_codebook_indices(codec.tokenize(prime))[0, 0]
    assert torch.allclose(waves[0][:32], expected, atol = 1e-5)


def test_audiolm_text_embeds_and_prime_path(tmp_path):
    from audiolm_pytorch.audio import save_audio
    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    audiolm = build(codec, wav2vec, conditioned = True)
    out = audiolm(batch_size = 2, text_embeds = torch.randn(2, 3, 8), max_length = 6, max_coarse_time_steps = 4)
    check_audio(out, codec.downsample_factor, 2)
    path = tmp_path / 'prime.wav'
    save_audio(path, torch.randn(1, 64) * 0.1, 3200)   # resampled to each tokenizer's rate
    out = audiolm(prime_wave_path = path, text_embeds = torch.randn(1, 3, 8), max_length = 12)
    check_audio(out, codec.downsample_factor, 1)


def test_audiolm_checks_stage_compatibility():
    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    semantic = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    coarse = CoarseTransformer(num_semantic_tokens = 21, codebook_size = 16, num_coarse_quantizers = 2, **TINY)
    fine = FineTransformer(num_coarse_quantizers = 3, num_fine_quantizers = 2, codebook_size = 16, **TINY)
    with pytest.raises(ValueError) as info:
        AudioLM(wav2vec = wav2vec, codec = codec, semantic_transformer = semantic, coarse_transformer = coarse,
                fine_transformer = fine)
    message = str(info.value)
    assert 'num_semantic_tokens' in message and 'num_coarse_quantizers' in message and 'num_quantizers' in message


def test_audiolm_with_tiny_soundstream_and_seed_flow():
    from audiolm_pytorch.audiolm_pytorch import FineTransformerWrapper
    codec = tiny_soundstream(codebook_size = 16, strides = (2, 2), codebook_dim = 8, use_local_attn = False,
                             target_sample_hz = 800).eval()
    wav2vec = StubSemanticTokenizer(target_sample_hz = 800)
    audiolm = build(codec, wav2vec, conditioned = True)
    out = audiolm(batch_size = 1, text_embeds = torch.randn(1, 2, 8), max_length = 6, max_coarse_time_steps = 6)
    check_audio(out, codec.downsample_factor, 1)
    out = audiolm(prime_wave = torch.randn(32), max_length = 8, max_coarse_time_steps = 10)
    check_audio(out, codec.downsample_factor, 1)

    # seed 000 flow at tiny size: fine loss straight from raw audio through the codec
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **TINY)
    wrapper = FineTransformerWrapper(soundstream = codec, transformer = fine)
    loss = wrapper(raw_wave = torch.randn(1, 4 * 16), return_loss = True)
    loss.backward()
    assert torch.isfinite(loss) and fine.start_token.grad is not None


def test_eager_eos_still_gives_audio_and_empty_inputs_are_clear_errors():
    # stages that want to stop at once (EOS has by far the highest logit) must still give at least one new
    # semantic token and one new frame: nothing empty leaks into the next stage
    codec, wav2vec = StubCodec(num_quantizers = 4), StubSemanticTokenizer()
    audiolm = build(codec, wav2vec)
    semantic, coarse = audiolm.semantic.transformer, audiolm.coarse.transformer
    with torch.no_grad():
        semantic.to_logits.bias[semantic.eos_id] = 1e4
        coarse.coarse_head_bias[0, coarse.eos_id] = 1e4
    out = audiolm(batch_size = 2, max_length = 6, max_coarse_time_steps = 5)
    check_audio(out, codec.downsample_factor, 2)
    assert all(w.shape[-1] == codec.downsample_factor for w in out)   # exactly one frame each

    with pytest.raises(ValueError, match = 'at least one semantic token'):
        audiolm.coarse.generate(semantic_token_ids = torch.full((2, 3), -1), max_time_steps = 4)
    with pytest.raises(ValueError, match = 'frames >= 1'):
        audiolm.fine.generate(coarse_token_ids = torch.zeros(2, 0, 2, dtype = torch.long))


def test_audiolm_batch_follows_conditions_and_primes():
    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    audiolm = build(codec, wav2vec, conditioned = True)
    check_audio(audiolm(text_embeds = torch.randn(3, 2, 8), max_length = 6, max_coarse_time_steps = 3),
                codec.downsample_factor, 3)
    check_audio(audiolm(batch_size = 2, text_embeds = torch.randn(1, 2, 8), max_length = 6, max_coarse_time_steps = 3),
                codec.downsample_factor, 2)
    with pytest.raises(ValueError, match = '3 prime waves for a batch of 2'):
        audiolm(batch_size = 2, prime_wave = torch.randn(3, 64), max_length = 10)
    with pytest.raises(ValueError, match = 'conditions'):
        audiolm(batch_size = 2, text_embeds = torch.randn(3, 2, 8), max_length = 6)


def test_coarse_bound_leaves_room_for_deduplicated_semantic_tokens():
    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    audiolm = build(codec, wav2vec)
    frames_per_token = (wav2vec.downsample_factor / wav2vec.target_sample_hz) * codec.target_sample_hz / codec.downsample_factor
    assert audiolm.semantic.unique_consecutive
    # each deduplicated token may stand for several tokenizer frames: the bound must not cut the audio at one each
    assert audiolm._coarse_steps_for(20) >= 2 * 20 * frames_per_token
    audiolm.semantic.unique_consecutive = False
    assert audiolm._coarse_steps_for(20) == round(20 * frames_per_token)


def test_sampling_defaults_per_stage_and_overrides(monkeypatch):
    # None -> each stage's documented default (MusicLM temperatures 1.0 / 0.95 / 0.4); a number -> every stage;
    # a triple -> one value per stage; anything else is a clear error
    from audiolm_pytorch.lm.sampling import STAGE_SAMPLING_DEFAULTS
    audiolm = build(StubCodec(), StubSemanticTokenizer())
    seen = {}
    for stage in ('semantic', 'coarse', 'fine'):
        wrapper = getattr(audiolm, stage)
        original = wrapper.generate

        def spy(*args, _stage = stage, _original = original, **kwargs):
            seen[_stage] = {k: kwargs[k] for k in ('temperature', 'filter_thres', 'cond_scale')}
            return _original(*args, **kwargs)
        monkeypatch.setattr(wrapper, 'generate', spy)

    audiolm(batch_size = 1, max_length = 4, max_coarse_time_steps = 3)
    assert seen == STAGE_SAMPLING_DEFAULTS
    assert [seen[s]['temperature'] for s in ('semantic', 'coarse', 'fine')] == [1.0, 0.95, 0.4]
    audiolm(batch_size = 1, max_length = 4, max_coarse_time_steps = 3, temperature = 0.7, cond_scale = 1.)
    assert all(v['temperature'] == 0.7 and v['cond_scale'] == 1. and v['filter_thres'] == 0.9 for v in seen.values())
    audiolm(batch_size = 1, max_length = 4, max_coarse_time_steps = 3, filter_thres = (0., 0.5, 0.9))
    assert [seen[s]['filter_thres'] for s in ('semantic', 'coarse', 'fine')] == [0., 0.5, 0.9]
    for bad in ((1., 2.), 'hot', True):
        with pytest.raises(ValueError, match = 'temperature'):
            audiolm(batch_size = 1, max_length = 4, temperature = bad)


def test_generation_from_a_model_that_never_ends_reaches_the_requested_length():
    # stages whose EOS is never likely (trained on crops with file_end=False) give exactly the requested length
    codec, wav2vec = StubCodec(), StubSemanticTokenizer()
    audiolm = build(codec, wav2vec)
    with torch.no_grad():
        audiolm.semantic.transformer.to_logits.bias[audiolm.semantic.transformer.eos_id] = -1e4
        audiolm.coarse.transformer.coarse_head_bias[0, audiolm.coarse.transformer.eos_id] = -1e4
    out = audiolm(batch_size = 3, max_length = 7, max_coarse_time_steps = 9)
    assert torch.is_tensor(out) and out.shape == (3, 9 * codec.downsample_factor)
    prime = torch.randn(1, 8 * codec.downsample_factor)
    out = audiolm(prime_wave = prime, max_length = 12, max_coarse_time_steps = 14)
    assert out.shape == (1, 14 * codec.downsample_factor)


# ---- bad primes and sizes, mismatched stages -----------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def audiolm():
    torch.manual_seed(0)
    return build(StubCodec(), StubSemanticTokenizer())


@pytest.mark.parametrize('kwargs, message', [
    (dict(prime_wave = torch.full((1, 32), NAN)), 'NaN'),                   # was a silent generation from NaN
    (dict(prime_wave = torch.zeros(1, 0)), 'empty'),                        # was RuntimeError from julius
    (dict(prime_wave = torch.zeros(1, 1, 1, 32)), 'mono waveform'),         # was silently accepted
    (dict(batch_size = 0), 'batch_size'),                                   # was RuntimeError
    (dict(max_length = 0), 'max_length'),
])
def test_audiolm_rejects_bad_primes_and_sizes(audiolm, kwargs, message):
    with pytest.raises(ValueError, match = message):
        audiolm(**{**dict(max_length = 6, max_coarse_time_steps = 4), **kwargs})


def test_audiolm_mismatched_stage_configs():
    from audiolm_pytorch import AudioLM, CoarseTransformer, FineTransformer, SemanticTransformer
    semantic = SemanticTransformer(num_semantic_tokens = 20, **TINY)
    coarse = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, rq_groups = 2,
                               **TINY)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 3, codebook_size = 32, **TINY)
    with pytest.raises(ValueError) as info:
        AudioLM(wav2vec = StubSemanticTokenizer(codebook_size = 30), codec = StubCodec(num_quantizers = 4),
                semantic_transformer = semantic, coarse_transformer = coarse, fine_transformer = fine)
    message = str(info.value)
    for problem in ('wav2vec has codebook_size=30', 'fine codebook_size=32', 'rq_groups', 'exceed'):
        assert problem in message


@pytest.mark.parametrize('kwargs', [dict(prime_wave = torch.randint(-3000, 3000, (1, 32))),
                                    dict(prime_wave = torch.randn(1, 32), prime_wave_input_sample_hz = 0),
                                    dict(prime_wave = torch.randn(1, 2, 32))])
def test_audiolm_rejects_int_stereo_and_zero_rate_primes(audiolm, kwargs):
    with pytest.raises(ValueError):
        audiolm(max_length = 6, max_coarse_time_steps = 4, **kwargs)
