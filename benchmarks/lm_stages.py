"""AudioLM stages: training throughput from token shards vs raw audio, and held-out cross-entropy vs the reference.

    python benchmarks/lm_stages.py [--part throughput|ce|both|kv_heads] [--threads N] [--ce-steps S] [--work DIR]

Corpus: the 16 kHz clips in tests/assets plus sentences spoken by espeak-ng (made on the fly), a few held out.

throughput: per stage (semantic, coarse, fine), ``train_step()`` of the library's trainers on 2 s crops, batch 4,
    the CLI's default transformer size (dim 512, depth 6; --dim / --depth), fed (a) raw audio (``folder=``) tokenized every step by a
    HuBERT-base-sized tokenizer (a randomly initialised transformers ``HubertModel`` with the base config, layer 9,
    500 k-means centroids: no download) and the default codec (``SoundStream(codebook_size=1024)``, 8 levels,
    50 Hz), and (b) the same corpus tokenized once by ``prepare_tokens`` (``tokens=``), with no tokenizer loaded.
    Prints steps/s (wall) and CPU seconds per step (``time.process_time``: robust on a shared machine).

ce: held-out cross-entropy per stage after a fixed number of steps, this library vs audiolm-pytorch 2.4.0 (run in
    its own interpreter, /work/venv-ref or $REFERENCE_VENV) on the same token batches fed as ids to both libraries'
    transformer wrappers, the same small config (dim 128, depth 2, heads 4), optimizer (AdamW 3e-4, clip 0.5) and
    seed. Tokens: a spectral k-means tokenizer (64 clusters, fitted on the training clips; a random HuBERT's ids
    carry little) and the default SoundStream whose RVQ codebooks are k-means-initialised on the training audio
    (a random codec's codebooks give a single code). Each side reports its own wrapper's loss (token-averaged CE
    over the semantic / coarse / fine targets including the EOS the wrappers append; both weight 1:1).

kv_heads: the ce setup, this library only, one shared key/value head (``attn_kv_heads=1``, default) vs one per
    query head (``attn_kv_heads=None``), ``--seeds`` seeds each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SENTENCES = [
    'the quick brown fox jumps over the lazy dog', 'a stitch in time saves nine', 'every cloud has a silver lining',
    'she sells sea shells by the sea shore', 'how much wood would a woodchuck chuck', 'the rain in spain stays mainly',
    'better late than never but never late is better', 'an apple a day keeps the doctor away',
    'actions speak louder than words', 'all that glitters is not gold', 'birds of a feather flock together',
    'the early bird catches the worm', 'fortune favours the bold and the brave', 'knowledge is power they say',
    'practice makes perfect in the long run', 'time flies when you are having fun', 'where there is smoke there is fire',
    'you can not judge a book by its cover', 'the pen is mightier than the sword', 'rome was not built in a day',
]
HELD_OUT = ('music_3_16k.wav', 'speech_5_16k.wav', 'tts_18.wav', 'tts_19.wav')
STAGES = ('semantic', 'coarse', 'fine')


def hardware() -> str:
    cpus = os.cpu_count()
    return f'{platform.processor() or platform.machine()}, {cpus} cores visible, torch {torch.__version__}, ' \
           f'{torch.get_num_threads()} threads'


def make_corpus(root: Path) -> tuple[Path, Path]:
    """``root/train`` and ``root/heldout`` folders of 16 kHz mono clips."""
    import soundfile as sf
    from audiolm_pytorch.audio import load_audio
    train, held = root / 'train', root / 'heldout'
    if train.is_dir():
        return train, held
    for folder in (train, held):
        folder.mkdir(parents = True)
    for path in sorted((REPO / 'tests' / 'assets').glob('*_16k.wav')):
        (held if path.name in HELD_OUT else train).joinpath(path.name).symlink_to(path)
    for i, text in enumerate(SENTENCES):
        raw = root / f'tts_{i}.raw.wav'
        subprocess.run(['espeak-ng', '-s', '150', '-w', str(raw), text], check = True, capture_output = True)
        wave = load_audio(raw, 16000).wave[0].numpy()
        name = f'tts_{i}.wav'
        sf.write((held if name in HELD_OUT else train) / name, wave, 16000)
        raw.unlink()
    return train, held


def hubert_base_tokenizer(root: Path):
    from transformers import HubertConfig, HubertModel
    from audiolm_pytorch.semantic.hubert_kmeans import HubertWithKmeans
    model_dir = root / 'hubert_base_random'
    if not model_dir.is_dir():
        torch.manual_seed(0)
        HubertModel(HubertConfig()).save_pretrained(model_dir)       # base: 768 wide, 12 layers, 95M parameters
        np.save(root / 'km500.npy', np.random.default_rng(0).standard_normal((500, 768)).astype(np.float32))
    return HubertWithKmeans(model_dir, root / 'km500.npy', output_layer = 9).eval()


def default_codec(train: Path, seed: int = 0):
    """``SoundStream(codebook_size=1024)`` with its RVQ codebooks k-means-initialised on the training clips."""
    from audiolm_pytorch import SoundStream
    from audiolm_pytorch.data import SoundDataset
    torch.manual_seed(seed)
    codec = SoundStream(codebook_size = 1024)
    clips = SoundDataset(train, target_sample_hz = 16000, max_length = 32000, seq_len_multiple_of = 320)
    batch = torch.stack([clips[i] for i in range(len(clips))])
    codec.train()
    with torch.no_grad():
        codec(batch, return_encoded = True)                            # the first training forward runs k-means
    return codec.eval()


def spectral_tokenizer(train: Path):
    from audiolm_pytorch import SpectralKmeansTokenizer
    torch.manual_seed(0)
    tokenizer = SpectralKmeansTokenizer(codebook_size = 64, target_sample_hz = 16000)
    tokenizer.fit(sorted(train.glob('*.wav')), epochs = 3)
    return tokenizer.eval()


def models(stage: str, *, num_semantic: int, dim: int, depth: int, heads: int = 8, lib = None, **kwargs):
    """The stage transformer of ``lib`` (this library by default; the reference module in its subprocess);
    ``kwargs`` go to its constructor."""
    if lib is None:
        import audiolm_pytorch as lib
    if stage == 'semantic':
        return lib.SemanticTransformer(num_semantic_tokens = num_semantic, dim = dim, depth = depth, heads = heads,
                                       **kwargs)
    if stage == 'coarse':
        return lib.CoarseTransformer(num_semantic_tokens = num_semantic, codebook_size = 1024, num_coarse_quantizers = 3,
                                     dim = dim, depth = depth, heads = heads, **kwargs)
    return lib.FineTransformer(num_coarse_quantizers = 3, num_fine_quantizers = 5, codebook_size = 1024, dim = dim,
                               depth = depth, heads = heads, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# throughput
# ------------------------------------------------------------------------------------------------------------

def time_steps(trainer, steps: int) -> tuple[float, float]:
    trainer.train_step()                                               # warm-up (allocations, first k-v shapes)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.train_step()
    return steps / (time.perf_counter() - wall), (time.process_time() - cpu) / steps


def throughput(work: Path, train: Path, args) -> list[dict]:
    from audiolm_pytorch import CoarseTransformerTrainer, FineTransformerTrainer, SemanticTransformerTrainer
    from audiolm_pytorch.tokens_writer import prepare_tokens
    wav2vec, codec = hubert_base_tokenizer(work), default_codec(train)
    tokens = work / 'tokens_hubert'
    start, cpu = time.perf_counter(), time.process_time()
    prepare_tokens([train], tokens, wav2vec = wav2vec, codec = codec, shard_size = 8, progress = False)
    seconds = sum(__import__('soundfile').info(str(p)).duration for p in train.glob('*.wav'))
    print(f'prepare_tokens: {seconds:.0f} s of audio in {time.perf_counter() - start:.1f} s wall, '
          f'{time.process_time() - cpu:.1f} s CPU (HuBERT-base + SoundStream)')
    rows = []
    common = dict(batch_size = 4, num_train_steps = 10 ** 6, data_max_length_seconds = 2., valid_frac = 0.,
                  progress_bar = False, force_clear_prev_results = True, save_results_every = 10 ** 6,
                  save_model_every = 10 ** 6)
    for stage in args.stages:
        cls = dict(semantic = SemanticTransformerTrainer, coarse = CoarseTransformerTrainer, fine = FineTransformerTrainer)[stage]
        tokenizers = dict(semantic = dict(wav2vec = wav2vec), coarse = dict(wav2vec = wav2vec, codec = codec),
                          fine = dict(codec = codec))[stage]
        result = dict(stage = stage)
        for source in ('audio', 'tokens'):
            torch.manual_seed(0)
            model = models(stage, num_semantic = 500, dim = args.dim, depth = args.depth)
            data = dict(folder = train, **tokenizers) if source == 'audio' else dict(tokens = tokens)
            trainer = cls(model, results_folder = work / f'results_{stage}_{source}', **data, **common)
            steps = args.audio_steps if source == 'audio' else args.token_steps
            result[f'{source}_steps_per_s'], result[f'{source}_cpu_s_per_step'] = time_steps(trainer, steps)
            del trainer
        result['speedup_wall'] = result['tokens_steps_per_s'] / result['audio_steps_per_s']
        result['speedup_cpu'] = result['audio_cpu_s_per_step'] / result['tokens_cpu_s_per_step']
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}), flush = True)
        rows.append(result)
    return rows


# ------------------------------------------------------------------------------------------------------------
# held-out cross-entropy, ours vs the reference on the same batches
# ------------------------------------------------------------------------------------------------------------

def token_batches(work: Path, train: Path, held: Path, args) -> Path:
    """Training batches (seeded 1.5 s crops) and held-out batches (each held-out clip's first 1.5 s) per stage."""
    from audiolm_pytorch.data import collate_pad
    from audiolm_pytorch.tokens import TokenDataset
    from audiolm_pytorch.tokens_writer import prepare_tokens
    path = work / f'ce_batches_{args.ce_steps}.pt'
    if path.is_file():
        return path
    wav2vec, codec = spectral_tokenizer(train), default_codec(train)
    for name, folder in (('train', train), ('heldout', held)):
        prepare_tokens([folder], work / f'tokens_ce_{name}', wav2vec = wav2vec, codec = codec, progress = False)
    out = {}
    for stage in STAGES:
        levels = dict(num_coarse_quantizers = 3, num_fine_quantizers = 5)
        ds = TokenDataset(work / 'tokens_ce_train', stage = stage, max_seconds = 1.5, **levels)
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        for step in range(args.ce_steps):
            index = torch.randint(0, len(ds), (4,), generator = generator).tolist()
            for k, tensor in enumerate(collate_pad([ds[i] for i in index])[:-1]):
                out.setdefault(f'{stage}.train.{k}', []).append(tensor)
        held_ds = TokenDataset(work / 'tokens_ce_heldout', stage = stage, max_seconds = 1.5, **levels)
        items = []
        for i in range(len(held_ds)):
            torch.manual_seed(0)
            items.append(held_ds[i])
        for k, tensor in enumerate(collate_pad(items)[:-1]):
            out[f'{stage}.heldout.{k}'] = [tensor]
    tensors = {key: torch.stack(value) for key, value in out.items()}   # (steps, b, ...)
    tensors['num_semantic'] = torch.tensor(wav2vec.codebook_size)
    torch.save(tensors, path)
    return path


LOOP = '''
def train_and_eval(lib, stage, data, steps, seed = 0, **model_kwargs):
    """AdamW 3e-4, clip 0.5, ``steps`` steps on the stored batches; held-out loss in eval mode."""
    import torch
    torch.manual_seed(seed)
    num_semantic = int(data['num_semantic'])
    transformer = models(stage, num_semantic = num_semantic, dim = 128, depth = 2, heads = 4, lib = lib, **model_kwargs)
    extra = {}
    if stage != 'semantic' and 'site-packages' in lib.__file__:
        # the reference's coarse / fine wrappers read codec.rq_groups even for token ids: a (never run) SoundStream
        extra['codec'] = lib.SoundStream(codebook_size = 1024, rq_num_quantizers = 8, target_sample_hz = 16000)
    wrapper = getattr(lib, dict(semantic = 'SemanticTransformerWrapper', coarse = 'CoarseTransformerWrapper',
                                fine = 'FineTransformerWrapper')[stage])(transformer = transformer, **extra)
    def inputs(split, step):
        t = [data[f'{stage}.{split}.{k}'][step] for k in range(3) if f'{stage}.{split}.{k}' in data]
        if stage == 'semantic':
            return dict(semantic_token_ids = t[0])
        if stage == 'coarse':
            return dict(semantic_token_ids = t[0], coarse_token_ids = t[1])
        return dict(token_ids = t[0])
    opt = torch.optim.AdamW(transformer.parameters(), lr = 3e-4, weight_decay = 0.)
    wrapper.train()
    start = time.process_time()
    for step in range(steps):
        loss = wrapper(**inputs('train', step), return_loss = True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
    cpu = (time.process_time() - start) / steps
    wrapper.eval()
    with torch.no_grad():
        held = float(wrapper(**inputs('heldout', 0), return_loss = True))
    return dict(stage = stage, heldout_ce = held, last_train_loss = float(loss.detach()), cpu_s_per_step = cpu)
'''

REFERENCE_MAIN = '''
import json, os, sys, tempfile, time
from pathlib import Path
fake = Path(tempfile.gettempdir()) / f'lm-stages-fairseq-{os.getuid()}' / 'fairseq'
fake.mkdir(parents = True, exist_ok = True)
(fake / '__init__.py').touch()
sys.path.insert(0, str(fake.parent))
import torch
import audiolm_pytorch as lib
import audiolm_pytorch.audiolm_pytorch as inner
inner.get_encoded_dim = lambda name: 768      # no T5 config download
assert 'site-packages' in lib.__file__, lib.__file__
torch.set_num_threads(int(sys.argv[3]))
data = torch.load(sys.argv[1], weights_only = True)
print(json.dumps([train_and_eval(lib, stage, data, int(sys.argv[2])) for stage in ('semantic', 'coarse', 'fine')]))
'''


def cross_entropy(work: Path, train: Path, held: Path, args) -> dict:
    import inspect
    batches = token_batches(work, train, held, args)
    data = torch.load(batches, weights_only = True)
    namespace = dict(time = time, models = models)
    exec(LOOP, namespace)
    import audiolm_pytorch
    ours = [namespace['train_and_eval'](audiolm_pytorch, stage, data, args.ce_steps) for stage in STAGES]
    for row in ours:
        print('ours', json.dumps(row), flush = True)
    reference = []
    venv = Path(os.environ.get('REFERENCE_VENV', '/work/venv-ref'))
    if (venv / 'bin' / 'python').exists() and not args.skip_reference:
        script = Path(tempfile.mkdtemp()) / 'reference_lm_stages.py'
        script.write_text('import time\n' + inspect.getsource(models) + LOOP + REFERENCE_MAIN)
        env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
        proc = subprocess.run([str(venv / 'bin' / 'python'), '-s', str(script), str(batches), str(args.ce_steps),
                               str(torch.get_num_threads())], capture_output = True, text = True, env = env,
                              cwd = script.parent)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file = sys.stderr)
        else:
            reference = json.loads(proc.stdout.strip().splitlines()[-1])
            for row in reference:
                print('reference', json.dumps(row), flush = True)
    return dict(ours = ours, reference = reference)


