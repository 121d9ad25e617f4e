"""The checkpoint format (``audiolm_pytorch.checkpoint``) on tiny toy modules defined here."""

import json
import logging
import os
import random
import pickle
import stat

import pytest
import torch
from torch import nn

from audiolm_pytorch.checkpoint import Checkpointable, atomic_save, read_checkpoint
from audiolm_pytorch.version import __version__


class CkptToy(Checkpointable, nn.Module):
    def __init__(self, *, dim = 4, depth = 2, mults = (1, 2), name = 'toy', **extra):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim * m, dim * m) for m in list(mults)[:depth]])
        self.extra = extra


class CkptPositional(Checkpointable, nn.Module):
    def __init__(self, dim, bias = True):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias = bias)


class CkptOuter(Checkpointable, nn.Module):
    def __init__(self, *, inner: CkptToy, scale = 1.0, others = ()):
        super().__init__()
        self.inner = inner
        self.others = nn.ModuleList(others)
        self.head = nn.Linear(1, 1)
        self.scale = scale


class CkptSub(CkptToy):
    def __init__(self, *, width = 3):
        super().__init__(dim = width, depth = 1)


class CkptTied(Checkpointable, nn.Module):
    def __init__(self, *, vocab = 5, dim = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab, bias = False)
        self.out.weight = self.embed.weight


class CkptOther(Checkpointable, nn.Module):
    def __init__(self, *, dim = 4):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))


def assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def randomize(model: nn.Module):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


# ----------------------------------------------------------------------------------------------------------
# config recording
# ----------------------------------------------------------------------------------------------------------

def test_config_records_outermost_keyword_arguments():
    toy = CkptToy(dim = 3, mults = (1, 3), custom = 'yes')
    assert toy.config == dict(dim = 3, mults = (1, 3), custom = 'yes')   # only what the caller passed
    assert toy.configs == toy.config
    toy.config['dim'] = 99
    assert toy.config['dim'] == 3                                        # a copy

    assert CkptPositional(5, bias = False).config == dict(dim = 5, bias = False)
    assert CkptSub(width = 2).config == dict(width = 2)                  # not the parent's super().__init__ args


def test_save_load_round_trip(tmp_path):
    toy = randomize(CkptToy(dim = 3, depth = 2, mults = (1, 2)))
    path = toy.save(tmp_path / 'sub' / 'toy.pt')
    assert path.is_file()

    pkg = torch.load(path, weights_only = True)                          # no pickled code anywhere
    assert pkg['format'] == 'audiolm_pytorch' and pkg['kind'] == 'CkptToy' and pkg['version'] == __version__
    assert json.loads(pkg['config']) == dict(dim = 3, depth = 2, mults = [1, 2])

    fresh = CkptToy(dim = 3, depth = 2, mults = (1, 2))
    fresh.load(path)
    assert_same_weights(toy, fresh)

    rebuilt = CkptToy.init_and_load_from(path)
    assert type(rebuilt) is CkptToy and rebuilt.config == dict(dim = 3, depth = 2, mults = [1, 2])
    assert_same_weights(toy, rebuilt)
    assert not any(p.name.endswith('.tmp') for p in path.parent.iterdir())


def test_subclass_and_positional_round_trip(tmp_path):
    sub = randomize(CkptSub(width = 2))
    rebuilt = CkptToy.init_and_load_from(sub.save(tmp_path / 'sub.pt'))   # the stored kind decides the class
    assert type(rebuilt) is CkptSub
    assert_same_weights(sub, rebuilt)

    positional = randomize(CkptPositional(6, bias = False))
    assert_same_weights(positional, CkptPositional.init_and_load_from(positional.save(tmp_path / 'pos.pt')))


def test_nested_checkpointable_config(tmp_path):
    outer = randomize(CkptOuter(inner = CkptToy(dim = 2, depth = 1), scale = 0.5,
                                others = [CkptOther(dim = 3), CkptOther(dim = 5)]))
    path = outer.save(tmp_path / 'outer.pt')
    rebuilt = CkptOuter.init_and_load_from(path)
    assert isinstance(rebuilt.inner, CkptToy) and rebuilt.inner.config == dict(dim = 2, depth = 1)
    assert [o.w.shape[0] for o in rebuilt.others] == [3, 5] and rebuilt.scale == 0.5
    assert_same_weights(outer, rebuilt)


