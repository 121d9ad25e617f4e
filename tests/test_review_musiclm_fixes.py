"""Review fixes for MuLaN / MuLaNEmbedQuantizer / MusicLM / MuLaNTrainer: each test failed before its fix."""

import torch
from torch import nn

from audiolm_pytorch import AudioSpectrogramTransformer, MuLaN, MuLaNEmbedQuantizer, MusicLM, TextTransformer


def tiny_quantizer(**kwargs):
    audio = AudioSpectrogramTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, patch_size = 8,
                                        spec_n_fft = 64, spec_win_length = 32, spec_hop_length = 16)
    text = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, num_tokens = 300, max_seq_len = 64)
    mulan = MuLaN(audio_transformer = audio, text_transformer = text, dim_latent = 16)
    return MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = 8, rq_num_quantizers = 2, codebook_size = 4,
                               **kwargs)


def rq_state(quantizer):
    return {k: v.clone() for k, v in quantizer.rq.state_dict().items()}


def same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_text_prompts_never_refit_the_codebooks():
    """Text latents (inference prompts) used to EMA-update / expire the audio codebooks whenever the quantizer
    was in training mode, so conditioning tokens for the same prompt changed from call to call."""
    quantizer = tiny_quantizer().train()
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
    quantizer = tiny_quantizer().train()
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
    quantizer = tiny_quantizer().train()
    quantizer(wavs = torch.randn(6, 1000))
    quantizer.freeze_codebook = True
    loaded = MuLaNEmbedQuantizer.init_and_load_from(quantizer.save(tmp_path / 'q.pt')).train()
    assert loaded.freeze_codebook
    before = rq_state(loaded)
    loaded(wavs = torch.randn(6, 1000) * 3)
    assert same_state(before, rq_state(loaded))


def test_musiclm_scores_in_chunks_of_max_batch_size():
    quantizer = tiny_quantizer()
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


def test_mulan_trainer_mixes_multichannel_audio_down():
    """``(b, channels, n)`` audio used to be flattened to ``(b, channels * n)``: the channels played one after
    the other."""
    from audiolm_pytorch.trainers.base import Batch
    from audiolm_pytorch.trainers.mulan import split_text_audio

    stereo = torch.randn(2, 2, 500)
    wavs, text = split_text_audio(Batch((stereo,), ['a', 'b']))
    assert wavs.shape == (2, 500)
    assert torch.allclose(wavs, stereo.mean(dim = 1))
    assert text == dict(raw_texts = ['a', 'b'])
    mono, _ = split_text_audio(Batch((stereo[:, :1],), ['a', 'b']))
    assert torch.equal(mono, stereo[:, 0])
