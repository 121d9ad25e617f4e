"""MusicLM: reranking of candidates, and MuLaN conditioning of the three AudioLM stages end to end."""

import pytest
import torch
from torch import nn

from audiolm_pytorch import (
    AudioLM,
    AudioSpectrogramTransformer,
    CoarseTransformer,
    CoarseTransformerWrapper,
    FineTransformer,
    FineTransformerWrapper,
    MuLaN,
    MuLaNEmbedQuantizer,
    MusicLM,
    SemanticTransformer,
    SemanticTransformerWrapper,
    TextTransformer,
)
from tests.helpers import StubCodec


def tiny_quantizer(conditioning_dims = (16, 24, 40), codebook_size = 8, **kwargs):
    audio = AudioSpectrogramTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, patch_size = 8,
                                        spec_n_fft = 64, spec_win_length = 32, spec_hop_length = 16)
    text = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, num_tokens = 300, max_seq_len = 64)
    mulan = MuLaN(audio_transformer = audio, text_transformer = text, dim_latent = 16)
    return MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = conditioning_dims, rq_num_quantizers = 2,
                               codebook_size = codebook_size, **kwargs)


def small_quantizer(**kwargs):
    """One conditioning dim, 4 codes a level: small enough that k-means init and expiry act within a test."""
    return tiny_quantizer(conditioning_dims = 8, codebook_size = 4, **kwargs)


class StubAudioLM(nn.Module):
    """Stands in for AudioLM: candidate ``i`` of a call is the constant wave ``values[i]``."""

    def __init__(self, quantizer, values, lengths = None):
        super().__init__()
        self.audio_conditioner = quantizer
        self.values, self.lengths, self.calls = values, lengths, []

    def forward(self, *, text, batch_size, **kwargs):
        self.calls.append(dict(text = list(text), batch_size = batch_size, **kwargs))
        assert not self.training                      # MusicLM generates in eval mode
        start = sum(call['batch_size'] for call in self.calls[:-1])
        values = self.values[start:start + batch_size]
        if self.lengths is None:
            return torch.stack([torch.full((64,), float(v)) for v in values])
        return [torch.full((n,), float(v)) for v, n in zip(values, self.lengths[start:start + batch_size])]


def mean_scorer(waves, texts):
    return torch.stack([wave.mean() for wave in waves])


def test_reranking_picks_argmax_of_stub_scorer():
    quantizer = tiny_quantizer()
    values = [0.1, 0.7, 0.3, -0.2, -0.5, -0.1]          # text 0: best is candidate 1; text 1: candidate 2
    audio_lm = StubAudioLM(quantizer, values).train()
    musiclm = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = quantizer, scorer = mean_scorer)

    music, scores, best = musiclm(['calm piano', 'fast drums'], num_samples = 3, return_scores = True, max_length = 7)
    assert audio_lm.calls == [dict(text = ['calm piano'] * 3 + ['fast drums'] * 3, batch_size = 6, max_length = 7)]
    assert best.tolist() == [1, 2]
    assert torch.allclose(scores, torch.tensor(values).reshape(2, 3))
    assert music.shape == (2, 64)
    assert torch.allclose(music[:, 0], torch.tensor([0.7, -0.1]))
    assert audio_lm.training                             # training mode restored afterwards

    # chunked generation gives the same choice; a single string works
    audio_lm = StubAudioLM(quantizer, values)
    chunked = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = quantizer, scorer = mean_scorer,
                      max_batch_size = 4)
    assert torch.equal(chunked(['calm piano', 'fast drums'], num_samples = 3), music)
    assert [call['batch_size'] for call in audio_lm.calls] == [4, 2]
    single = MusicLM(audio_lm = StubAudioLM(quantizer, values), mulan_embed_quantizer = quantizer,
                     scorer = mean_scorer)('calm piano', num_samples = 3)
    assert single.shape == (1, 64) and torch.allclose(single[0, 0], torch.tensor(0.7))