def test_unserializable_config_fails_at_save_and_writes_nothing(tmp_path):
    toy = CkptToy(dim = 2, activation = nn.ReLU())
    with pytest.raises(TypeError, match = 'ReLU'):
        toy.save(tmp_path / 'bad.pt')
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# safetensors, EMA, kinds
# ----------------------------------------------------------------------------------------------------------

def test_safetensors_round_trip(tmp_path):
    toy = randomize(CkptToy(dim = 2, mults = [1, 2]))
    path = toy.save(tmp_path / 'toy.safetensors')
    from safetensors import safe_open
    with safe_open(str(path), framework = 'pt') as f:
        assert f.metadata()['kind'] == 'CkptToy'
    assert_same_weights(toy, CkptToy.init_and_load_from(path))
    with pytest.raises(ValueError, match = 'weights only'):
        toy.save(tmp_path / 'x.safetensors', trainer = {'step': 1})


def test_safetensors_with_tied_weights(tmp_path):
    tied = randomize(CkptTied())
    rebuilt = CkptTied.init_and_load_from(tied.save(tmp_path / 'tied.safetensors'))
    assert_same_weights(tied, rebuilt)
    assert rebuilt.out.weight is rebuilt.embed.weight


def test_prefer_ema_weights(tmp_path):
    toy = randomize(CkptToy(dim = 2, depth = 1))
    ema = randomize(CkptToy(dim = 2, depth = 1))
    path = tmp_path / 'with_ema.pt'
    atomic_save(toy.checkpoint_dict(ema_state_dict = ema.state_dict(), trainer = {'step': 7}), path)

    assert_same_weights(CkptToy.init_and_load_from(path), ema)
    assert_same_weights(CkptToy.init_and_load_from(path, prefer_ema = False), toy)
    fresh = CkptToy(dim = 2, depth = 1)
    assert fresh.load(path)['trainer'] == {'step': 7}
    assert_same_weights(fresh, ema)

    # ema_pytorch's EMA.state_dict() layout: 'ema_model.' prefix plus bookkeeping entries
    prefixed = {f'ema_model.{k}': v for k, v in ema.state_dict().items()}
    prefixed.update(initted = torch.tensor(True), step = torch.tensor(3))
    atomic_save(toy.checkpoint_dict(ema_state_dict = prefixed), path)
    assert_same_weights(CkptToy.init_and_load_from(path), ema)


def test_kind_and_config_mismatches(tmp_path, caplog):
    path = CkptToy(dim = 2).save(tmp_path / 'toy.pt')
    with pytest.raises(ValueError, match = 'CkptToy'):
        CkptOther().load(path)
    with pytest.raises(ValueError, match = 'not a CkptOther'):
        CkptOther.init_and_load_from(path)

    bigger = CkptToy(dim = 2, name = 'renamed')   # same shapes, different config: loads with a warning
    with caplog.at_level(logging.WARNING, logger = 'audiolm_pytorch.checkpoint'):
        bigger.load(path)
    assert 'name' in caplog.text

    with pytest.raises(RuntimeError):
        CkptToy(dim = 3).load(path)                # shapes differ: strict load fails loudly
    partial = CkptToy(dim = 2, depth = 3, mults = (1, 2, 1))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger = 'audiolm_pytorch.checkpoint'):
        partial.load(path, strict = False)         # a superset of the stored keys loads with strict=False
    assert 'missing keys' in caplog.text and 'layers.2.weight' in caplog.text   # and says what it skipped
    stored = read_checkpoint(path)['model']
    assert torch.equal(partial.layers[1].weight, stored['layers.1.weight'])


# ----------------------------------------------------------------------------------------------------------
# legacy and bare files
# ----------------------------------------------------------------------------------------------------------

UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return {}


class _Trap:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_legacy_lucidrains_checkpoint_loads_weights_without_unpickling_config(tmp_path):
    toy = randomize(CkptToy(dim = 2))
    path = tmp_path / 'soundstream.1000.pt'
    torch.save({'model': toy.state_dict(), 'config': pickle.dumps(_Trap()), 'version': '1.0'}, path)
    UNPICKLED.clear()

    fresh = CkptToy(dim = 2)
    fresh.load(path)
    assert_same_weights(toy, fresh)
    assert read_checkpoint(path)['config'] is None
    assert UNPICKLED == []                         # the pickled config was never executed

    with pytest.raises(ValueError, match = r'\.load\('):
        CkptToy.init_and_load_from(path)


