"""Train a tiny SoundStream codec on the shipped clips, then reconstruct a clip through it.

    python examples/train_soundstream.py [--steps 200] [--out examples_out] [--data WAVS/]

Writes OUT/soundstream.pt (used by the other examples) and OUT/soundstream_reconstruction.wav. About 2-4 minutes
for 200 steps on two CPU cores; the codec is far from converged (SoundStream needs ~100k steps on a GPU).
"""

from pathlib import Path

import torch

from _common import ASSETS, data_folder, parser, train_soundstream
from audiolm_pytorch import load_audio, save_audio

args = parser(__doc__.splitlines()[0]).parse_args()
out, data = Path(args.out), data_folder(args)
torch.manual_seed(0)

soundstream = train_soundstream(out, data, steps = args.steps or 200)
print(f'saved {out / "soundstream.pt"}: {soundstream.num_quantizers} quantizers x {soundstream.codebook_size} codes, '
      f'{soundstream.downsample_factor} samples per frame at {soundstream.target_sample_hz} Hz')

wave = load_audio(ASSETS / 'speech_1_16k.wav', target_sample_hz = soundstream.target_sample_hz).wave   # (1, n)
with torch.no_grad():
    codes = soundstream.tokenize(wave)                                  # (1, frames, quantizers)
    recon = soundstream.decode_from_codebook_indices(codes)             # (1, 1, frames * hop)
save_audio(out / 'soundstream_reconstruction.wav', recon[0], soundstream.target_sample_hz)
print(f'codes {tuple(codes.shape)} -> {out / "soundstream_reconstruction.wav"}')
