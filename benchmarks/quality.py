"""Codec quality benchmark: train SoundStream for a fixed budget on a corpus and score held-out reconstructions
along the way, for this project ("ours") and the reference (audiolm-pytorch 2.4.0) side by side in one run.

    python benchmarks/quality.py [--steps 300 | --seconds 600] [--eval-every 50] [--side ours|reference|both]
                                 [--mode generator,trainer] [--ours-kwargs '{json}'] [--reference-kwargs '{json}']
                                 [--trainer-kwargs '{json}'] [--corpus /work/data/codec_corpus] [--out DIR]

    python benchmarks/quality.py --summarize [RUN_ID ...]    # table + comparisons + curves.png from quality.jsonl

Ablations (one side, a tag per row; the lines of several runs can be merged with --summarize):

    python benchmarks/quality.py --side ours --mode generator --steps 300 --tag mel0.005 \
        --ours-kwargs '{"multi_spectral_recon_loss_weight": 0.005}'

``--parallel`` trains both sides at once (one process each): on a shared 2-core machine it halves the wall time,
and both sides then compete for the same cores; compare ``cpu_seconds`` there (the equal-CPU-time comparison).

Corpus: ``scripts/make_codec_corpus.py`` (``train/`` and ``heldout/`` of 16 kHz mono wav). Reference venv:
``benchmarks/reference_env.sh`` (``--reference-venv``, default ``/work/venv-ref``).

Model: the small config ``SoundStream(channels=8, codebook_size=256, rq_num_quantizers=4, strides=(2, 4, 5, 8))``
on both sides; ``--ours-kwargs`` / ``--reference-kwargs`` are merged on top (e.g. for ablations), otherwise each
library's own defaults apply.

Training modes (each side runs in its own subprocess, one after another, with the same seed):

- ``generator``: the model's own generator loss ``soundstream(x, return_loss_breakdown=True)[0]`` (waveform,
  multi-resolution mel, adversarial + feature terms against the untrained discriminators, commitment), Adam
  (``--lr``, default 1e-3, betas (0.9, 0.999)) over ``soundstream.non_discr_parameters()``; discriminators are never
  stepped. Both sides see exactly the same crops (``--batch`` x ``--crop-seconds``, drawn by a seeded numpy
  generator from the training clips).
- ``trainer``: ``SoundStreamTrainer(soundstream, batch_size=--batch, data_max_length=crop, dataset=...)`` with
  that library's defaults otherwise (``--trainer-kwargs`` merged on top); the dataset yields seeded random crops of
  the same clips (each library's loader shuffles them in its own order). A trainer step is one optimizer step:
  ``grad_accum_every`` (default 4) micro-batches; the reference draws separate micro-batches for its discriminator.

Evaluation (every ``--eval-every`` steps, at step 0 and at the end): every held-out clip (cut to whole frames) is
tokenized and decoded in eval mode (``tokenize`` -> ``decode_from_codebook_indices``); the worker sends the
reconstructions and codes back and *this* process scores both sides with the same code,
``audiolm_pytorch/codecs/metrics.py`` (loaded by path): log-mel L1, SI-SDR, multi-resolution STFT distance
(means over all held-out clips, plus speech / music means), codebook usage per level (used / dead fraction,
perplexity, over all held-out frames), PESQ (wide-band) and STOI on the speech clips when ``pesq`` / ``pystoi``
import. ``train_seconds`` is the wall clock of training steps only (evaluation excluded); ``cpu_seconds`` the
worker's process CPU time over the same steps (steadier on a shared machine).

Outputs in ``--out`` (default ``results/codec_quality``): ``quality.jsonl`` (appended: one line per evaluation
point, one per run, one comparison per mode when both sides ran), ``curves.png`` (metric vs step and vs seconds,
ours vs reference), ``reconstructions/`` (the last evaluation's held-out wavs per run, to listen to).
"""