def test_bare_state_dict_file(tmp_path):
    toy = randomize(CkptToy(dim = 2))
    torch.save(toy.state_dict(), tmp_path / 'bare.pt')
    fresh = CkptToy(dim = 2)
    fresh.load(tmp_path / 'bare.pt')
    assert_same_weights(toy, fresh)
    with pytest.raises(ValueError, match = 'no model config'):
        CkptToy.init_and_load_from(tmp_path / 'bare.pt')


# ----------------------------------------------------------------------------------------------------------
# atomic writes and broken files
# ----------------------------------------------------------------------------------------------------------

def test_atomic_save_leaves_no_temp_file_and_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / 'model.pt'
    atomic_save({'model': {'w': torch.ones(2)}}, path)
    before = path.read_bytes()

    with pytest.raises(Exception):
        atomic_save({'model': {'w': torch.zeros(2)}, 'hook': lambda: None}, path)   # lambdas cannot be saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.pt']
    assert path.read_bytes() == before

    with pytest.raises(Exception):
        atomic_save({'hook': lambda: None}, tmp_path / 'new.pt')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.pt']


_KILLED_WRITER = r"""
import os, sys, time
from pathlib import Path
import torch
from torch import nn
from audiolm_pytorch.checkpoint import Checkpointable

class KillToy(Checkpointable, nn.Module):
    def __init__(self, *, dim):
        super().__init__()
        self.w = nn.Parameter(torch.ones(dim))

where, path, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
model = KillToy(dim = 200_000)
model.save(path)                                   # the previous checkpoint: all ones
with torch.no_grad():
    model.w.fill_(2.)

def hang():
    marker.write_text('writing')
    time.sleep(600)                                # killed here by the test

if where == 'during_data':                         # half of the new file written, then stuck
    real_save = torch.save
    def slow_save(obj, f, *args, **kwargs):
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[:len(data) // 2])
        f.flush()
        hang()
    torch.save = slow_save
else:                                              # all data written, stuck before the rename
    os.fsync = lambda fd: hang()
model.save(path)
"""


@pytest.mark.parametrize('suffix, where', [('.pt', 'during_data'), ('.pt', 'before_rename'),
                                           ('.safetensors', 'before_rename')])
def test_process_killed_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, suffix, where):
    """SIGKILL while a checkpoint is being written: the path still holds the previous checkpoint, whole.
    Checked against: writing straight to the path (no temp file + rename) fails every case."""
    import signal
    import subprocess
    import sys
    import time
    path, marker = tmp_path / f'model{suffix}', tmp_path / 'marker'
    env = dict(os.environ, OMP_NUM_THREADS = '1')
    child = subprocess.Popen([sys.executable, '-c', _KILLED_WRITER, where, str(path), str(marker)], env = env,
                             stdout = subprocess.PIPE, stderr = subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, 'the writer never reached the injected stall'
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout = 60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    pkg = read_checkpoint(path)
    assert pkg['kind'] == 'KillToy' and torch.equal(pkg['model']['w'], torch.ones(200_000))
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]
    assert len(leftovers) == 1                   # the interrupted write: a temp file, never the checkpoint itself


@pytest.mark.parametrize('suffix', ['.pt', '.safetensors'])
def test_checkpoint_writes_fsync_the_file_then_the_folder(tmp_path, monkeypatch, suffix):
    """Checked against: the safetensors path without fsync (as before) and a rename without the folder fsync."""
    import stat
    real_fsync, synced = os.fsync, []

    def spy(fd):
        synced.append('folder' if stat.S_ISDIR(os.fstat(fd).st_mode) else 'file')
        return real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', spy)
    CkptToy(dim = 2).save(tmp_path / f'model{suffix}')
    assert synced == ['file', 'folder']