def test_reranking_with_mulan_similarity_and_variable_lengths():
    quantizer = tiny_quantizer()
    quantizer.mulan.eval()
    values = [0.2, -0.4, 0.9, 0.05]
    lengths = [900, 1000, 1100, 1000]
    audio_lm = StubAudioLM(quantizer, values, lengths)
    musiclm = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = quantizer)
    texts = ['a tense string quartet', 'lofi beat']
    music, scores, best = musiclm(texts, num_samples = 2, return_scores = True)

    expected = torch.stack([
        quantizer.mulan.similarity(torch.full((1, n), v), raw_texts = [text])[0]
        for v, n, text in zip(values, lengths, [texts[0]] * 2 + [texts[1]] * 2)]).reshape(2, 2)
    assert torch.allclose(scores, expected, atol = 1e-5)
    assert torch.equal(best, expected.argmax(dim = -1))
    assert isinstance(music, list) and [m.shape[-1] for m in music] == [lengths[i * 2 + b] for i, b in enumerate(best.tolist())]


def test_musiclm_checks_the_conditioner():
    quantizer = tiny_quantizer()
    # no conditioner and no stage that could take one: nothing would ever see the text
    with pytest.raises(ValueError, match = 'audio_text_condition=True'):
        MusicLM(audio_lm = StubAudioLM(None, [0.]), mulan_embed_quantizer = quantizer)
    musiclm = MusicLM(audio_lm = StubAudioLM(quantizer, [0.]), mulan_embed_quantizer = quantizer)
    with pytest.raises(ValueError, match = 'num_samples'):
        musiclm(['x'], num_samples = 0)


# ---------------------------------------------------------------------------------------------------------
# the three AudioLM stages accept the quantizer as their audio_conditioner
# ---------------------------------------------------------------------------------------------------------

def tiny_stages(cond_dims = (16, 24, 40)):
    common = dict(depth = 1, heads = 2, dim_head = 16, audio_text_condition = True)
    semantic = SemanticTransformer(num_semantic_tokens = 10, dim = 32, cond_dim = cond_dims[0], **common)
    coarse = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 16, num_coarse_quantizers = 2, dim = 32,
                               cond_dim = cond_dims[1], **common)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, dim = 32,
                           cond_dim = cond_dims[2], **common)
    return semantic, coarse, fine


def test_stages_train_with_audio_embeddings_from_the_quantizer():
    quantizer = tiny_quantizer()
    semantic, coarse, fine = tiny_stages()
    wrappers = dict(
        semantic = SemanticTransformerWrapper(transformer = semantic, audio_conditioner = quantizer),
        coarse = CoarseTransformerWrapper(transformer = coarse, audio_conditioner = quantizer),
        fine = FineTransformerWrapper(transformer = fine, audio_conditioner = quantizer))
    wave = torch.randn(2, 1024)
    inputs = dict(
        semantic = dict(semantic_token_ids = torch.randint(0, 10, (2, 6))),
        coarse = dict(semantic_token_ids = torch.randint(0, 10, (2, 6)), coarse_token_ids = torch.randint(0, 16, (2, 3, 2))),
        fine = dict(coarse_token_ids = torch.randint(0, 16, (2, 3, 2)), fine_token_ids = torch.randint(0, 16, (2, 3, 2))))

    for name, wrapper in wrappers.items():
        wrapper.train()
        loss = wrapper(raw_wave = wave, return_loss = True, **inputs[name])
        loss.backward()
        assert torch.isfinite(loss)
        assert wrapper.transformer.decoder.proj_cond.weight.grad is not None

        # in eval mode the condition is used: a different audio prompt changes the logits
        wrapper.eval()
        with torch.no_grad():
            a = wrapper(raw_wave = wave, **inputs[name])
            b = wrapper(raw_wave = torch.randn(2, 1024) * 3, **inputs[name])
        a, b = (a, b) if isinstance(a, torch.Tensor) else (a[-1], b[-1])
        assert not torch.allclose(a, b)
    assert all(p.grad is None for p in quantizer.mulan.parameters())