from __future__ import annotations

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # before torch loads: no OpenMP spinning on a shared box

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
METRICS_FILE = REPO_ROOT / 'audiolm_pytorch' / 'codecs' / 'metrics.py'
SMALL_CONFIG = dict(channels = 8, codebook_size = 256, rq_num_quantizers = 4, strides = [2, 4, 5, 8])
SAMPLE_HZ = 16000
MODES = ('generator', 'trainer')
SIDES = ('ours', 'reference')


# ----------------------------------------------------------------------------------------------------------
# worker: runs inside one side's interpreter (our venv with PYTHONPATH=repo, or the reference venv)
# ----------------------------------------------------------------------------------------------------------

def _load_clips(folder: Path):
    import soundfile as sf
    clips = []
    for path in sorted(folder.glob('*.wav')):
        wave, sample_hz = sf.read(str(path), dtype = 'float32', always_2d = True)
        if sample_hz != SAMPLE_HZ:
            raise ValueError(f'{path}: {sample_hz} Hz, the benchmark corpus must be {SAMPLE_HZ} Hz '
                             '(scripts/make_codec_corpus.py)')
        clips.append((path.stem, np.ascontiguousarray(wave.mean(axis = 1))))
    if not clips:
        raise FileNotFoundError(f'no .wav clips in {folder}: run scripts/make_codec_corpus.py --out {folder.parent}')
    return clips


def _crop(rng, waves, length: int):
    wave = waves[int(rng.integers(len(waves)))]
    if wave.shape[0] <= length:
        return np.pad(wave, (0, length - wave.shape[0]))
    start = int(rng.integers(wave.shape[0] - length + 1))
    return wave[start: start + length]


class CropDataset(Dataset):
    """Seeded random crops of the training clips: item ``i`` is always the same crop (yields ``(wave,)``)."""

    def __init__(self, waves, length: int, seed: int, size: int = 1_000_000):
        self.waves, self.length, self.seed, self.size = waves, length, seed, size

    def __len__(self):
        return self.size

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, index))
        return (torch.from_numpy(_crop(rng, self.waves, self.length).copy()),)


def _loss_dict(loss, breakdown) -> dict:
    names = ('recon', 'multi_spectral', 'adversarial', 'feature', 'commitment')
    items = breakdown._asdict().items() if hasattr(breakdown, '_asdict') else zip(names, breakdown)
    return {'loss': float(loss.detach()), **{k: float(v.detach() if torch.is_tensor(v) else v) for k, v in items}}


def _evaluate(model, heldout, out_path: Path, device: str = 'cpu'):
    was_training = model.training
    model.eval()
    hop = int(model.seq_len_multiple_of)
    arrays = {}
    with torch.no_grad():
        for name, wave in heldout:
            n = wave.shape[0] // hop * hop
            x = torch.from_numpy(wave[:n]).reshape(1, n).to(device)
            codes = model.tokenize(x)
            recon = model.decode_from_codebook_indices(codes)
            arrays[f'recon__{name}'] = recon.reshape(-1).float().cpu().numpy()
            arrays[f'codes__{name}'] = codes.reshape(-1, codes.shape[-1]).cpu().numpy().astype(np.int64)
    model.train(was_training)
    np.savez(out_path, **arrays)


