"""The usage in the seed documents (shared/seeds/000, 001), run as written at their full sizes (on CPU: the
seeds' ``.cuda()`` calls are the only change)."""

import torch


def test_seed_000_fine_transformer_on_soundstream_as_written():
    from audiolm_pytorch.audiolm_pytorch import SoundStream, AudioLM, FineTransformer, FineTransformerWrapper  # noqa: F401

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
