"""examples/quickstart.ipynb executes top to bottom (nbclient), so it cannot rot."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / 'examples' / 'quickstart.ipynb'


def _kernel_name() -> str:
    """The python3 kernel (jupyter_client runs it with this interpreter), or skip when there is none."""
    pytest.importorskip('ipykernel', reason = 'ipykernel is not installed: no Jupyter kernel to run the notebook')
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec('python3')
    except NoSuchKernel:
        pytest.skip('no "python3" Jupyter kernel spec is registered (python -m ipykernel install --user)')
    return 'python3'


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    kernel = _kernel_name()
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    notebook = nbformat.read(NOTEBOOK, as_version = 4)
    client = nbclient.NotebookClient(notebook, kernel_name = kernel, timeout = 300,
                                     resources = {'metadata': {'path': str(tmp_path)}})
    client.execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == 'code' for out in cell.get('outputs', [])]
    assert not [out for out in outputs if out.get('output_type') == 'error']
    text = ''.join(out.get('text', '') for out in outputs if out.get('output_type') == 'stream')
    for stage in ('semantic: loss', 'coarse: loss', 'fine: loss', 'continuation:', 'unconditional:'):
        assert stage in text
    for name in ('continuation.wav', 'unconditional.wav'):
        assert (tmp_path / 'quickstart_out' / name).stat().st_size > 44
    assert any('image/png' in out.get('data', {}) for out in outputs)
