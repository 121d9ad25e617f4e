"""Fit a spectral k-means semantic tokenizer and train a tiny SemanticTransformer on the shipped clips.

    python examples/train_semantic.py [--steps 150] [--out examples_out]

Writes OUT/tokenizer.pt and OUT/semantic.pt. About a minute on two CPU cores.
"""

from pathlib import Path

import torch

from _common import TINY_TRANSFORMER, QUICK, data_folder, load_or_fit_tokenizer, parser, prompt
from audiolm_pytorch import SemanticTransformer, SemanticTransformerTrainer

args = parser(__doc__.splitlines()[0]).parse_args()
out, data = Path(args.out), data_folder(args)
torch.manual_seed(0)

wav2vec = load_or_fit_tokenizer(out, data)                  # SpectralKmeansTokenizer: 50 tokens per second
semantic = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **TINY_TRANSFORMER)
trainer = SemanticTransformerTrainer(semantic, wav2vec, folder = data, batch_size = 4, data_max_length_seconds = 2.,
                                     num_train_steps = args.steps or 150, lr = 1e-3,
                                     results_folder = out / 'results' / 'semantic', **QUICK)
trainer.train()
semantic.save(out / 'semantic.pt')

# continue the semantic tokens of a prompt
ids = trainer.generate(max_length = 64, prime_wave = prompt(wav2vec.target_sample_hz))
print(f'saved {out / "semantic.pt"}; generated semantic ids {tuple(ids.shape)}: {ids[0, :20].tolist()} ...')
