"""``audiolm demo``: the whole AudioLM pipeline, trained from scratch on the clips shipped with the package.

Within a wall-clock budget (``--minutes``, default 5) the demo

1. trains a tiny SoundStream codec (``SoundStreamTrainer``),
2. fits a spectral k-means semantic tokenizer (``SpectralKmeansTokenizer``; no pretrained model needed),
3. trains tiny semantic, coarse and fine transformers (``Semantic/Coarse/FineTransformerTrainer``),
4. generates, with ``AudioLM``, a continuation of a held-out prompt and an unconditional sample,

and writes to ``--out``: ``prompt.wav``, ``prompt_reconstruction.wav`` (the prompt through the codec),
``continuation.wav``, ``unconditional.wav``, ``demo.png`` (spectrograms of prompt and generations, loss curves),
``report.md`` (configs, steps, losses, times), ``checkpoints/*.pt`` and ``audiolm.yaml`` (which
``audiolm generate --audiolm OUT/audiolm.yaml`` reads).

The budget is split across the stages (``BUDGET_SHARES``): each trainer runs ``train_step()`` until its share
is used (at least one step), and each stage's deadline is cumulative, so an early stage that overruns leaves
less to the later ones and the total stays bounded. Generation lengths are chosen from a measured per-token
cost so that sampling fits the remaining time. With a few minutes on two CPU cores the models are far from
converged: the output shows that every stage works end to end, not what a trained AudioLM sounds like.
"""

from __future__ import annotations

import copy
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from audiolm_pytorch.demo_config import (BUDGET_SHARES, DEFAULT_CONFIG, DEFAULT_MINUTES,  # noqa: F401 (re-exported)
                                         MAX_CONTINUATION_SECONDS, PROMPT_CLIP, PROMPT_SECONDS,
                                         RECONSTRUCTION_BEFORE, TRAIN_CLIPS)
from audiolm_pytorch.demo_report import (DemoResult, StageResult, _format_loss, _plot,  # noqa: F401 (re-exported)
                                         _reconstruction_lines, _spectrogram, _write_report)

ASSETS = Path(__file__).parent / 'assets'

# trainer settings the demo always uses: no periodic samples / checkpoints (the demo saves its own), no
# validation split (three clips), the demo's own progress bar
_TRAINER_FIXED = dict(num_train_steps = 10 ** 9, save_results_every = 10 ** 9, save_model_every = 10 ** 9,
                      valid_frac = 0., force_clear_prev_results = True, progress_bar = False)

OUTPUT_FILES = ('prompt.wav', 'prompt_reconstruction.wav', 'continuation.wav', 'unconditional.wav', 'demo.png',
                'report.md', 'audiolm.yaml', 'checkpoints/soundstream.pt', 'checkpoints/semantic_tokenizer.pt',
                'checkpoints/semantic.pt', 'checkpoints/coarse.pt', 'checkpoints/fine.pt')


def _now() -> float:
    return time.perf_counter()


class _Clock:
    """Cumulative deadlines: stage ``k`` must end by ``start + budget * sum(shares[:k+1])``."""

    def __init__(self, budget_seconds: float, start: float):
        self.budget, self.start, self.used_share = budget_seconds, start, 0.

    def deadline(self, share: float) -> float:
        self.used_share += share
        return self.start + self.budget * self.used_share

    def elapsed(self) -> float:
        return _now() - self.start


def _bar(total: float, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total = round(total, 1), desc = desc, unit = 's', disable = not enabled,
                bar_format = '{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s{postfix}')


def _count_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total = total, desc = desc, disable = not enabled)


def _train_until(trainer, deadline: float, desc: str, show_keys: tuple, progress: bool) -> int:
    """Run ``trainer.train_step()`` until ``deadline`` (at least one step). Returns the number of steps."""
    start = _now()
    bar = _bar(max(deadline - start, 0.1), desc, progress)
    steps = 0
    try:
        while True:
            logs = trainer.train_step()
            steps += 1
            now = _now()
            bar.n = min(now - start, bar.total)
            bar.set_postfix({'step': steps, **{k: f'{logs[k]:.3f}' for k in show_keys if k in logs}}, refresh = False)
            bar.refresh()
            if now >= deadline:
                break
    finally:
        bar.close()
    return steps


