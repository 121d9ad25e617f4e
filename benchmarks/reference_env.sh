#!/usr/bin/env bash
# Create (or complete) the virtualenv holding the reference implementation, for side-by-side benchmarks.
#
#   benchmarks/reference_env.sh [VENV_DIR]        (default: /work/venv-ref, or $REFERENCE_VENV)
#
# Installs torch 2.11 / torchaudio 2.11 and the reference packages audiolm-pytorch 2.4.0, soundstorm-pytorch 0.6.1,
# musiclm-pytorch 0.2.8. audiolm-pytorch declares fairseq as a dependency, which does not build on Python 3.11, so
# the reference packages are installed with --no-deps and then every declared requirement except fairseq is
# installed. An existing venv is reused (only what is missing gets installed). Import the reference afterwards
# through benchmarks/reference_shim.py (empty fairseq package, torchaudio I/O through soundfile, no model hub).
set -euo pipefail

VENV="${1:-${REFERENCE_VENV:-/work/venv-ref}}"
PY="${PYTHON:-python3.11}"
REF_PACKAGES="audiolm-pytorch==2.4.0 soundstorm-pytorch==0.6.1 musiclm-pytorch==0.2.8"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

$PIP install --quiet torch==2.11.0 torchaudio==2.11.0
# The reference packages (and spear-tts-pytorch, which soundstorm needs and which itself requires audiolm-pytorch)
# are installed with --no-deps *after* their own requirements, so pip's resolver never sees audiolm-pytorch's
# fairseq requirement.
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
$PIP download --quiet --no-deps --dest "$WHEELS" $REF_PACKAGES spear-tts-pytorch
REQS=$(cd "$WHEELS" && "$VENV/bin/python" - <<'PYEOF'
import glob, re, zipfile
from email.parser import Parser
skip = {'fairseq', 'torch', 'torchaudio', 'audiolm-pytorch', 'soundstorm-pytorch', 'musiclm-pytorch', 'spear-tts-pytorch'}
out = set()
for wheel in glob.glob('*.whl'):
    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode())
    for req in meta.get_all('Requires-Dist') or ():
        if 'extra ==' in req:
            continue
        req = req.split(';')[0].replace(' ', '')
        name = re.split(r'[<>=!~\[(]', req, maxsplit = 1)[0].lower().replace('_', '-')
        if name not in skip:
            out.add(req)
print(' '.join(sorted(out)))
PYEOF
)
echo "reference requirements (fairseq skipped): $REQS"
# soundfile + numpy for the shim's audio I/O and the shared metric code
$PIP install --quiet $REQS soundfile numpy "torch==2.11.0" "torchaudio==2.11.0"
$PIP install --quiet --no-deps "$WHEELS"/*.whl

"$VENV/bin/python" -c "import torch, torchaudio; print('reference venv ready:', '$VENV', 'torch', torch.__version__)"
