"""The codec stage of ``audiolm demo`` under variants, at equal steps: held-out reconstruction per step and CPU time.

Trains ``DEFAULT_CONFIG['soundstream']`` (model + trainer, JSON overrides merged in) on the demo's training clips
with the demo's trainer, one thread, and scores the held-out prompt clip as the demo does (tokenize -> decode,
``codecs/metrics.py``): its first second (the demo's prompt) and the whole clip. One JSON line per evaluation.

    python benchmarks/demo_codec_probe.py --steps 600 --tag nodisc --model '{"stft_discriminator": false}'
    python benchmarks/demo_codec_probe.py --steps 600 --tag base --model '{"stft_discriminator": {...}}' \
        --trainer '{"apply_grad_penalty_every": 4}'

The demo's codec reads and writes spectra (``DEMO_CODEC_SPECTRAL``); its waveform-conv codec of before is

    python benchmarks/demo_codec_probe.py --tag conv --trainer '{"lr": 1e-3}' --model '{"channels": 8,
        "stft_encoder_hop": null, "stft_encoder_n_fft": null, "istft_decoder_hop": null, "istft_decoder_n_fft": null}'

Options: ``--extra-clips`` adds clips from ``tests/assets`` to the training folder; ``--tied-upsampling`` re-draws
every decoder transposed conv so all output phases share one kernel (ICNR, Aitken et al. 2017: no checkerboard
tones at step 0). Results: benchmarks/RESULTS.md "The demo's codec" and "A spectral front end and head for small
codecs".
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def tie_upsampling_phases(decoder):
    """ICNR-style init: kernel tap ``k`` of each transposed conv equals tap ``k // stride`` of a smaller random kernel."""
    import torch
    from torch import nn
    from audiolm_pytorch.codecs.soundstream_blocks import _set_weight
    with torch.no_grad():
        for module in decoder.modules():
            if isinstance(module, nn.ConvTranspose1d):
                stride, kernel = module.stride[0], module.kernel_size[0]
                blocks = -(-kernel // stride)
                small = torch.randn(*module.weight.shape[:2], blocks) / math.sqrt(module.in_channels * blocks)
                _set_weight(module, small.repeat_interleave(stride, dim = -1)[..., :kernel])


def main():
    parser = argparse.ArgumentParser(description = __doc__, formatter_class = argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type = int, default = 600)
    parser.add_argument('--eval', default = '100,200,300,400,500,600', help = 'comma list of steps to score')
    parser.add_argument('--model', default = '{}', help = "JSON merged into DEFAULT_CONFIG['soundstream']['model']")
    parser.add_argument('--trainer', default = '{}', help = "JSON merged into DEFAULT_CONFIG['soundstream']['trainer']")
    parser.add_argument('--extra-clips', default = '', help = 'comma list of tests/assets files to train on as well')
    parser.add_argument('--tied-upsampling', action = 'store_true')
    parser.add_argument('--seed', type = int, default = 0)
    parser.add_argument('--tag', default = '')
    parser.add_argument('--out', type = Path, default = REPO_ROOT / 'results' / 'demo_codec' / 'probe.jsonl')
    parser.add_argument('--save-wav', type = Path, default = None, help = 'write the last whole-clip reconstruction')
    args = parser.parse_args()

    import numpy as np
    import torch
    torch.set_num_threads(1)
    from audiolm_pytorch.audio import load_audio, save_audio
    from audiolm_pytorch.codecs.metrics import log_mel_l1, si_sdr
    from audiolm_pytorch.demo import _TRAINER_FIXED, ASSETS, _copy_clips, _merge, _without_periodic_results
    from audiolm_pytorch.demo_config import DEFAULT_CONFIG, PROMPT_CLIP, PROMPT_SECONDS, TRAIN_CLIPS
    from audiolm_pytorch.stages import model_class, trainer_class

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    cfg = copy.deepcopy(DEFAULT_CONFIG['soundstream'])
    _merge(cfg['model'], json.loads(args.model))
    _merge(cfg['trainer'], json.loads(args.trainer))
    work = Path(tempfile.mkdtemp())
    data = _copy_clips(work / 'data', TRAIN_CLIPS)
    for name in filter(None, args.extra_clips.split(',')):
        shutil.copyfile(REPO_ROOT / 'tests' / 'assets' / name, data / name)
    codec = model_class('soundstream')(**cfg['model'])
    if args.tied_upsampling:
        tie_upsampling_phases(codec.decoder)
    trainer = _without_periodic_results(trainer_class('soundstream'))(
        codec, folder = data, results_folder = work / 'results', accelerate_kwargs = dict(cpu = True),
        **_TRAINER_FIXED, **cfg['trainer'])

    hop, sample_hz = codec.downsample_factor, codec.target_sample_hz
    clip = load_audio(ASSETS / PROMPT_CLIP, target_sample_hz = sample_hz).wave
    clip = clip[:, :clip.shape[-1] // hop * hop]
    prompt = clip[:, :int(PROMPT_SECONDS * sample_hz) // hop * hop]
    evals = {int(step) for step in args.eval.split(',')}
    args.out.parent.mkdir(parents = True, exist_ok = True)
    cpu = 0.
    try:
        for step in range(1, args.steps + 1):
            start = time.thread_time()
            trainer.train_step()
            cpu += time.thread_time() - start
            if step not in evals and step != args.steps:
                continue
            codec.eval()
            scores = {}
            with torch.no_grad():
                for name, wave in (('prompt', prompt), ('clip', clip)):
                    recon = codec.decode_from_codebook_indices(codec.tokenize(wave)).reshape(-1)
                    scores[f'{name}_log_mel_l1'] = round(log_mel_l1(wave[0], recon, sample_hz), 3)
                    scores[f'{name}_si_sdr'] = round(si_sdr(wave[0], recon), 2)
            codec.train()
            line = dict(tag = args.tag, step = step, cpu_s = round(cpu, 1), **scores, model = json.loads(args.model),
                        trainer = json.loads(args.trainer), extra_clips = args.extra_clips,
                        tied_upsampling = args.tied_upsampling, seed = args.seed)
            print(json.dumps(line), flush = True)
            with open(args.out, 'a') as file:
                file.write(json.dumps(line) + '\n')
        if args.save_wav is not None:
            save_audio(args.save_wav, recon, sample_hz)
    finally:
        shutil.rmtree(work, ignore_errors = True)


if __name__ == '__main__':
    main()
