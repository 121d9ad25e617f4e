"""`audiolm demo` end to end on a tiny budget: it completes, stays near its budget and writes every promised file;
the audiolm.yaml it writes drives `audiolm generate`."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

MINUTES = 0.2
# every stage runs at least one step and the process imports torch first: allow a fixed overhead on a busy machine
OVERHEAD_SECONDS = 60


def test_demo_writes_every_promised_file(tmp_path):
    from audiolm_pytorch.demo import OUTPUT_FILES
    out = tmp_path / 'demo'
    script = Path(sys.executable).with_name('audiolm')
    env = dict(os.environ, OMP_NUM_THREADS = '1')
    start = time.perf_counter()
    result = subprocess.run([str(script) if script.exists() else 'audiolm', 'demo', '--minutes', str(MINUTES),
                             '--out', str(out), '--no-progress', '--cpu'],
                            capture_output = True, text = True, env = env, timeout = 600)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < MINUTES * 60 + OVERHEAD_SECONDS, f'demo took {elapsed:.0f} s for a {MINUTES} minute budget'

    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / 'data').exists() and not (out / 'train').exists()      # scratch folders are removed

    prompt, rate = sf.read(str(out / 'prompt.wav'))
    assert rate == 16000 and len(prompt) == 16000
    recon, _ = sf.read(str(out / 'prompt_reconstruction.wav'))
    assert len(recon) == len(prompt)
    continuation, _ = sf.read(str(out / 'continuation.wav'))
    # the continuation starts with the prompt's frames (decoded by the codec) and adds at least one frame
    assert len(continuation) > len(prompt) and len(continuation) % 320 == 0
    unconditional, _ = sf.read(str(out / 'unconditional.wav'))
    assert len(unconditional) > 0 and np.isfinite(unconditional).all()
    assert (out / 'demo.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    report = (out / 'report.md').read_text()
    for stage in ('soundstream', 'tokenizer', 'semantic', 'coarse', 'fine', 'generate'):
        row = re.search(rf'^\| {stage} \| (\d+) \| ([\d.]+) \|', report, flags = re.M)
        assert row is not None and int(row.group(1)) >= 1, stage
    # the stages train on crops with file_end (no EOS at crop ends) and EOS starts rare: every draw reaches the
    # requested length, and the report says how many draws there were and how many ended early
    draws = re.search(r'^- generation draws: (\d+), ended early \(before the requested length\): (\d+)$', report,
                      flags = re.M)
    assert draws is not None and int(draws.group(1)) >= 2 and int(draws.group(2)) == 0, report[:1500]
    generate_row = re.search(r'^\| generate \| (\d+) \|.*\b(\d+) of (\d+) draw\(s\) ended early', report, flags = re.M)
    assert generate_row is not None and generate_row.group(2) == '0' and generate_row.group(3) == draws.group(1)
    assert len(continuation) == len(prompt) + len(unconditional)     # both asked the same new length, and got it
    total = float(re.search(r'total wall time: ([\d.]+) s', report).group(1))
    assert total <= elapsed
    assert '"soundstream"' in report and '"model"' in report          # the configs are in the report

    # the written AudioLM config regenerates from the checkpoints (in-process: the entry point itself)
    from audiolm_pytorch.cli import main
    assert main(['generate', '--audiolm', str(out / 'audiolm.yaml'), '--prime', str(out / 'prompt.wav'),
                 '--out', str(tmp_path / 'again.wav'), '--max-length', '60', '--max-coarse-steps', '60',
                 '--device', 'cpu']) == 0
    again, rate = sf.read(str(tmp_path / 'again.wav'))
    assert rate == 16000 and len(again) >= 16000
