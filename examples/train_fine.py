"""Train a tiny FineTransformer: coarse codec levels -> the remaining (fine) levels.

    python examples/train_fine.py [--steps 100] [--out examples_out]

Uses OUT/soundstream.pt (a quick stand-in is trained when it is missing). Writes OUT/fine.pt and
OUT/fine_sample.wav (a clip's coarse codes completed by the model). About a minute on two CPU cores.
"""

from pathlib import Path

import torch

from _common import NUM_COARSE, NUM_FINE, QUICK, TINY_TRANSFORMER, data_folder, first_wave, load_or_train_soundstream, parser, prompt
from audiolm_pytorch import FineTransformer, FineTransformerTrainer, save_audio

args = parser(__doc__.splitlines()[0]).parse_args()
out, data = Path(args.out), data_folder(args)
torch.manual_seed(0)

codec = load_or_train_soundstream(out, data)
fine = FineTransformer(num_coarse_quantizers = NUM_COARSE, num_fine_quantizers = NUM_FINE,
                       codebook_size = codec.codebook_size, **TINY_TRANSFORMER)
trainer = FineTransformerTrainer(fine, codec, folder = data, batch_size = 4, data_max_length_seconds = 2.,
                                 num_train_steps = args.steps or 100, lr = 1e-3,
                                 results_folder = out / 'results' / 'fine', **QUICK)
trainer.train()
fine.save(out / 'fine.pt')

codes = codec.tokenize(prompt(codec.target_sample_hz))                 # (1, frames, 4)
wave = trainer.generate(coarse_token_ids = codes[..., :NUM_COARSE], reconstruct_wave = True)
save_audio(out / 'fine_sample.wav', first_wave(wave), codec.target_sample_hz)
print(f'saved {out / "fine.pt"} and {out / "fine_sample.wav"}')