def test_musiclm_end_to_end_with_audiolm():
    quantizer = tiny_quantizer()
    namespaces = []
    original_forward = quantizer.forward

    def spy(*args, **kwargs):
        namespaces.append((kwargs.get('namespace'), kwargs.get('texts')))
        return original_forward(*args, **kwargs)

    quantizer.forward = spy
    semantic, coarse, fine = tiny_stages()
    audio_lm = AudioLM(wav2vec = None, codec = StubCodec(target_sample_hz = 8000), semantic_transformer = semantic,
                       coarse_transformer = coarse, fine_transformer = fine, audio_conditioner = quantizer)
    musiclm = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = quantizer)

    music, scores, best = musiclm(['a jazz trio', 'ambient pads'], num_samples = 2, return_scores = True,
                                  max_length = 4, max_coarse_time_steps = 3)
    assert scores.shape == (2, 2) and best.shape == (2,)
    waves = music if isinstance(music, list) else list(music)
    assert len(waves) == 2 and all(w.ndim == 1 and w.shape[-1] <= 3 * 4 for w in waves)
    texts = ['a jazz trio'] * 2 + ['ambient pads'] * 2
    assert namespaces == [('semantic', texts), ('coarse', texts), ('fine', texts)]


def test_musiclm_conditions_an_audiolm_built_without_conditioner():
    """musiclm-pytorch's usage (seed 003): the AudioLM is built WITHOUT audio_conditioner and MusicLM conditions
    it through the quantizer; the result equals the AudioLM built with the quantizer as its conditioner."""
    quantizer = tiny_quantizer()
    namespaces = []
    original_forward = quantizer.forward
    quantizer.forward = lambda *a, **kw: namespaces.append(kw.get('namespace')) or original_forward(*a, **kw)
    semantic, coarse, fine = tiny_stages()
    stages = dict(semantic_transformer = semantic, coarse_transformer = coarse, fine_transformer = fine)
    audio_lm = AudioLM(wav2vec = None, codec = StubCodec(target_sample_hz = 8000), **stages)                 # no audio_conditioner
    keys = set(audio_lm.state_dict())

    musiclm = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = quantizer)
    kwargs = dict(max_length = 4, max_coarse_time_steps = 3)
    musiclm(['warm up'], **kwargs)                   # the quantizer's codebooks initialise on their first call
    namespaces.clear()
    torch.manual_seed(0)
    music = musiclm(['the crystalline sounds of the piano in a ballroom'], **kwargs)
    assert isinstance(music, torch.Tensor) and music.shape[0] == 1
    assert namespaces == ['semantic', 'coarse', 'fine']
    # conditioning is lent for the call only: the AudioLM is left as it was built
    assert all(stage.audio_conditioner is None for stage in (audio_lm.semantic, audio_lm.coarse, audio_lm.fine))
    assert set(audio_lm.state_dict()) == keys

    with_conditioner = AudioLM(wav2vec = None, codec = StubCodec(target_sample_hz = 8000), audio_conditioner = quantizer, **stages)
    torch.manual_seed(0)
    same = MusicLM(audio_lm = with_conditioner, mulan_embed_quantizer = quantizer)(
        ['the crystalline sounds of the piano in a ballroom'], **kwargs)
    assert torch.equal(music, same)

    # the text reaches the stages: another prompt gives other semantic logits under the same seed
    cond = lambda text: audio_lm.semantic._condition(text = [text], text_embeds = None, batch_size = 1)
    with torch.no_grad(), __import__('audiolm_pytorch.musiclm.musiclm', fromlist = ['x'])._conditioned_by(
            audio_lm, quantizer):
        quantizer.eval()
        a, b = cond('piano'), cond('heavy metal drums')
    assert not torch.equal(a[0] if isinstance(a, tuple) else a, b[0] if isinstance(b, tuple) else b)


def test_seed_style_stage_condition_width_defaults_to_model_dim():
    quantizer = tiny_quantizer(conditioning_dims = (32, 32, 32))
    semantic = SemanticTransformer(num_semantic_tokens = 10, dim = 32, depth = 1, audio_text_condition = True)
    wrapper = SemanticTransformerWrapper(transformer = semantic, audio_conditioner = quantizer)
    loss = wrapper(semantic_token_ids = torch.randint(0, 10, (2, 6)), raw_wave = torch.randn(2, 1024), return_loss = True)
    assert torch.isfinite(loss)


