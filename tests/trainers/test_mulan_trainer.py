"""MuLaNTrainer: what reaches the model from the data."""
import torch


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
