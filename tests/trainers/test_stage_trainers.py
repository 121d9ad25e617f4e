"""Semantic / coarse / fine trainers on real clips, and the established notebook flow end to end."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.helpers import ASSETS, TINY_LM, sixteen_k_folder, spectral_tokenizer, stages, tiny_soundstream


def test_three_trainers_train_save_and_load(tmp_path):
    from audiolm_pytorch import (
        CoarseTransformer,
        CoarseTransformerTrainer,
        FineTransformer,
        FineTransformerTrainer,
        SemanticTransformer,
        SemanticTransformerTrainer,
    )
    torch.manual_seed(0)
    codec, wav2vec = tiny_soundstream().eval(), spectral_tokenizer()
    semantic, coarse, fine = stages(wav2vec)
    results = tmp_path / 'results'
    common = dict(folder = sixteen_k_folder(tmp_path), batch_size = 2, data_max_length = 3200, num_train_steps = 3,
                  save_model_every = 2, save_results_every = 2, results_folder = results, progress_bar = False)
    runs = [(SemanticTransformerTrainer(semantic, wav2vec, **common), SemanticTransformer, 'semantic', []),
            (CoarseTransformerTrainer(coarse, codec, wav2vec, **common), CoarseTransformer, 'coarse', ['coarse_generated']),
            (FineTransformerTrainer(fine, codec, **common), FineTransformer, 'fine', ['fine_generated'])]
    for trainer, cls, name, sample_names in runs:
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items()), f'{name} did not train'
        assert trainer.train_wrapper.training, 'validation must not leave the wrapper in eval mode'
        assert sorted(p.name for p in results.glob(f'{name}.transformer.*.pt')) == \
            [f'{name}.transformer.0.pt', f'{name}.transformer.2.pt']
        for sample in sample_names:
            assert (results / 'samples' / f'{name}.transformer.2.{sample}.wav').is_file()
        loaded = cls.init_and_load_from(results / f'{name}.transformer.2.pt')
        assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in loaded.state_dict().items())
        trainer.model.load(results / f'{name}.transformer.2.pt')

    ids = runs[0][0].generate(max_length = 5, batch_size = 2)
    assert ids.shape[0] == 2 and ids.shape[1] <= 5


def test_text_audio_dataset_any_order_routes_text(tmp_path):
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerTrainer
    from audiolm_pytorch.audio import load_audio

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, text_first):
            self.waves = [load_audio(p, 16000, max_length = 3200).wave[0] for p in sorted(ASSETS.glob('*_16k.wav'))[:3]]
            self.text_first = text_first

        def __len__(self):
            return len(self.waves)

        def __getitem__(self, i):
            return (f'clip {i}', self.waves[i]) if self.text_first else (self.waves[i], f'clip {i}')

    wav2vec = spectral_tokenizer()
    for text_first in (True, False):
        transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, has_condition = True, cond_dim = 8, **TINY_LM)
        seen = []
        trainer = SemanticTransformerTrainer(transformer, wav2vec, dataset = Pairs(text_first), batch_size = 1,
                                             num_train_steps = 1, results_folder = tmp_path / 'r', progress_bar = False)
        wrapper_forward = trainer.train_wrapper.forward

        def spy(**kwargs):
            seen.append(kwargs.get('text'))
            return wrapper_forward(**{**kwargs, 'text': None, 'text_embeds': torch.randn(1, 2, 8)})

        trainer.train_wrapper.forward = spy
        trainer.train_step()
        assert seen and isinstance(seen[0], list) and seen[0][0].startswith('clip ')


def test_established_notebook_flow(tmp_path, monkeypatch):
    """44.1 kHz wavs in nested folders -> SoundStream 9 steps -> load soundstream.8.pt -> three trainers -> AudioLM."""
    from audiolm_pytorch import AudioLM, CoarseTransformerTrainer, FineTransformerTrainer, SemanticTransformerTrainer, SoundStreamTrainer
    from audiolm_pytorch.audio import load_audio, save_audio

    data = tmp_path / 'placeholder_dataset'
    for i, sub in enumerate(['a', 'a/b', 'c']):  # a 3-file folder, nested, at 44.1 kHz
        wave = load_audio(sorted(ASSETS.glob('*_16k.wav'))[i], 44100, max_length = 44100 // 4).wave
        save_audio(data / sub / f'clip_{i}.wav', wave, 44100)
    monkeypatch.chdir(tmp_path)  # the notebook writes to ./results

    torch.manual_seed(0)
    soundstream = tiny_soundstream()
    trainer = SoundStreamTrainer(soundstream, folder = str(data), batch_size = 1, grad_accum_every = 1,
                                 data_max_length = 1600, save_results_every = 2, save_model_every = 4,
                                 num_train_steps = 9, progress_bar = False)
    trainer.train()
    assert sorted(p.name for p in Path('results').glob('soundstream.*.pt')) == \
        ['soundstream.0.pt', 'soundstream.4.pt', 'soundstream.8.pt']
    assert len(list(Path('results/samples').glob('soundstream.*.recon.wav'))) == 5  # steps 0, 2, 4, 6, 8
    soundstream.load('results/soundstream.8.pt')

    wav2vec = spectral_tokenizer()
    semantic, coarse, fine = stages(wav2vec)
    common = dict(folder = str(data), batch_size = 1, data_max_length = 3200, num_train_steps = 2,
                  save_results_every = 1000, save_model_every = 1000, progress_bar = False)
    SemanticTransformerTrainer(semantic, wav2vec, **common).train()
    CoarseTransformerTrainer(coarse, soundstream, wav2vec, **common).train()
    FineTransformerTrainer(fine, soundstream, **common).train()
    assert Path('results/semantic.transformer.0.pt').is_file() and Path('results/fine.transformer.0.pt').is_file()

    audiolm = AudioLM(wav2vec = wav2vec, codec = soundstream, semantic_transformer = semantic,
                      coarse_transformer = coarse, fine_transformer = fine)
    generated = audiolm(batch_size = 1, max_length = 8)
    waves = generated if isinstance(generated, list) else list(generated)
    assert len(waves) == 1 and waves[0].numel() > 0 and torch.isfinite(waves[0]).all()


def _short_and_long_folder(tmp_path):
    """One 0.3 s clip (shorter than the crop: zero-padded) and one 2.5 s clip (cropped)."""
    from audiolm_pytorch.audio import load_audio, save_audio
    folder = tmp_path / 'audio'
    save_audio(folder / 'short.wav', load_audio(ASSETS / 'speech_0_16k.wav', 16000, max_length = 4800).wave, 16000)
    save_audio(folder / 'long.wav', load_audio(ASSETS / 'music_0_16k.wav', 16000).wave, 16000)
    return folder


def test_stage_trainers_pass_file_end_and_pad_past_real_samples(tmp_path):
    # a clip shorter than the crop is zero-padded: its frames past the real audio become -1 (never a target) and
    # its file_end is True (EOS after its last real frame); a crop of a longer file has file_end False
    from audiolm_pytorch import CoarseTransformerTrainer, FineTransformerTrainer, SemanticTransformerTrainer
    torch.manual_seed(0)
    codec, wav2vec = tiny_soundstream().eval(), spectral_tokenizer()
    semantic, coarse, fine = stages(wav2vec)
    common = dict(folder = _short_and_long_folder(tmp_path), batch_size = 2, data_max_length = 16000, valid_frac = 0.,
                  num_train_steps = 1, progress_bar = False)
    trainers = dict(semantic = SemanticTransformerTrainer(semantic, wav2vec, results_folder = tmp_path / 's', **common),
                    coarse = CoarseTransformerTrainer(coarse, codec, wav2vec, results_folder = tmp_path / 'c', **common),
                    fine = FineTransformerTrainer(fine, codec, results_folder = tmp_path / 'f', **common))
    short_frames = dict(semantic = 4800 // wav2vec.downsample_factor, codec = 4800 // codec.downsample_factor)
    for name, trainer in trainers.items():
        batch = trainer.next_batch()
        inputs = trainer.wrapper_inputs(batch)
        short = int(inputs['raw_wave'].abs().sum(dim = -1).argmin())      # the zero-padded row
        assert inputs['file_end'].tolist() == [i == short for i in range(2)], name
        checks = dict(semantic = [('semantic_token_ids', 'semantic')],
                      coarse = [('semantic_token_ids', 'semantic'), ('coarse_token_ids', 'codec')],
                      fine = [('token_ids', 'codec')])[name]
        for key, rate in checks:
            ids = inputs[key]
            real = (ids != -1).reshape(2, ids.shape[1], -1).all(dim = -1)
            assert real[short].sum() == short_frames[rate] and real[short, :short_frames[rate]].all(), (name, key)
            assert real[1 - short].all(), (name, key)
        loss = trainer.train_wrapper(**inputs, return_loss = True)
        assert torch.isfinite(loss)
        trainer.train_step()


# ---- frozen tokenizers, EMA samples, two-rate items, exact resume --------------------------------------------------

def _coarse(wav2vec, **kwargs):
    from audiolm_pytorch import CoarseTransformer
    return CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = 32, num_coarse_quantizers = 2,
                             **TINY_LM, **kwargs)


def _fine(**kwargs):
    from audiolm_pytorch import FineTransformer
    return FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 32, **TINY_LM, **kwargs)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_codec_and_tokenizer_untouched_and_not_checkpointed(tmp_path):
    """An untrained codec left in train mode (k-means not yet initialised, EMA codebooks): a few coarse / fine
    steps with validation must not change a single codec / tokenizer tensor, nor put them in checkpoints."""
    from audiolm_pytorch import CoarseTransformerTrainer, FineTransformerTrainer
    from audiolm_pytorch.checkpoint import read_checkpoint
    torch.manual_seed(0)
    codec, wav2vec = tiny_soundstream(), spectral_tokenizer()   # deliberately NOT .eval()
    codec_before, wav2vec_before = _snapshot(codec), _snapshot(wav2vec)
    common = dict(folder = sixteen_k_folder(tmp_path), batch_size = 2, data_max_length = 1600, num_train_steps = 2,
                  save_model_every = 1, save_results_every = 2, progress_bar = False, sample_max_time_steps = 4)
    for name, trainer in (('coarse', CoarseTransformerTrainer(_coarse(wav2vec), codec, wav2vec, use_ema = True,
                                                              results_folder = tmp_path / 'c', **common)),
                          ('fine', FineTransformerTrainer(_fine(), codec, use_ema = True,
                                                          results_folder = tmp_path / 'f', **common))):
        trainer.train()
        assert _same(_snapshot(codec), codec_before), f'{name} training changed the frozen codec'
        assert _same(_snapshot(wav2vec), wav2vec_before), f'{name} training changed the semantic tokenizer'
        assert all(p.grad is None for p in codec.parameters()), 'gradients reached the frozen codec'
        folder = tmp_path / name[0]
        pkg = read_checkpoint(folder / f'{name}.transformer.1.pt')
        assert set(pkg['model']) == set(trainer.transformer.state_dict()), 'stage checkpoints hold the transformer only'
        assert set(pkg['ema_model']) == set(pkg['model'])


def test_coarse_and_fine_samples_are_generated_with_the_ema_transformer(tmp_path):
    from audiolm_pytorch import CoarseTransformerTrainer, FineTransformerTrainer
    from audiolm_pytorch.lm.coarse import CoarseTransformerWrapper
    from audiolm_pytorch.lm.fine import FineTransformerWrapper
    torch.manual_seed(0)
    codec, wav2vec = tiny_soundstream().eval(), spectral_tokenizer()
    common = dict(folder = sixteen_k_folder(tmp_path), batch_size = 2, data_max_length = 1600, num_train_steps = 1,
                  save_model_every = 10, save_results_every = 1, progress_bar = False, use_ema = True,
                  sample_max_time_steps = 4)
    for cls, wrapper_cls, trainer in (
            ('coarse', CoarseTransformerWrapper,
             CoarseTransformerTrainer(_coarse(wav2vec), codec, wav2vec, results_folder = tmp_path / 'c', **common)),
            ('fine', FineTransformerWrapper, FineTransformerTrainer(_fine(), codec, results_folder = tmp_path / 'f', **common))):
        used = []
        original = wrapper_cls.generate

        def spy(self, *args, **kwargs):
            used.append(self.transformer)
            return original(self, *args, **kwargs)

        wrapper_cls.generate = spy
        try:
            trainer.train()
        finally:
            wrapper_cls.generate = original
        assert used and all(t is trainer.ema_model for t in used), f'{cls} samples must come from the EMA transformer'
        assert trainer.train_wrapper.transformer is trainer.transformer, 'the online transformer must be restored'
        samples = sorted((trainer.results_folder / 'samples').glob('*.wav'))
        assert samples
        for path in samples:
            assert sf.info(str(path)).samplerate == codec.target_sample_hz


def _click_file(path, file_hz, seconds, click_at):
    wave = np.zeros(int(file_hz * seconds), dtype = np.float32)
    wave[int(click_at * file_hz)] = 0.9
    sf.write(str(path), wave, file_hz)


def test_two_rate_items_cover_the_same_segment_and_frames_line_up(tmp_path):
    """A 48 kHz file with one click: the coarse trainer's dataset gives the click at the same time at 16 kHz
    (semantic) and 24 kHz (codec), and the two waves last as long as one another (to a frame)."""
    from audiolm_pytorch import CoarseTransformerTrainer
    torch.manual_seed(0)
    folder = tmp_path / 'audio'
    folder.mkdir()
    for i in range(3):
        _click_file(folder / f'{i}.wav', 48000, 1.0, 0.3 + 0.1 * i)
    codec, wav2vec = tiny_soundstream(target_sample_hz = 24000).eval(), spectral_tokenizer()
    trainer = CoarseTransformerTrainer(_coarse(wav2vec), codec, wav2vec, folder = folder, batch_size = 1,
                                       data_max_length_seconds = 0.5, num_train_steps = 1, valid_frac = 0.,
                                       results_folder = tmp_path / 'r', progress_bar = False)
    ds = trainer.train_ds
    for _ in range(6):
        semantic_wave, codec_wave, num_samples, _ = ds[0]     # + real samples per rate and the file-end flag
        assert num_samples.tolist() == [semantic_wave.shape[-1], codec_wave.shape[-1]]   # 1 s files: no padding
        assert semantic_wave.shape[-1] / 16000 == pytest.approx(0.5, abs = 1 / 50)
        assert codec_wave.shape[-1] / 24000 == pytest.approx(0.5, abs = 1 / 50)
        # same duration to within one frame of each tokenizer
        assert abs(semantic_wave.shape[-1] / 16000 - codec_wave.shape[-1] / 24000) <= 320 / 16000 + 8 / 24000
        if semantic_wave.abs().max() > 0.3:
            t_sem = semantic_wave.abs().argmax().item() / 16000
            t_codec = codec_wave.abs().argmax().item() / 24000
            assert t_sem == pytest.approx(t_codec, abs = 2e-4), 'the two rates must be the same time segment'
    batch = trainer.next_batch()
    assert [w.shape[-1] for w in batch.waves[:2]] == [semantic_wave.shape[-1], codec_wave.shape[-1]]
    assert batch.waves[0].shape[-1] % 320 == 0 and batch.waves[1].shape[-1] % codec.seq_len_multiple_of == 0
    semantic_frames = wav2vec(batch.waves[0]).shape[-1]
    codec_frames = codec.tokenize(batch.waves[1]).shape[1]
    assert semantic_frames / 50 == pytest.approx(codec_frames / (24000 / codec.downsample_factor), abs = 1 / 50)


@pytest.mark.parametrize('stage', ['semantic', 'coarse', 'fine'])
def test_resumed_stage_trainer_continues_with_identical_loss(tmp_path, stage):
    from audiolm_pytorch import CoarseTransformerTrainer, FineTransformerTrainer, SemanticTransformer, SemanticTransformerTrainer
    codec, wav2vec = tiny_soundstream().eval(), spectral_tokenizer()
    folder = sixteen_k_folder(tmp_path)

    def build(results):
        torch.manual_seed(0)
        common = dict(folder = folder, batch_size = 2, data_max_length = 1600, num_train_steps = 3,
                      save_model_every = 1, save_results_every = 1, progress_bar = False, results_folder = results,
                      use_ema = True, ema_update_after_step = 0, ema_update_every = 1, force_clear_prev_results = True)
        if stage == 'semantic':
            return SemanticTransformerTrainer(SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **TINY_LM),
                                              wav2vec, **common)
        if stage == 'coarse':
            return CoarseTransformerTrainer(_coarse(wav2vec), codec, wav2vec, **common)
        return FineTransformerTrainer(_fine(), codec, **common)

    a = build(tmp_path / 'a')
    losses = [a.train_step()['loss'] for _ in range(3)]
    b = build(tmp_path / 'b')
    b.load(tmp_path / 'a' / f'{stage}.transformer.1.pt')
    assert b.steps == 2
    assert b.train_step()['loss'] == losses[2]
    assert _same(_snapshot(b.transformer), _snapshot(a.transformer))
    assert _same(_snapshot(b.ema_model), _snapshot(a.ema_model))


def test_fine_samples_condition_on_the_coarse_levels_of_every_group(tmp_path):
    """Codes are group-major ``(g q)``: with rq_groups=2 the fine sample's coarse prompt must hold levels
    [0, Qc) of both groups, not the first Qc slots of the flat code."""
    from audiolm_pytorch import FineTransformerTrainer
    from audiolm_pytorch.lm.fine import FineTransformerWrapper
    torch.manual_seed(0)
    codec = tiny_soundstream(rq_groups = 2).eval()
    trainer = FineTransformerTrainer(_fine(rq_groups = 2), codec, folder = sixteen_k_folder(tmp_path), batch_size = 1,
                                     data_max_length = 800, num_train_steps = 1, sample_max_time_steps = 4,
                                     results_folder = tmp_path / 'r', progress_bar = False)
    seen = []
    original = FineTransformerWrapper.generate

    def spy(self, *, coarse_token_ids, **kwargs):
        seen.append(coarse_token_ids)
        return original(self, coarse_token_ids = coarse_token_ids, **kwargs)

    FineTransformerWrapper.generate = spy
    try:
        batch = trainer.next_batch(train = False)
        trainer.make_samples(batch)
    finally:
        FineTransformerWrapper.generate = original
    wave = batch.waves[0][:1, :4 * codec.downsample_factor]
    codes = codec.tokenize(wave)                                   # (1, n, g * q), group-major
    expected = torch.cat([codes[..., 0:2], codes[..., 4:6]], dim = -1)
    assert torch.equal(seen[0].long(), expected.long())
