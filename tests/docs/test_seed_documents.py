"""The usage of the project's seed documents (the task statements numbered 000 and 001, whose code is copied into
the tests below, so nothing is read from outside the repository), run as written at their full sizes (on CPU: the
seeds' ``.cuda()`` calls are the only change), and the code blocks of the reference packages' READMEs
(audiolm-pytorch, soundstorm-pytorch, musiclm-pytorch: seeds 000, 001, 003 and the audiolm-pytorch README) at
tiny sizes."""

import pytest
import torch

from tests.helpers import tiny_soundstream as shared_tiny_soundstream


def test_seed_000_fine_transformer_on_soundstream_as_written():
    from audiolm_pytorch.audiolm_pytorch import AudioLM, FineTransformer, FineTransformerWrapper, SoundStream  # noqa: F401

    soundstream = SoundStream(codebook_size = 1024, rq_num_quantizers = 8)
    transformer = FineTransformer(num_coarse_quantizers = 3, num_fine_quantizers = 5, codebook_size = 1024,
                                  dim = 512, depth = 6)
    train_wrapper = FineTransformerWrapper(soundstream = soundstream, transformer = transformer)
    raw_waveform = torch.randn(1, 320 * 512)
    loss = train_wrapper(raw_wave = raw_waveform, return_loss = True)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in transformer.parameters())
    # the codec is only a tokenizer here: it receives no gradient
    assert all(p.grad is None for p in soundstream.parameters())


def test_seed_001_soundstorm_on_codes_as_written():
    from audiolm_pytorch import ConformerWrapper, SoundStorm

    conformer = ConformerWrapper(codebook_size = 1024, num_quantizers = 12, conformer = dict(dim = 512, depth = 2))
    model = SoundStorm(conformer, steps = 18, schedule = 'cosine')
    codes = torch.randint(0, 1024, (2, 1024, 12))
    loss, _ = model(codes)
    loss.backward()
    assert torch.isfinite(loss)
    generated = model.generate(1024, batch_size = 2)
    assert generated.shape == (2, 1024, 12)
    assert 0 <= int(generated.min()) and int(generated.max()) < 1024


# ---------------------------------------------------------------------------------------------------------
# the references' README code blocks, run as written at tiny sizes (the only changes: sizes, no .cuda(), and
# local tiny checkpoints instead of the ./hubert/ files)
# ---------------------------------------------------------------------------------------------------------

def tiny_soundstream(**kwargs):
    return shared_tiny_soundstream(**{**dict(codebook_size = 16, channels = 8, strides = (2, 2), channel_mults = (1, 2),
                                             codebook_dim = 8, attn_depth = 0), **kwargs})


def test_audiolm_readme_soundstream_as_a_tokenizer():
    soundstream = tiny_soundstream()
    soundstream.eval()
    audio = torch.randn(1, 512 * 4)
    codes = soundstream(audio, return_codes_only = True)
    recon_audio_from_codes = soundstream.decode_from_codebook_indices(codes)
    assert torch.allclose(recon_audio_from_codes, soundstream(audio, return_recons_only = True), atol = 1e-5)


def test_musiclm_readme_blocks_as_written():
    """Seed 003: MuLaN, the MuLaNEmbedQuantizer, and MusicLM over an AudioLM built WITHOUT audio_conditioner."""
    from pathlib import Path

    from audiolm_pytorch import (
        AudioLM,
        AudioSpectrogramTransformer,
        CoarseTransformer,
        FineTransformer,
        HubertWithKmeans,
        MuLaN,
        MuLaNEmbedQuantizer,
        MusicLM,
        SemanticTransformer,
        TextTransformer,
    )

    torch.manual_seed(0)
    audio_transformer = AudioSpectrogramTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, spec_n_fft = 128,
                                                    spec_win_length = 24, spec_aug_stretch_factor = 0.8)
    text_transformer = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16)
    mulan = MuLaN(audio_transformer = audio_transformer, text_transformer = text_transformer)

    wavs = torch.randn(2, 1024)
    texts = torch.randint(0, 20000, (2, 256))
    loss = mulan(wavs, texts)
    loss.backward()
    assert torch.isfinite(loss)
    assert mulan.get_audio_latents(wavs).shape == mulan.get_text_latents(texts).shape

    quantizer = MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = (32, 32, 32),
                                    namespaces = ('semantic', 'coarse', 'fine'))
    conds = quantizer(wavs = wavs, namespace = 'semantic')
    assert conds.shape == (2, 8, 32)                 # 8 is number of quantizers

    assets = Path(__file__).parents[1] / 'assets' / 'fairseq_hubert_tiny'
    wav2vec = HubertWithKmeans(checkpoint_path = assets / 'tiny_hubert.pt',
                               kmeans_path = assets / 'tiny_hubert_L2_km16.bin', output_layer = 2)
    soundstream = tiny_soundstream()
    semantic_transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, dim = 32, depth = 1,
                                               audio_text_condition = True)
    coarse_transformer = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = 16,
                                           num_coarse_quantizers = 2, dim = 32, depth = 1, audio_text_condition = True)
    fine_transformer = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16,
                                       dim = 32, depth = 1, audio_text_condition = True)
    audio_lm = AudioLM(wav2vec = wav2vec, codec = soundstream, semantic_transformer = semantic_transformer,
                       coarse_transformer = coarse_transformer, fine_transformer = fine_transformer)

    mulan_embed_quantizer = quantizer
    musiclm = MusicLM(audio_lm = audio_lm, mulan_embed_quantizer = mulan_embed_quantizer)
    music = musiclm(['the crystalline sounds of the piano in a ballroom'], max_length = 4)
    assert isinstance(music, torch.Tensor) and music.shape[0] == 1 and music.shape[-1] > 0