class StubWav2Vec(nn.Module):
    """Tiny local stand-in for HubertWithKmeans: 10 'clusters' of frame loudness, 320 samples per frame."""
    target_sample_hz, downsample_factor, seq_len_multiple_of, codebook_size = 16000, 320, 320, 10

    def forward(self, wave, flatten = True, input_sample_hz = None):
        wave = wave.reshape(wave.shape[0], -1)
        frames = wave.shape[-1] // 320
        loudness = wave[:, :frames * 320].reshape(wave.shape[0], frames, 320).abs().mean(dim = -1)
        return (loudness * 50).long().clamp(0, 9)


def test_seed_semantic_trainer_with_quantizer_as_audio_conditioner(tmp_path, assets_dir):
    """Seed 003's trainer snippet with tiny local stand-ins (no HuBERT checkpoint, no .cuda())."""
    import shutil

    from audiolm_pytorch import SemanticTransformerTrainer

    folder = tmp_path / 'audio'
    folder.mkdir()
    for index in range(3):
        shutil.copy(assets_dir / f'music_{index}_16k.wav', folder)

    quantizer = tiny_quantizer(conditioning_dims = (32, 32, 32))
    calls = []
    original_forward = quantizer.forward
    quantizer.forward = lambda **kwargs: calls.append(kwargs['namespace']) or original_forward(**kwargs)

    wav2vec = StubWav2Vec()
    semantic_transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, dim = 32, depth = 1,
                                               heads = 2, dim_head = 16, cond_dim = 32, audio_text_condition = True)
    trainer = SemanticTransformerTrainer(
        transformer = semantic_transformer, wav2vec = wav2vec, audio_conditioner = quantizer, folder = str(folder),
        batch_size = 1, data_max_length = 320 * 32, num_train_steps = 1, results_folder = tmp_path / 'results',
        progress_bar = False, force_clear_prev_results = True)
    trainer.train()
    assert (tmp_path / 'results' / 'semantic.transformer.0.pt').is_file()
    assert calls and set(calls) == {'semantic'}


def test_every_stage_conditions_on_the_clip_at_mulans_rate():
    """The semantic and coarse stages hold audio at the semantic tokenizer's rate, the fine stage at the codec's:
    with mulan_sample_hz set, MuLaN sees the same clip at its own rate from all three."""
    from audiolm_pytorch.audio import resample
    from tests.helpers import StubSemanticTokenizer

    quantizer = tiny_quantizer()
    quantizer.mulan_sample_hz = 1600
    seen = []
    original = quantizer.get_latents

    def recording(wavs = None, texts = None):
        seen.append(wavs)
        return original(wavs = wavs, texts = texts)

    quantizer.get_latents = recording
    wav2vec = StubSemanticTokenizer(codebook_size = 10, target_sample_hz = 800)   # semantic + coarse stages' rate
    codec = StubCodec(target_sample_hz = 3200)                   # fine stage's rate
    semantic, coarse, fine = tiny_stages()
    clip = torch.sin(torch.linspace(0, 60, 1600))[None]          # 1 s at mulan's 1600 Hz
    at = lambda hz: resample(clip, 1600, hz)

    SemanticTransformerWrapper(transformer = semantic, wav2vec = wav2vec, audio_conditioner = quantizer)(
        raw_wave = at(800), return_loss = True)
    CoarseTransformerWrapper(transformer = coarse, wav2vec = wav2vec, codec = codec, audio_conditioner = quantizer)(
        raw_wave = at(800), raw_wave_for_codec = at(3200), return_loss = True)
    FineTransformerWrapper(transformer = fine, codec = codec, audio_conditioner = quantizer)(
        raw_wave = at(3200), return_loss = True)

    assert [w.shape[-1] for w in seen] == [1600, 1600, 1600]
    for wave in seen:   # the same clip (up to resampling error at these tiny rates), not 0.5x / 2x time-scaled
        assert torch.allclose(wave[0, 100:-100], clip[0, 100:-100], atol = 0.05)
    assert MusicLM(StubAudioLM(quantizer, [0.]), quantizer).mulan_sample_hz == 1600