def kv_heads_ablation(work: Path, train: Path, held: Path, args) -> dict:
    """This library only: held-out CE with one shared key/value head (``attn_kv_heads=1``, the reference's
    multi-query attention and the default) vs one per query head (``attn_kv_heads=None``), same batches and
    seeds."""
    batches = token_batches(work, train, held, args)
    data = torch.load(batches, weights_only = True)
    namespace = dict(time = time, models = models)
    exec(LOOP, namespace)
    import audiolm_pytorch
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for kv_heads in (1, None):
            for stage in STAGES:
                row = namespace['train_and_eval'](audiolm_pytorch, stage, data, args.ce_steps, seed = seed,
                                                  attn_kv_heads = kv_heads)
                row.update(seed = seed, attn_kv_heads = kv_heads)
                print('kv', json.dumps(row), flush = True)
                rows.append(row)
    return dict(kv_heads = rows)


def main():
    parser = argparse.ArgumentParser(description = __doc__.split('\n')[0])
    parser.add_argument('--part', choices = ('throughput', 'ce', 'both', 'kv_heads'), default = 'both')
    parser.add_argument('--threads', type = int, default = 2)
    parser.add_argument('--audio-steps', type = int, default = 3)
    parser.add_argument('--token-steps', type = int, default = 10)
    parser.add_argument('--ce-steps', type = int, default = 300)
    parser.add_argument('--seeds', type = int, default = 2, help = 'seeds per setting (--part kv_heads)')
    parser.add_argument('--first-seed', type = int, default = 0)
    parser.add_argument('--dim', type = int, default = 512, help = 'throughput: transformer width (CLI default 512)')
    parser.add_argument('--depth', type = int, default = 6, help = 'throughput: transformer depth (CLI default 6)')
    parser.add_argument('--stages', nargs = '+', default = list(STAGES), choices = STAGES)
    parser.add_argument('--skip-reference', action = 'store_true')
    parser.add_argument('--work', default = None, help = 'work folder (kept between runs; default: a temp folder)')
    parser.add_argument('--json', default = None, help = 'write the results here')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix = 'lm_stages_'))
    work.mkdir(parents = True, exist_ok = True)
    train, held = make_corpus(work / 'corpus')
    print(f'hardware: {hardware()}; corpus: {len(list(train.glob("*.wav")))} train / '
          f'{len(list(held.glob("*.wav")))} held-out clips', flush = True)
    results = dict(hardware = hardware())
    if args.part in ('throughput', 'both'):
        results['throughput'] = throughput(work, train, args)
    if args.part in ('ce', 'both'):
        results['ce'] = cross_entropy(work, train, held, args)
    if args.part == 'kv_heads':
        results['kv_heads'] = kv_heads_ablation(work, train, held, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent = 1))


if __name__ == '__main__':
    main()