def worker(args):
    torch.set_num_threads(args.threads)
    if args.side == 'reference':
        import reference_shim
        lib = reference_shim.import_reference()
    else:
        import audiolm_pytorch as lib
        if Path(lib.__file__).resolve().parent.parent != REPO_ROOT:
            raise RuntimeError(f'imported {lib.__file__}, not this repository: run with PYTHONPATH={REPO_ROOT}')

    train = [w for _, w in _load_clips(Path(args.corpus) / 'train')]
    heldout = _load_clips(Path(args.corpus) / 'heldout')
    crop = int(round(args.crop_seconds * SAMPLE_HZ))
    work = Path(args.work_dir)

    torch.manual_seed(args.seed)
    model = lib.SoundStream(**{**SMALL_CONFIG, **json.loads(args.model_kwargs)}).to(args.device)
    if crop % model.seq_len_multiple_of:
        raise ValueError(f'--crop-seconds gives {crop} samples, not a multiple of {model.seq_len_multiple_of}')

    def emit(**record):
        print('@@' + json.dumps(record), flush = True)

    if args.mode == 'generator':
        rng = np.random.default_rng(args.seed)
        optimizer = torch.optim.Adam(model.non_discr_parameters(), lr = args.lr)

        def step_fn():
            x = torch.from_numpy(np.stack([_crop(rng, train, crop) for _ in range(args.batch)])).to(args.device)
            loss, breakdown = model(x, return_loss_breakdown = True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return _loss_dict(loss, breakdown)
    else:
        trainer_kwargs = dict(num_train_steps = args.steps or 10 ** 9, batch_size = args.batch,
                              data_max_length = crop, dataset = CropDataset(train, crop, args.seed),
                              results_folder = str(work / 'trainer_results'), save_results_every = 10 ** 9,
                              save_model_every = 10 ** 9, force_clear_prev_results = True)
        trainer_kwargs.update(json.loads(args.trainer_kwargs))
        Path(trainer_kwargs['results_folder']).mkdir(parents = True, exist_ok = True)   # the reference rmtree()s it
        trainer = lib.SoundStreamTrainer(model, **trainer_kwargs)

        def step_fn():
            logs = trainer.train_step()
            return {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}

    step, train_seconds, cpu_seconds, losses = 0, 0., 0., []

    def evaluate():
        path = work / f'eval_{step:07d}.npz'
        started = time.perf_counter()
        _evaluate(model, heldout, path, args.device)
        recent = {k: float(np.mean([l[k] for l in losses[-10:] if k in l])) for k in (losses[-1] if losses else {})}
        emit(step = step, train_seconds = train_seconds, cpu_seconds = cpu_seconds, npz = str(path),
             eval_seconds = time.perf_counter() - started, loss = recent)

    evaluate()
    while (args.steps is None or step < args.steps) and (args.seconds is None or train_seconds < args.seconds):
        wall, cpu = time.perf_counter(), time.process_time()
        losses.append(step_fn())
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - wall
        cpu_seconds += time.process_time() - cpu
        step += 1
        if step % args.eval_every == 0:
            evaluate()
    if step % args.eval_every:
        evaluate()
    emit(done = True, steps = step, parameters = sum(p.numel() for p in model.non_discr_parameters()),
         codebook_size = int(getattr(model, 'codebook_size', 0) or 0), library = f'{lib.__name__} {getattr(lib, "__version__", "")}',
         torch = torch.__version__)


# ----------------------------------------------------------------------------------------------------------
# orchestrator: runs both sides, scores them with one metric implementation, writes results
# ----------------------------------------------------------------------------------------------------------

def _metrics_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location('codec_quality_metrics', METRICS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def score(npz_path: str, heldout: dict, codebook_size: int, metrics, perceptual: bool = True) -> dict:
    """Mean held-out metrics of one evaluation point (all clips, and speech / music separately)."""
    data = np.load(npz_path)
    per_clip, codes = {}, []
    for name, wave in heldout.items():
        recon = data[f'recon__{name}']
        per_clip[name] = metrics.reconstruction_metrics(wave[:recon.shape[0]], recon, SAMPLE_HZ,
                                                        perceptual = perceptual and name.startswith('speech'))
        codes.append(data[f'codes__{name}'])
    out = {}
    for key in ('log_mel_l1', 'si_sdr', 'mr_stft', 'pesq', 'stoi'):
        for group, prefix in (('', ''), ('speech_', 'speech'), ('music_', 'music')):
            values = [m[key] for name, m in per_clip.items() if key in m and name.startswith(prefix)]
            if values and not (group == 'music_' and key in ('pesq', 'stoi')):
                out[f'{group}{key}'] = float(np.mean(values))
    levels = metrics.codebook_usage(np.concatenate(codes), codebook_size)
    out['codebook'] = levels
    out['min_used'] = min(level['used'] for level in levels)
    return out


def _worker_command(args, side: str, mode: str, work: Path):
    model_kwargs = args.ours_kwargs if side == 'ours' else args.reference_kwargs
    argv = ['--worker', '--side', side, '--mode', mode, '--corpus', str(args.corpus), '--work-dir', str(work),
            '--model-kwargs', model_kwargs, '--trainer-kwargs', args.trainer_kwargs, '--batch', str(args.batch),
            '--crop-seconds', str(args.crop_seconds), '--lr', str(args.lr), '--seed', str(args.seed),
            '--threads', str(args.threads), '--eval-every', str(args.eval_every), '--device', args.device]
    argv += ['--steps', str(args.steps)] if args.steps else []
    argv += ['--seconds', str(args.seconds)] if args.seconds else []
    env_extra = dict(OMP_NUM_THREADS = args.threads, OMP_WAIT_POLICY = os.environ.get('OMP_WAIT_POLICY', 'PASSIVE'),
                     PYTHONUNBUFFERED = 1)
    if side == 'ours':
        env = {**os.environ, **{k: str(v) for k, v in env_extra.items()}, 'PYTHONPATH': str(REPO_ROOT)}
        return [sys.executable, str(Path(__file__).resolve()), *argv], env
    sys.path.insert(0, str(HERE))
    import reference_shim
    env = reference_shim.reference_env(**env_extra)
    return reference_shim.reference_command(Path(__file__).resolve(), *argv, venv = args.reference_venv), env


def train_side(args, side: str, mode: str, on_point) -> dict:
    """Run one worker to the end, calling ``on_point(record)`` for each evaluation point as it arrives (so a run
    stopped early still leaves its scored points in the results); returns the run info."""
    work = Path(tempfile.mkdtemp(prefix = f'codec-quality-{side}-{mode}-'))
    command, env = _worker_command(args, side, mode, work)
    print(f'[{side}/{mode}] training ({args.steps or "-"} steps, {args.seconds or "-"} s budget) in {work}', flush = True)
    started = time.perf_counter()
    last, done = None, None
    process = subprocess.Popen(command, env = env, cwd = work, stdout = subprocess.PIPE, text = True)
    for line in process.stdout:
        if not line.startswith('@@'):
            continue
        record = json.loads(line[2:])
        if record.get('done'):
            done = record
            continue
        last = on_point(record)
    if process.wait() != 0 or done is None:
        raise RuntimeError(f'{side}/{mode} worker failed (exit {process.returncode}); command: {" ".join(command)}')
    _save_reconstructions(last['npz'], Path(args.out) / 'reconstructions' / f'{side}_{mode}')
    return dict(last = last, total_seconds = round(time.perf_counter() - started, 1), **done)


def score_point(args, side: str, mode: str, record: dict, heldout: dict, metrics, run_id: str) -> dict:
    """One evaluation point scored with the shared metric code (in this process)."""
    scored = score(record['npz'], heldout, args.codebook_size, metrics, perceptual = not args.no_perceptual)
    point = dict(kind = 'eval', run = run_id, tag = args.tag, side = side, mode = mode, step = record['step'],
                 train_seconds = round(record['train_seconds'], 2), cpu_seconds = round(record['cpu_seconds'], 2),
                 eval_seconds = round(record['eval_seconds'], 2), loss = record['loss'], npz = record['npz'],
                 **scored)
    extra = f" PESQ {scored['pesq']:.2f}" if 'pesq' in scored else ''
    print(f"[{side}/{mode}] step {point['step']:5d}  train {point['train_seconds']:7.1f} s (cpu "
          f"{point['cpu_seconds']:6.1f})  log-mel L1 {scored['log_mel_l1']:.3f}  SI-SDR {scored['si_sdr']:6.2f} dB  "
          f"MR-STFT {scored['mr_stft']:.3f}{extra}  min used {scored['min_used']:.2f}", flush = True)
    return point


def _save_reconstructions(npz_path: str, folder: Path):
    import soundfile as sf
    folder.mkdir(parents = True, exist_ok = True)
    data = np.load(npz_path)
    for key in data.files:
        if key.startswith('recon__'):
            sf.write(str(folder / f'{key[7:]}.wav'), np.clip(data[key], -1, 1), SAMPLE_HZ)


def at_seconds(points: list, seconds: float, key: str = 'train_seconds') -> dict | None:
    """The last evaluation point reached within ``seconds`` of training (``key``: wall or CPU seconds)."""
    within = [p for p in points if p[key] <= seconds * 1.0001]
    return within[-1] if within else None


def compare(runs: dict, mode: str) -> dict | None:
    """Ours vs the reference at equal steps (the last step both evaluated) and at equal training time: the last point
    of each within the shorter run's wall-clock seconds, and likewise in process CPU seconds."""
    ours, ref = runs.get(('ours', mode)), runs.get(('reference', mode))
    if not (ours and ref):
        return None
    keys = ('log_mel_l1', 'si_sdr', 'mr_stft', 'pesq', 'stoi', 'min_used')
    common = max({p['step'] for p in ours['points']} & {p['step'] for p in ref['points']})
    final_o = next(p for p in ours['points'] if p['step'] == common)
    final_r = next(p for p in ref['points'] if p['step'] == common)
    out = dict(kind = 'comparison', mode = mode, steps = [final_o['step'], final_r['step']],
               equal_steps = {k: [final_o.get(k), final_r.get(k)] for k in keys})
    for name, key in (('equal_seconds', 'train_seconds'), ('equal_cpu_seconds', 'cpu_seconds')):
        budget = min(final_o[key], final_r[key])
        o, r = at_seconds(ours['points'], budget, key), at_seconds(ref['points'], budget, key)
        out[name] = dict(seconds = budget, steps = [o and o['step'], r and r['step']],
                         **{k: [o and o.get(k), r and r.get(k)] for k in keys})
    return out


def plot(path: Path, runs: dict):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print('matplotlib not installed: no curves.png')
        return
    keys = [('log_mel_l1', 'log-mel L1 (lower better)'), ('si_sdr', 'SI-SDR dB (higher better)'),
            ('mr_stft', 'MR-STFT distance (lower better)'), ('pesq', 'PESQ wb, speech (higher better)'),
            ('min_used', 'min codebook use over levels')]
    fig = Figure(figsize = (4 * len(keys), 7))
    colors = dict(ours = 'tab:blue', reference = 'tab:orange')
    styles = dict(generator = '-', trainer = '--')
    for col, (key, title) in enumerate(keys):
        for row, x_key in enumerate(('step', 'train_seconds')):
            ax = fig.add_subplot(2, len(keys), row * len(keys) + col + 1)
            for (side, mode), run in runs.items():
                pts = [p for p in run['points'] if key in p]
                if pts:
                    ax.plot([p[x_key] for p in pts], [p[key] for p in pts], styles[mode], color = colors.get(side),
                            marker = 'o', markersize = 3, label = f'{side} / {mode}')
            ax.set_title(title, fontsize = 9)
            ax.set_xlabel('step' if x_key == 'step' else 'training seconds', fontsize = 8)
            ax.tick_params(labelsize = 7)
            if ax.lines and col == 0:
                ax.legend(fontsize = 7)
    fig.tight_layout()
    fig.savefig(path, dpi = 90)


def _fmt(value, digits = 3):
    return '-' if value is None else f'{value:.{digits}f}'


def main(argv = None):
    parser = argparse.ArgumentParser(description = __doc__.split('\n\n')[0],
                                     formatter_class = argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus', type = Path, default = Path('/work/data/codec_corpus'))
    parser.add_argument('--steps', type = int, default = None, help = 'training steps (default 300 without --seconds)')
    parser.add_argument('--seconds', type = float, default = None, help = 'training wall-clock budget per run')
    parser.add_argument('--eval-every', type = int, default = 50)
    parser.add_argument('--side', choices = ('ours', 'reference', 'both'), default = 'both')
    parser.add_argument('--mode', default = 'generator,trainer', help = 'comma list of generator, trainer')
    parser.add_argument('--ours-kwargs', default = '{}', help = 'JSON merged into our SoundStream kwargs')
    parser.add_argument('--reference-kwargs', default = '{}', help = "JSON merged into the reference's kwargs")
    parser.add_argument('--trainer-kwargs', default = '{}', help = 'JSON merged into SoundStreamTrainer kwargs (both)')
    parser.add_argument('--batch', type = int, default = 4)
    parser.add_argument('--crop-seconds', type = float, default = 0.5)
    parser.add_argument('--lr', type = float, default = 1e-3, help = 'Adam learning rate of the generator mode')
    parser.add_argument('--seed', type = int, default = 0)
    parser.add_argument('--threads', type = int, default = 1)
    parser.add_argument('--device', default = 'cpu', help = "torch device of the training sides, e.g. 'cuda'")
    parser.add_argument('--no-perceptual', action = 'store_true', help = 'skip PESQ / STOI')
    parser.add_argument('--reference-venv', default = os.environ.get('REFERENCE_VENV', '/work/venv-ref'))
    parser.add_argument('--out', type = Path, default = REPO_ROOT / 'results' / 'codec_quality')
    parser.add_argument('--tag', default = '', help = 'free text stored with every line (e.g. the ablation name)')
    parser.add_argument('--parallel', action = 'store_true',
                        help = 'train both sides at the same time (one process each; halves the wall time on 2+ '
                               'cores, both sides then share the machine equally)')
    parser.add_argument('--summarize', nargs = '*', metavar = 'RUN_ID',
                        help = 'only print the table / comparisons and write curves.png from --out/quality.jsonl '
                               '(the given run ids, several runs may be merged; default all)')
    # worker-only
    parser.add_argument('--worker', action = 'store_true', help = argparse.SUPPRESS)
    parser.add_argument('--work-dir', help = argparse.SUPPRESS)
    parser.add_argument('--model-kwargs', default = '{}', help = argparse.SUPPRESS)
    parser.add_argument('--codebook-size', type = int, default = SMALL_CONFIG['codebook_size'], help = argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        return worker(args)
    if args.summarize is not None:
        return summarize_file(args.out / 'quality.jsonl', args.summarize, args.out / 'curves.png')
    if args.steps is None and args.seconds is None:
        args.steps = 300
    modes = [m.strip() for m in args.mode.split(',') if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f'--mode takes a comma list of {MODES}, got {args.mode!r}')
    for name in ('ours_kwargs', 'reference_kwargs', 'trainer_kwargs'):
        try:
            if not isinstance(json.loads(getattr(args, name)), dict):
                raise ValueError
        except ValueError:
            parser.error(f'--{name.replace("_", "-")} must be a JSON object, got {getattr(args, name)!r}')
    sides = SIDES if args.side == 'both' else (args.side,)

    metrics = _metrics_module()
    heldout = dict(_load_clips(args.corpus / 'heldout'))
    _load_clips(args.corpus / 'train')   # fail early on a missing corpus
    args.out.mkdir(parents = True, exist_ok = True)
    run_id = time.strftime('%Y%m%dT%H%M%S')
    lines = []
    lock = threading.Lock()
    with open(args.out / 'quality.jsonl', 'a') as results:
        def write(line):
            with lock:
                results.write(json.dumps(line) + '\n')
                results.flush()
                lines.append(line)

        def run(side, mode):
            def on_point(record):
                point = score_point(args, side, mode, record, heldout, metrics, run_id)
                write(point)
                return point
            info = train_side(args, side, mode, on_point)
            point = info['last']
            write(dict(kind = 'run', run = run_id, tag = args.tag, side = side, mode = mode, steps = info['steps'],
                       train_seconds = point['train_seconds'], cpu_seconds = point['cpu_seconds'],
                       total_seconds = info['total_seconds'],
                       final = {k: v for k, v in point.items() if k not in ('kind', 'run', 'tag', 'side', 'mode')},
                       parameters = info['parameters'], library = info['library'], torch = info['torch'],
                       model_kwargs = {**SMALL_CONFIG, **json.loads(args.ours_kwargs if side == 'ours'
                                                                    else args.reference_kwargs)},
                       trainer_kwargs = json.loads(args.trainer_kwargs) if mode == 'trainer' else None,
                       lr = args.lr if mode == 'generator' else None, batch = args.batch,
                       crop_seconds = args.crop_seconds, seed = args.seed, threads = args.threads,
                       parallel = bool(args.parallel and len(sides) > 1), command = ' '.join(sys.argv)))

        for mode in modes:
            if args.parallel and len(sides) > 1:
                from concurrent.futures import ThreadPoolExecutor
                with ThreadPoolExecutor(len(sides)) as pool:
                    for future in [pool.submit(run, side, mode) for side in sides]:
                        future.result()
            else:
                for side in sides:
                    run(side, mode)
            comparison = compare(load_runs(lines), mode)
            if comparison:
                comparison.update(run = run_id, tag = args.tag)
                write(comparison)
    summarize(lines, args.out / 'curves.png')


def load_runs(lines: list[dict]) -> dict:
    """``{(label, mode): {'points': [...], **run summary}}`` from result lines. ``label`` is the side ("ours" /
    "reference") when each side has one run per mode in ``lines``, else ``"side tag"`` (or ``"side run-id"``), so
    ablation rows merged by ``--summarize`` stay apart (comparisons need the plain labels)."""
    groups = {}
    for line in lines:
        if line.get('kind') in ('eval', 'run'):
            key = (line['side'], line['mode'], line.get('run'), line.get('tag', ''))
            group = groups.setdefault(key, {'points': []})
            if line['kind'] == 'eval':
                group['points'].append(line)
            else:
                group.update({k: v for k, v in line.items() if k != 'points'})
    per_side_mode = {}
    for side, mode, _, _ in groups:
        per_side_mode[(side, mode)] = per_side_mode.get((side, mode), 0) + 1
    runs = {}
    for (side, mode, run, tag), group in groups.items():
        if group['points']:
            label = side if per_side_mode[(side, mode)] == 1 else f'{side} {tag or run}'
            runs[(label, mode)] = group
    return runs


def summarize(lines: list[dict], png: Path | None):
    """Print the final table and the equal-steps / equal-wall-clock comparisons; write the curves."""
    runs = load_runs(lines)
    if png is not None:
        plot(png, runs)
    print('\n| side | mode | steps | train s | cpu s | log-mel L1 | SI-SDR dB | MR-STFT | PESQ | STOI | min used | tag |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|')
    for (side, mode), run in runs.items():
        p = run['points'][-1]
        print(f"| {side} | {mode} | {p['step']} | {p['train_seconds']:.0f} | {p['cpu_seconds']:.0f} | "
              f"{_fmt(p['log_mel_l1'])} | {_fmt(p['si_sdr'], 2)} | {_fmt(p['mr_stft'])} | {_fmt(p.get('pesq'), 2)} | "
              f"{_fmt(p.get('stoi'), 2)} | {_fmt(p['min_used'], 2)} | {p.get('tag', '')} |")
    for mode in MODES:
        c = compare(runs, mode)
        if c:
            e = c['equal_steps']
            print(f"equal steps ({mode}, step {c['steps'][0]}): log-mel L1 {_fmt(e['log_mel_l1'][0])} vs "
                  f"{_fmt(e['log_mel_l1'][1])}, SI-SDR {_fmt(e['si_sdr'][0], 2)} vs {_fmt(e['si_sdr'][1], 2)} dB")
        for name, what in (('equal_seconds', 'wall-clock'), ('equal_cpu_seconds', 'CPU time')):
            if c:
                e = c[name]
                print(f"equal {what} ({mode}, {e['seconds']:.0f} s of training; steps ours {e['steps'][0]}, "
                      f"reference {e['steps'][1]}): log-mel L1 {_fmt(e['log_mel_l1'][0])} vs "
                      f"{_fmt(e['log_mel_l1'][1])}, SI-SDR {_fmt(e['si_sdr'][0], 2)} vs {_fmt(e['si_sdr'][1], 2)} dB")
    if png is not None:
        print(f'curves: {png}')


def summarize_file(path: Path, run_ids: list[str], png: Path | None):
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    lines = [line for line in lines if not run_ids or line.get('run') in run_ids]
    if not lines:
        raise SystemExit(f'no results for runs {run_ids} in {path}')
    summarize(lines, png)


if __name__ == '__main__':
    main()