def _curves(trainer, keys: tuple) -> dict:
    return {key: [(int(s), float(v)) for s, v in trainer.loss_history.get(key, [])] for key in keys
            if trainer.loss_history.get(key)}


def _copy_clips(folder: Path, names) -> Path:
    folder.mkdir(parents = True, exist_ok = True)
    for name in names:
        shutil.copyfile(ASSETS / name, folder / name)
    return folder


def run_demo(out_dir: str | Path = 'demo_out', minutes: float = DEFAULT_MINUTES, *, seed: int = 0, cpu: bool = False,
             progress: bool = True, config: dict | None = None, log: Callable[[str], None] = print) -> DemoResult:
    """Train every stage on the shipped clips within ``minutes`` of wall-clock time, then generate.

    Args:
        out_dir: output folder (created; files the demo writes are overwritten).
        minutes: total wall-clock budget, split across stages (see ``BUDGET_SHARES``). Every stage runs at least
            one step, so tiny budgets (below ~0.2 minutes) may be exceeded by the fixed costs.
        seed: seed of every random number generator. cpu: force the CPU even when a GPU is available.
        progress: show progress bars. config: overrides merged into ``DEFAULT_CONFIG`` (same layout).
        log: where one-line status messages go.
    Returns:
        ``DemoResult`` with per-stage steps, losses and times.
    """
    start = _now()
    if minutes <= 0:
        raise ValueError(f'--minutes must be positive, got {minutes}')
    import random

    import numpy as np
    import torch

    cfg = _merge(copy.deepcopy(DEFAULT_CONFIG), config or {})
    out_dir = Path(out_dir)
    budget = minutes * 60.
    clock = _Clock(budget, start)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = torch.device('cuda' if torch.cuda.is_available() and not cpu else 'cpu')
    log(f'audiolm demo: {minutes:g} minute budget on {_device_name(device)}; writing to {out_dir}')

    run = _Run(cfg = cfg, out_dir = out_dir, data_dir = _copy_clips(out_dir / 'data' / 'train', TRAIN_CLIPS),
               device = device, accelerate_kwargs = dict(cpu = True) if cpu else {}, progress = progress)
    stages = []
    codec, stage = _train_codec(run, clock.deadline(BUDGET_SHARES['soundstream']))
    stages.append(stage)
    clock.deadline(BUDGET_SHARES['tokenizer'])
    tokenizer, stage = _fit_tokenizer(run, seed)
    stages.append(stage)
    transformers = {}
    for name in ('semantic', 'coarse', 'fine'):
        transformers[name], stage = _train_transformer(run, name, codec, tokenizer, clock.deadline(BUDGET_SHARES[name]))
        stages.append(stage)
    waves, stage, reconstruction = _generate(run, codec, tokenizer, transformers,
                                             clock.deadline(BUDGET_SHARES['generate']), stages)
    stages.append(stage)

    _write_generate_config(out_dir)
    _plot(out_dir / 'demo.png', waves, codec.target_sample_hz, stages, prompt_seconds = PROMPT_SECONDS)
    # list what was written; report.md is written next
    names = [name for name in OUTPUT_FILES if name == 'report.md' or (out_dir / name).is_file()]
    result = DemoResult(out_dir, stages, _now() - start, budget, _device_name(device),
                        [str(out_dir / name) for name in names], reconstruction)
    _write_report(out_dir / 'report.md', result, cfg)
    for scratch in (out_dir / 'data', out_dir / 'train'):
        shutil.rmtree(scratch, ignore_errors = True)
    pictures = [path for path in result.files if path.endswith('.png')]
    log(f'done in {result.total_seconds:.1f} s (budget {budget:.0f} s): see {out_dir / "report.md"}'
        + ''.join(f' and {path}' for path in pictures))
    return result


@dataclass
class _Run:
    """What every stage of one demo run shares."""
    cfg: dict
    out_dir: Path
    data_dir: Path
    device: object
    accelerate_kwargs: dict
    progress: bool

    def trainer_kwargs(self, name: str) -> dict:
        return dict(folder = self.data_dir, results_folder = self.out_dir / 'train' / name,
                    accelerate_kwargs = self.accelerate_kwargs, **_TRAINER_FIXED, **self.cfg[name]['trainer'])

    def checkpoint(self, name: str) -> Path:
        return self.out_dir / 'checkpoints' / f'{name}.pt'