def test_soundstorm_readme_training_on_raw_audio():
    """Seed 001's second block: SoundStorm with a SoundStream, trained on raw audio, generating seconds."""
    from audiolm_pytorch import ConformerWrapper, SoundStorm

    conformer = ConformerWrapper(codebook_size = 16, num_quantizers = 4, conformer = dict(dim = 32, depth = 1))
    soundstream = tiny_soundstream(attn_window_size = 8)
    model = SoundStorm(conformer, soundstream = soundstream)
    audio = torch.randn(2, 1008)
    loss, _ = model(audio)
    loss.backward()
    assert torch.isfinite(loss)
    generated_audio = model.generate(seconds = 0.01, batch_size = 2)
    assert generated_audio.shape[0] == 2
    assert generated_audio.shape[-1] == 160            # 0.01 s at 16 kHz: 160 samples (40 frames of 4)


@pytest.fixture(scope = 'module')
def audio_folder(tmp_path_factory):
    import shutil
    from pathlib import Path
    folder = tmp_path_factory.mktemp('audio')
    for path in (Path(__file__).resolve().parents[2] / 'audiolm_pytorch' / 'assets').glob('*_16k.wav'):
        shutil.copy(path, folder)
    return folder


def cuda_as_written(trainer):
    """``SoundStreamTrainer(...).cuda()``: on a GPU machine it returns the trainer; here it says what to do."""
    if torch.cuda.is_available():
        return trainer.cuda()
    with pytest.raises(ValueError, match = r'drop the \.cuda\(\) call'):
        trainer.cuda()
    return trainer


def test_audiolm_readme_soundstream_training_block(audio_folder, tmp_path):
    from audiolm_pytorch import SoundStream, SoundStreamTrainer

    soundstream = SoundStream(codebook_size = 64, rq_num_quantizers = 8, rq_groups = 2,
                              use_lookup_free_quantizer = True, attn_window_size = 8, attn_depth = 2,
                              channels = 8, strides = (2, 2), channel_mults = (1, 2), codebook_dim = 8,
                              target_sample_hz = 16000)
    trainer = cuda_as_written(SoundStreamTrainer(
        soundstream, folder = str(audio_folder), batch_size = 2, grad_accum_every = 2,
        data_max_length_seconds = 0.1, num_train_steps = 1, results_folder = str(tmp_path / 'results'),
        force_clear_prev_results = True))
    trainer.train()

    soundstream.eval()
    audio = torch.randn(10080)
    recons = soundstream(audio, return_recons_only = True)
    assert recons.shape == (1, 10080)                  # (1, 10080) - 1 channel


def test_audiolm_readme_stage_trainers_then_audiolm(audio_folder, tmp_path):
    """The README's SemanticTransformer / CoarseTransformer / FineTransformer trainer blocks, then 'All together
    now' (a tiny HuBERT + k-means checkpoint in place of ./hubert/, a tiny SoundStream saved and reloaded with
    init_and_load_from)."""
    from pathlib import Path

    from audiolm_pytorch import (
        AudioLM,
        CoarseTransformer,
        CoarseTransformerTrainer,
        FineTransformer,
        FineTransformerTrainer,
        HubertWithKmeans,
        SemanticTransformer,
        SemanticTransformerTrainer,
    )

    assets = Path(__file__).parents[1] / 'assets' / 'fairseq_hubert_tiny'
    from audiolm_pytorch import SoundStream
    # HuBERT's 320-sample hop: a codec with the same hop keeps AudioLM's coarse / fine lengths tiny
    SoundStream(codebook_size = 16, rq_num_quantizers = 4, channels = 8, strides = (4, 4, 4, 5),
                channel_mults = (1, 1, 2, 2), codebook_dim = 8, attn_depth = 0,
                target_sample_hz = 16000).save(tmp_path / 'soundstream.pt')
    results = dict(results_folder = str(tmp_path / 'results'), force_clear_prev_results = True)

    wav2vec = HubertWithKmeans(checkpoint_path = str(assets / 'tiny_hubert.pt'),
                               kmeans_path = str(assets / 'tiny_hubert_L2_km16.bin'), output_layer = 2)
    semantic_transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, dim = 32, depth = 1,
                                               flash_attn = True)
    SemanticTransformerTrainer(transformer = semantic_transformer, wav2vec = wav2vec, folder = str(audio_folder),
                               batch_size = 1, data_max_length = 320 * 32, num_train_steps = 1, **results).train()

    soundstream = SoundStream.init_and_load_from(tmp_path / 'soundstream.pt')
    coarse_transformer = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = 16,
                                           num_coarse_quantizers = 2, dim = 32, depth = 1, flash_attn = True)
    CoarseTransformerTrainer(transformer = coarse_transformer, codec = soundstream, wav2vec = wav2vec,
                             folder = str(audio_folder), batch_size = 1, data_max_length = 320 * 32,
                             num_train_steps = 1, **results).train()

    fine_transformer = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16,
                                       dim = 32, depth = 1, flash_attn = True)
    FineTransformerTrainer(transformer = fine_transformer, codec = soundstream, folder = str(audio_folder),
                           batch_size = 1, data_max_length = 320 * 32, num_train_steps = 1, **results).train()

    audiolm = AudioLM(wav2vec = wav2vec, codec = soundstream, semantic_transformer = semantic_transformer,
                      coarse_transformer = coarse_transformer, fine_transformer = fine_transformer)
    generated_wav = audiolm(batch_size = 1, max_length = 8)
    generated_wav_with_prime = audiolm(prime_wave = torch.randn(1, 320 * 8), max_length = 16)
    for wave in (generated_wav, generated_wav_with_prime):
        assert torch.is_tensor(wave) and wave.shape[0] == 1 and wave.shape[-1] > 0
