"""AudioLM end to end: codec, semantic tokenizer and the three transformers, then generation.

    python examples/end_to_end.py [--out examples_out] [--steps N]

Reuses the checkpoints the per-stage examples wrote to OUT (soundstream.pt, tokenizer.pt, semantic.pt, coarse.pt,
fine.pt) and trains quick stand-ins for missing ones (N steps each, default 40). Then AudioLM continues a prompt
and samples unconditionally: OUT/continuation.wav and OUT/unconditional.wav. A few minutes on two CPU cores.
`audiolm demo` runs the same flow within a time budget and also plots spectrograms and loss curves.
"""

from pathlib import Path

import torch

from _common import (NUM_COARSE, NUM_FINE, QUICK, TINY_TRANSFORMER, data_folder, first_wave, load_or_fit_tokenizer,
                     load_or_train_soundstream, parser, prompt)
from audiolm_pytorch import (AudioLM, CoarseTransformer, CoarseTransformerTrainer, FineTransformer,
                             FineTransformerTrainer, SemanticTransformer, SemanticTransformerTrainer, save_audio)

args = parser(__doc__.splitlines()[0]).parse_args()
out, data = Path(args.out), data_folder(args)
steps = args.steps or 40
torch.manual_seed(0)

codec = load_or_train_soundstream(out, data, steps = steps)
wav2vec = load_or_fit_tokenizer(out, data)
common = dict(folder = data, batch_size = 4, data_max_length_seconds = 2., num_train_steps = steps, lr = 1e-3, **QUICK)


def load_or_train(name, cls, kwargs, make_trainer):
    path = out / f'{name}.pt'
    if path.exists():
        return cls.init_and_load_from(path)
    model = cls(**kwargs, **TINY_TRANSFORMER)
    make_trainer(model).train()
    model.save(path)
    return model


semantic = load_or_train('semantic', SemanticTransformer, dict(num_semantic_tokens = wav2vec.codebook_size),
                         lambda m: SemanticTransformerTrainer(m, wav2vec, results_folder = out / 'results' / 'semantic', **common))
coarse = load_or_train('coarse', CoarseTransformer,
                       dict(num_semantic_tokens = wav2vec.codebook_size, codebook_size = codec.codebook_size,
                            num_coarse_quantizers = NUM_COARSE),
                       lambda m: CoarseTransformerTrainer(m, codec, wav2vec, results_folder = out / 'results' / 'coarse', **common))
fine = load_or_train('fine', FineTransformer,
                     dict(num_coarse_quantizers = NUM_COARSE, num_fine_quantizers = NUM_FINE, codebook_size = codec.codebook_size),
                     lambda m: FineTransformerTrainer(m, codec, results_folder = out / 'results' / 'fine', **common))

audiolm = AudioLM(wav2vec = wav2vec, codec = codec, semantic_transformer = semantic, coarse_transformer = coarse,
                  fine_transformer = fine).eval()
rate = codec.target_sample_hz
with torch.no_grad():
    continuation = audiolm(prime_wave = prompt(rate), prime_wave_input_sample_hz = rate, max_length = 150,
                           max_coarse_time_steps = 150)          # 1 s prompt + up to 2 s new (50 frames / s)
    unconditional = audiolm(batch_size = 1, max_length = 100, max_coarse_time_steps = 100)
for name, wave in (('continuation', continuation), ('unconditional', unconditional)):
    wave = first_wave(wave)
    save_audio(out / f'{name}.wav', wave, rate)
    print(f'{out / f"{name}.wav"}: {wave.numel() / rate:.2f} s')