def _train_codec(run: _Run, deadline: float):
    """1. SoundStream on the training clips until ``deadline``."""
    from audiolm_pytorch.stages import model_class, trainer_class
    start = _now()
    trainer = _without_periodic_results(trainer_class('soundstream'))(model_class('soundstream')(
        **run.cfg['soundstream']['model']), **run.trainer_kwargs('soundstream'))
    steps = _train_until(trainer, deadline, '1/5 soundstream', ('gen_multi_spectral', 'gen_recon'), run.progress)
    codec = trainer.soundstream.eval()
    codec.save(run.checkpoint('soundstream'))
    has_discriminator = bool(list(codec.discriminator_parameters()))      # none by default: no all-zero curve then
    curves = _curves(trainer, ('gen_multi_spectral', 'gen_recon') + (('discriminator',) if has_discriminator else ()))
    return codec, StageResult('soundstream', _now() - start, steps, curves)


def _fit_tokenizer(run: _Run, seed: int):
    """2. The spectral k-means semantic tokenizer (seconds; bounded by its epochs, not the clock)."""
    from audiolm_pytorch.semantic.spectral import SpectralKmeansTokenizer
    start = _now()
    tokenizer = SpectralKmeansTokenizer(**run.cfg['tokenizer']).to(run.device)
    with _count_bar(1, '2/5 tokenizer (k-means)', run.progress) as bar:
        inertia, frames = tokenizer.fit(sorted(run.data_dir.iterdir()), seed = seed, epochs = 20.)
        bar.update(1)
    tokenizer.eval().save(run.checkpoint('semantic_tokenizer'))
    return tokenizer, StageResult('tokenizer', _now() - start, 1, {'kmeans_inertia': [(0, float(inertia))]},
                                  notes = f'{frames} log-mel frames, {tokenizer.codebook_size} clusters')


def _train_transformer(run: _Run, name: str, codec, tokenizer, deadline: float):
    """3-5. One of the semantic / coarse / fine transformers until ``deadline``."""
    from audiolm_pytorch.stages import build_stage
    start = _now()
    model, trainer_cls, tokenizers = build_stage(name, run.cfg[name]['model'], codec = codec, wav2vec = tokenizer)
    trainer = _without_periodic_results(trainer_cls)(model, *tokenizers, **run.trainer_kwargs(name))
    index = ('semantic', 'coarse', 'fine').index(name) + 3
    steps = _train_until(trainer, deadline, f'{index}/5 {name}', ('loss',), run.progress)
    model.eval().save(run.checkpoint(name))
    return model, StageResult(name, _now() - start, steps, _curves(trainer, ('loss',)))


