"""Semantic / coarse / fine trainers on real clips, and the established notebook flow end to end."""

from pathlib import Path

import torch

from test_trainer_soundstream import ASSETS, sixteen_k_folder, tiny_soundstream

TINY = dict(dim = 32, depth = 1, heads = 2, dim_head = 16)


def spectral_tokenizer():
    from audiolm_pytorch import SpectralKmeansTokenizer
    tokenizer = SpectralKmeansTokenizer(codebook_size = 16, target_sample_hz = 16000)
    tokenizer.fit(sorted(ASSETS.glob('*_16k.wav'))[:3], epochs = 2)
    return tokenizer


def stages(wav2vec, codebook_size = 32):
    from audiolm_pytorch import CoarseTransformer, FineTransformer, SemanticTransformer
    semantic = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **TINY)
    coarse = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = codebook_size,
                               num_coarse_quantizers = 2, **TINY)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = codebook_size, **TINY)
    return semantic, coarse, fine


def test_three_trainers_train_save_and_load(tmp_path):
    from audiolm_pytorch import (CoarseTransformer, CoarseTransformerTrainer, FineTransformer, FineTransformerTrainer,
                                 SemanticTransformer, SemanticTransformerTrainer)
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
        transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, has_condition = True, cond_dim = 8, **TINY)
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
    from audiolm_pytorch import (AudioLM, CoarseTransformerTrainer, FineTransformerTrainer, SemanticTransformerTrainer,
                                 SoundStreamTrainer)
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
