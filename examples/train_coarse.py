"""Train a tiny CoarseTransformer: semantic ids -> the first codec levels.

    python examples/train_coarse.py [--steps 100] [--out examples_out]

Uses OUT/soundstream.pt and OUT/tokenizer.pt from the previous examples (quick stand-ins are made when they are
missing). Writes OUT/coarse.pt and OUT/coarse_sample.wav. About a minute on two CPU cores.
"""

from pathlib import Path

import torch

from _common import (NUM_COARSE, QUICK, TINY_TRANSFORMER, data_folder, first_wave, load_or_fit_tokenizer,
                     load_or_train_soundstream, parser, prompt)
from audiolm_pytorch import CoarseTransformer, CoarseTransformerTrainer, save_audio

args = parser(__doc__.splitlines()[0]).parse_args()
out, data = Path(args.out), data_folder(args)
torch.manual_seed(0)

codec = load_or_train_soundstream(out, data)
wav2vec = load_or_fit_tokenizer(out, data)
coarse = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size, codebook_size = codec.codebook_size,
                           num_coarse_quantizers = NUM_COARSE, **TINY_TRANSFORMER)
trainer = CoarseTransformerTrainer(coarse, codec, wav2vec, folder = data, batch_size = 4, data_max_length_seconds = 2.,
                                   num_train_steps = args.steps or 100, lr = 1e-3,
                                   results_folder = out / 'results' / 'coarse', **QUICK)
trainer.train()
coarse.save(out / 'coarse.pt')

# coarse codes for the semantic ids of a clip, decoded with the codec (coarse levels only)
semantic_ids = wav2vec(prompt(wav2vec.target_sample_hz))
wave = trainer.generate(semantic_token_ids = semantic_ids, max_time_steps = 50, reconstruct_wave = True)
save_audio(out / 'coarse_sample.wav', first_wave(wave), codec.target_sample_hz)
print(f'saved {out / "coarse.pt"} and {out / "coarse_sample.wav"}')