def _generate(run: _Run, codec, tokenizer, transformers: dict, deadline: float, stages: list):
    """AudioLM: a continuation of the held-out prompt and an unconditional sample, sized to fit ``deadline``.
    Also writes the prompt and its codec reconstruction, scored by ``codecs.metrics`` (log-mel L1, SI-SDR; noted
    on the codec stage and returned)."""
    import torch
    from audiolm_pytorch.audio import load_audio, save_audio
    from audiolm_pytorch.audiolm import AudioLM
    from audiolm_pytorch.codecs.metrics import log_mel_l1, si_sdr
    start, out_dir, device = _now(), run.out_dir, run.device
    audiolm = AudioLM(wav2vec = tokenizer, codec = codec, semantic_transformer = transformers['semantic'],
                      coarse_transformer = transformers['coarse'], fine_transformer = transformers['fine'])
    audiolm = audiolm.to(device).eval()
    sample_hz, hop = codec.target_sample_hz, codec.downsample_factor

    prompt = load_audio(ASSETS / PROMPT_CLIP, target_sample_hz = sample_hz).wave[:, :int(PROMPT_SECONDS * sample_hz)]
    prompt = prompt[:, :prompt.shape[-1] // hop * hop]                                  # (1, n), whole frames
    save_audio(out_dir / 'prompt.wav', prompt, sample_hz)
    with torch.no_grad():
        reconstruction = codec.decode_from_codebook_indices(codec.tokenize(prompt.to(device))).reshape(-1).float().cpu()
    save_audio(out_dir / 'prompt_reconstruction.wav', reconstruction, sample_hz)
    reconstruction_metrics = dict(log_mel_l1 = log_mel_l1(prompt[0], reconstruction, sample_hz),
                                  si_sdr = si_sdr(prompt[0], reconstruction))
    stages[0].notes = (f'held-out prompt reconstruction: log-mel L1 {reconstruction_metrics["log_mel_l1"]:.3f} '
                       f'(0 = perfect), SI-SDR {reconstruction_metrics["si_sdr"]:.2f} dB')

    seconds, per_token = _affordable_seconds(audiolm, tokenizer, codec, transformers, deadline - _now())
    prompt_frames, new_frames = prompt.shape[-1] // hop, max(1, round(seconds * sample_hz / hop))
    semantic_new = max(1, round(seconds * sample_hz / tokenizer.downsample_factor))
    retries, draws = [], []
    semantic_lengths = _record_semantic_lengths(audiolm)
    with torch.no_grad(), _count_bar(2, 'generating', run.progress) as bar:
        # max_length counts semantic ids with the prime's (collapsed by unique_consecutive, as the model sees them)
        prime_len = int(torch.unique_consecutive(tokenizer(prompt.to(device))[0]).numel())
        continuation = _sample(lambda: audiolm(
            prime_wave = prompt.to(device), prime_wave_input_sample_hz = sample_hz,
            max_length = prime_len + semantic_new, max_coarse_time_steps = prompt_frames + new_frames,
            **run.cfg['generate']), target_samples = (prompt_frames + new_frames) * hop,
            target_semantic = prime_len + semantic_new, semantic_lengths = semantic_lengths,
            min_samples = prompt.shape[-1] + hop, retries = retries, draws = draws, deadline = deadline)
        bar.update(1)
        unconditional = _sample(lambda: audiolm(
            batch_size = 1, max_length = semantic_new, max_coarse_time_steps = new_frames, **run.cfg['generate']),
            target_samples = new_frames * hop, target_semantic = semantic_new, semantic_lengths = semantic_lengths,
            min_samples = hop, retries = retries, draws = draws, deadline = deadline)
        bar.update(1)
    save_audio(out_dir / 'continuation.wav', continuation, sample_hz)
    save_audio(out_dir / 'unconditional.wav', unconditional, sample_hz)
    from audiolm_pytorch.lm.sampling import stage_sampling
    sampling = stage_sampling(**{k: v for k, v in run.cfg['generate'].items()
                                 if k in ('temperature', 'filter_thres', 'cond_scale')})
    ended_early = sum(draw == 'ended early' for draw in draws)
    notes = (f'asked for {seconds:.2f} s of new audio per sample ({per_token * 1e3:.1f} ms per token measured); '
             f'got {continuation.numel() / sample_hz:.2f} s continuation (prompt {prompt.shape[-1] / sample_hz:.2f} s '
             f'included) and {unconditional.numel() / sample_hz:.2f} s unconditional; {ended_early} of {len(draws)} '
             f'draw(s) ended early; temperature semantic/coarse/fine '
             + '/'.join(f'{sampling[stage]["temperature"]:g}' for stage in ('semantic', 'coarse', 'fine')))
    if retries:
        notes += f'; {len(retries)} more draw(s), longest kept ({"; ".join(retries)})'
    waves = [('prompt (held out)', prompt[0]), ('prompt through the codec (tokenize -> decode)', reconstruction),
             ('continuation (prompt + generated)', continuation), ('unconditional', unconditional)]
    return waves, StageResult('generate', _now() - start, len(draws), {}, notes = notes,
                              extra = dict(draws = len(draws), ended_early = ended_early)), reconstruction_metrics


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------

def _without_periodic_results(trainer_cls):
    """The stage trainer minus its step-0 validation / samples / plots: the demo writes its own, and on a tiny
    budget those seconds are better spent training."""
    class DemoTrainer(trainer_cls):
        def save_results(self, step: int):
            pass
    DemoTrainer.__name__ = DemoTrainer.__qualname__ = f'Demo{trainer_cls.__name__}'
    return DemoTrainer


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _device_name(device) -> str:
    import torch
    if device.type == 'cuda':
        return f'cuda ({torch.cuda.get_device_name(device)})'
    return f'cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})'


def _record_semantic_lengths(audiolm) -> list:
    """Record the length of every semantic sequence ``audiolm`` generates (the semantic stage ending before its
    ``max_length`` is an early end even when the coarse stage still fills the requested frames)."""
    lengths, generate = [], audiolm.semantic.generate

    def recording(*args, **kwargs):
        ids = generate(*args, **kwargs)
        lengths.append(int((ids != audiolm.semantic.pad_id).sum(dim = -1).min()) if ids.numel() else 0)
        return ids
    audiolm.semantic.generate = recording
    return lengths


def _sample(generate: Callable, *, target_samples: int, target_semantic: int, semantic_lengths: list,
            min_samples: int, retries: list, draws: list, deadline: float, attempts: int = 4):
    """Run ``generate`` until it returns ``target_samples`` samples, keeping the longest draw. A draw "ends early"
    when its semantic ids stop before ``target_semantic`` or its audio before ``target_samples``: the model sampled
    EOS. The stages are trained on crops with ``file_end``, so EOS is a target only where a crop holds its file's
    real end; a model trained that way runs to the requested length unless it predicts such an end. Each draw's
    outcome ('full', 'ended early' or the error) is appended to ``draws``. Stops retrying at ``deadline`` once a
    draw of at least ``min_samples`` exists, and after ``attempts`` draws."""
    best = None
    for attempt in range(attempts):
        try:
            wave = _first_wave(generate())
        except Exception as error:   # e.g. EOS sampled first: nothing to decode
            draws.append(f'{type(error).__name__}')
            if attempt == attempts - 1 and best is None:
                raise
            retries.append(f'{type(error).__name__}: {" ".join(str(error).split())[:100]}')
            continue
        early = wave.numel() < target_samples or (bool(semantic_lengths) and semantic_lengths[-1] < target_semantic)
        draws.append('ended early' if early else 'full')
        if best is None or wave.numel() > best.numel():
            best = wave
        if not early or (best.numel() >= min_samples and _now() >= deadline):
            break
        retries.append(f'ended early ({wave.numel()} samples, {semantic_lengths[-1] if semantic_lengths else "?"} '
                       'semantic ids)')
    return best


def _first_wave(output):
    wave = output[0] if isinstance(output, (list, tuple)) else output.reshape(output.shape[0], -1)[0]
    return wave.detach().float().cpu().reshape(-1)


def _affordable_seconds(audiolm, tokenizer, codec, transformers, seconds_left: float) -> tuple[float, float]:
    """Seconds of new audio per sample that two samples can generate in ``seconds_left``, from a measured
    per-token cost (a short semantic sampling run)."""
    import torch
    with torch.no_grad():
        audiolm.semantic.generate(max_length = 4, batch_size = 1)          # warm-up
        start = _now()
        produced = audiolm.semantic.generate(max_length = 24, batch_size = 1).shape[-1]
        per_token = (_now() - start) / max(produced, 4)
    coarse, fine = transformers['coarse'], transformers['fine']
    tokens_per_second = (tokenizer.target_sample_hz / tokenizer.downsample_factor
                         + codec.target_sample_hz / codec.downsample_factor
                         * (coarse.num_coarse_quantizers + fine.num_fine_quantizers) * coarse.rq_groups)
    # longer contexts and the codec decode cost more than the measured short run: 2x margin; two samples
    affordable = max(seconds_left, 0.) / (2 * 2. * per_token * tokens_per_second)
    return float(min(MAX_CONTINUATION_SECONDS, max(0.2, affordable))), per_token


def _write_generate_config(out_dir: Path):
    text = ('# written by `audiolm demo`: `audiolm generate --audiolm THIS_FILE --out out.wav [--prime in.wav]`\n'
            '# paths are relative to this file\n'
            'codec: checkpoints/soundstream.pt\n'
            'wav2vec: {kind: spectral, path: checkpoints/semantic_tokenizer.pt}\n'
            'semantic: checkpoints/semantic.pt\n'
            'coarse: checkpoints/coarse.pt\n'
            'fine: checkpoints/fine.pt\n')
    (out_dir / 'audiolm.yaml').write_text(text)