# ---- the quantizer: text never refits codebooks, eval-mode generation, frozen codebooks; chunked scoring -----------

def rq_state(quantizer):
    return {k: v.clone() for k, v in quantizer.rq.state_dict().items()}


def same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_text_prompts_never_refit_the_codebooks():
    """Text latents (inference prompts) used to EMA-update / expire the audio codebooks whenever the quantizer
    was in training mode, so conditioning tokens for the same prompt changed from call to call."""
    quantizer = small_quantizer().train()
    quantizer(wavs = torch.randn(6, 1000))                    # k-means init on audio
    before = rq_state(quantizer)
    texts = ['calm piano', 'fast drums', 'a choir']
    first = quantizer(texts = texts, namespace = 'coarse')
    assert same_state(before, rq_state(quantizer))
    assert torch.equal(first, quantizer(texts = texts, namespace = 'coarse'))   # same text -> same condition
    # audio still fits the codebooks in training mode (so the check above can fail)
    quantizer(wavs = torch.randn(6, 1000) * 2)
    assert not same_state(before, rq_state(quantizer))


def test_musiclm_generates_with_the_quantizer_in_eval_mode():
    """With an audio_lm that reaches the quantizer without holding it as a submodule, generation ran with the
    quantizer (and its codebooks) in training mode."""
    quantizer = small_quantizer().train()
    quantizer(wavs = torch.randn(6, 1000))
    modes = []

    def audio_lm(*, text, batch_size, **kwargs):
        modes.append(quantizer.training)
        quantizer(texts = text, namespace = 'semantic')
        return torch.randn(batch_size, 300)

    musiclm = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = quantizer)
    music = musiclm(['a b', 'c d e'], num_samples = 2)
    assert music.shape == (2, 300)
    assert modes == [False]
    assert quantizer.training                                  # mode restored afterwards


def test_frozen_codebook_survives_a_checkpoint_round_trip(tmp_path):
    """The documented workflow (fit, then ``quantizer.freeze_codebook = True``) was lost on save / reload: the
    reloaded quantizer refit its codebooks again."""
    quantizer = small_quantizer().train()
    quantizer(wavs = torch.randn(6, 1000))
    quantizer.freeze_codebook = True
    loaded = MuLaNEmbedQuantizer.init_and_load_from(quantizer.save(tmp_path / 'q.pt')).train()
    assert loaded.freeze_codebook
    before = rq_state(loaded)
    loaded(wavs = torch.randn(6, 1000) * 3)
    assert same_state(before, rq_state(loaded))


def test_musiclm_scores_in_chunks_of_max_batch_size():
    quantizer = small_quantizer()
    values = [0.3, -0.2, 0.5, 0.1, -0.4, 0.2]

    class StubLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.audio_conditioner, self.offset = quantizer, 0

        def forward(self, *, text, batch_size, **kwargs):
            out = torch.stack([torch.full((400,), values[self.offset + i]) * torch.linspace(-1, 1, 400)
                               for i in range(batch_size)])
            self.offset += batch_size
            return out

    mulan = quantizer.mulan
    sizes = []
    original = mulan.similarity

    def spy(wavs, *args, **kwargs):
        sizes.append(wavs.shape[0])
        return original(wavs, *args, **kwargs)

    mulan.similarity = spy
    full = MusicLM(audio_lm = StubLM(), mulan_embed_quantizer = quantizer)
    _, scores, best = full(['x', 'y'], num_samples = 3, return_scores = True)
    assert sizes == [6]
    sizes.clear()
    chunked = MusicLM(audio_lm = StubLM(), mulan_embed_quantizer = quantizer, max_batch_size = 4)
    _, chunked_scores, chunked_best = chunked(['x', 'y'], num_samples = 3, return_scores = True)
    assert sizes == [4, 2]
    assert torch.allclose(scores, chunked_scores, atol = 1e-5) and torch.equal(best, chunked_best)