def test_kmeans_files_are_written_atomically(tmp_path, monkeypatch):
    import stat

    from audiolm_pytorch.semantic.kmeans import KMeans
    real_fsync, synced = os.fsync, []
    monkeypatch.setattr(os, 'fsync', lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd))[1])
    KMeans(torch.randn(4, 3)).save(tmp_path / 'km.safetensors')
    assert synced == [False, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['km.json', 'km.safetensors']


def test_corrupt_checkpoints_raise_value_error(tmp_path):
    good = CkptToy(dim = 2).save(tmp_path / 'good.pt')
    data = good.read_bytes()

    (tmp_path / 'truncated.pt').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty.pt').write_bytes(b'')
    # random bytes, also behind a pickle header: they reach the unpickler's internals (IndexError, KeyError, ...)
    rng = random.Random(0)
    for i in range(24):
        header = b'\x80\x02' if i % 2 else b''
        (tmp_path / f'random_{i}.pt').write_bytes(header + rng.randbytes(rng.choice((7, 64, 4096))))
    for name in ('truncated.pt', 'empty.pt', *(f'random_{i}.pt' for i in range(24))):
        with pytest.raises(ValueError):
            CkptToy(dim = 2).load(tmp_path / name)
        with pytest.raises(ValueError):
            CkptToy.init_and_load_from(tmp_path / name)

    torch.save(torch.ones(3), tmp_path / 'tensor.pt')
    with pytest.raises(ValueError, match = 'checkpoint dict'):
        read_checkpoint(tmp_path / 'tensor.pt')
    torch.save({'weights': [1, 2]}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match = 'no "model" entry'):
        read_checkpoint(tmp_path / 'other.pt')
    torch.save({'model': nn.Linear(2, 2)}, tmp_path / 'pickled_module.pt')  # needs code to unpickle: refused
    with pytest.raises(ValueError, match = 'not a safe checkpoint'):
        read_checkpoint(tmp_path / 'pickled_module.pt')
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / 'missing.pt')


def test_corrupt_safetensors_raises_value_error(tmp_path):
    (tmp_path / 'random.safetensors').write_bytes(os.urandom(4096))
    with pytest.raises(ValueError):
        read_checkpoint(tmp_path / 'random.safetensors')


def test_unsaveable_constructor_argument_names_the_argument(tmp_path):
    from torch import nn

    from audiolm_pytorch.checkpoint import Checkpointable

    class HoldsAModule(Checkpointable, nn.Module):
        def __init__(self, *, head):
            super().__init__()
            self.head = head

    model = HoldsAModule(head = nn.Linear(2, 2))
    with pytest.raises(TypeError, match = "argument 'head'.*Linear"):
        model.save(tmp_path / 'model.pt')
    assert not list(tmp_path.iterdir())


# ---- file permissions, module arguments, integer keys --------------------------------------------------------------

def _umask() -> int:
    from audiolm_pytorch.checkpoint import _current_umask
    return _current_umask()


def test_atomic_writes_give_ordinary_file_permissions(tmp_path):
    from audiolm_pytorch import SpectralKmeansTokenizer
    from audiolm_pytorch.checkpoint import atomic_save
    expected = 0o666 & ~_umask()
    model = SpectralKmeansTokenizer(codebook_size = 4, n_mels = 8)
    for path in (atomic_save({'model': {}}, tmp_path / 'a.pt'), model.save(tmp_path / 'm.pt'),
                 model.save(tmp_path / 'm.safetensors')):
        assert stat.S_IMODE(os.stat(path).st_mode) == expected, path

    existing = tmp_path / 'shared.pt'
    existing.write_bytes(b'old')
    os.chmod(existing, 0o640)                     # overwriting keeps the file's own permissions
    model.save(existing)
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640
    assert SpectralKmeansTokenizer.init_and_load_from(existing).codebook_size == 4


class ModuleArgumentToy(Checkpointable, nn.Module):
    def __init__(self, *, dim = 2, activation = None, table = None):
        super().__init__()
        self.proj = nn.Linear(dim, dim)


def test_model_with_a_module_argument_can_still_load_weights(tmp_path):
    saved = ModuleArgumentToy(dim = 3)
    with torch.no_grad():
        saved.proj.weight.normal_()
    path = saved.save(tmp_path / 'toy.pt')
    custom = ModuleArgumentToy(dim = 3, activation = nn.ReLU())     # cannot be saved (TypeError), but must load
    custom.load(path)
    assert torch.equal(custom.proj.weight, saved.proj.weight)
    with pytest.raises(TypeError, match = 'activation'):
        custom.save(tmp_path / 'custom.pt')


def test_integer_dict_keys_fail_at_save_instead_of_becoming_strings(tmp_path):
    model = ModuleArgumentToy(table = {1: 'a', 2: 'b'})
    with pytest.raises(TypeError, match = "'table'.*keys must be strings"):
        model.save(tmp_path / 'toy.pt')
    assert not list(tmp_path.iterdir())
    rebuilt = ModuleArgumentToy.init_and_load_from(ModuleArgumentToy(table = {'x': [1, 2]}).save(tmp_path / 'ok.pt'))
    assert rebuilt.config['table'] == {'x': [1, 2]}
