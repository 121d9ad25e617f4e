"""EnCodec (through transformers) as the acoustic codec, from a local directory (nothing is downloaded).

    python examples/encodec_local.py --encodec encodec_24khz/ [--bandwidth 6]
    python examples/encodec_local.py        # offline smoke run: a tiny random EnCodec in a temp folder

--encodec: a directory holding a transformers EncodecModel (save_pretrained output; e.g. downloaded once with
`huggingface-cli download facebook/encodec_24khz --local-dir encodec_24khz`). The example reconstructs a shipped
clip through the codec, then trains a FineTransformer on its codes for a few steps (EnCodec plugs in wherever a
SoundStream does: coarse / fine trainers, AudioLM, `audiolm tokenize --codec DIR`).
"""

from pathlib import Path

from _common import ASSETS, QUICK, TINY_TRANSFORMER, first_wave, model_dir_or_tiny, parse_local_model_args, parser
from audiolm_pytorch import EncodecWrapper, FineTransformer, FineTransformerTrainer, load_audio, save_audio

p = parser(__doc__.splitlines()[0])
p.add_argument('--encodec', default = None, help = 'transformers EnCodec directory (default: a tiny random model)')
p.add_argument('--bandwidth', type = float, default = None, help = 'kbps (default: 6 for real models, 3 for the tiny one)')
args, out, data = parse_local_model_args(p, steps = 20)


def tiny_random_encodec(folder: Path) -> Path:
    """A small EnCodec with random weights at 16 kHz, 320 samples per frame; 3 kbps = 6 codebooks of 1024."""
    from transformers import EncodecConfig, EncodecModel
    config = EncodecConfig(sampling_rate = 16000, target_bandwidths = [1.5, 3.0], upsampling_ratios = [8, 5, 4, 2],
                           hidden_size = 16, num_filters = 4, num_residual_layers = 1, codebook_dim = 16,
                           num_lstm_layers = 1, audio_channels = 1, normalize = False, chunk_length_s = None,
                           overlap = None)
    EncodecModel(config).save_pretrained(folder)
    return folder


folder = model_dir_or_tiny(args.encodec, tiny_random_encodec, flag = 'encodec', what = 'EnCodec',
                           caveat = 'audio will be noise')
codec = EncodecWrapper(pretrained_path = folder, bandwidth = args.bandwidth or (6. if args.encodec else 3.))
print(f'EnCodec: {codec.target_sample_hz} Hz, {codec.downsample_factor} samples per frame, '
      f'{codec.num_quantizers} codebooks of {codec.codebook_size}')

wave = load_audio(ASSETS / 'music_0_16k.wav', target_sample_hz = codec.target_sample_hz).wave     # (1, n)
codes = codec.tokenize(wave)                                                # (1, frames, num_quantizers)
recon = codec.decode_from_codebook_indices(codes)                           # (1, 1, frames * hop)
save_audio(out / 'encodec_reconstruction.wav', recon[0], codec.target_sample_hz)
print(f'codes {tuple(codes.shape)} -> {out / "encodec_reconstruction.wav"}')

num_coarse = min(3, codec.num_quantizers - 1)
fine = FineTransformer(num_coarse_quantizers = num_coarse, num_fine_quantizers = codec.num_quantizers - num_coarse,
                       codebook_size = codec.codebook_size, **TINY_TRANSFORMER)
trainer = FineTransformerTrainer(fine, codec, folder = data, batch_size = 2, data_max_length_seconds = 1.,
                                 num_train_steps = args.steps, lr = 1e-3, results_folder = out / 'results' / 'fine_encodec',
                                 **QUICK)
trainer.train()
generated = trainer.generate(coarse_token_ids = codes[:, :25, :num_coarse], reconstruct_wave = True)
save_audio(out / 'encodec_fine_sample.wav', first_wave(generated), codec.target_sample_hz)
print(f'fine loss {trainer.loss_history["loss"][0][1]:.3f} -> {trainer.loss_history["loss"][-1][1]:.3f}; '
      f'wrote {out / "encodec_fine_sample.wav"}')
