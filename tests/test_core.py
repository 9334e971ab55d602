"""Tests for lth_nb.core: config hashing and validation, atomic writes, the Store (round trip, resume, lock)."""
import json, os, subprocess, sys, textwrap, time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch

from lth_nb.core import (Config, Store, atomic_torch_save, atomic_write_text, cache_dir, check, config_hash, data_dir,
                         get_device, get_or_run, provenance, seed_everything)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TrainCfg(Config):
    lr: float = 0.1
    optimizer: Literal['sgd', 'adam'] = 'sgd'
    iterations: int = 100
    widths: tuple = (300, 100)

    def validate(self):
        check(self.lr > 0, 'lr', self.lr, 'lr > 0')
        check(self.iterations >= 1, 'iterations', self.iterations, 'iterations >= 1')


@dataclass
class Outer(Config):
    name: str = 'x'
    train: TrainCfg = None

    def validate(self):
        check(self.train is not None, 'train', self.train, 'a TrainCfg')


# --- devices, seeds, check -------------------------------------------------------------------------------------
def test_get_device(monkeypatch):
    assert get_device('cpu') == torch.device('cpu')
    monkeypatch.setenv('LTH_NB_DEVICE', 'cpu')
    assert get_device() == torch.device('cpu')
    assert get_device('meta') == torch.device('meta')  # argument beats the environment


def test_seed_everything():
    seed_everything(3); a = torch.rand(3)
    seed_everything(3); b = torch.rand(3)
    assert torch.equal(a, b)


def test_check_message():
    with pytest.raises(ValueError, match=r"rate=1.5 is not allowed: expected 0 <= rate < 1"):
        check(False, 'rate', 1.5, '0 <= rate < 1')
    with pytest.raises(TypeError):
        check(False, 'x', 1, 'y', TypeError)
    check(True, 'rate', 0.5, 'anything')


# --- hashes ----------------------------------------------------------------------------------------------------
def test_hash_stability():
    # pinned value: changing the canonical form would orphan every stored result
    assert config_hash({'a': 1}) == '9f89c740ceb4'
    assert config_hash({'lr': 1e-3, 'widths': (300, 100)}) == config_hash({'widths': [300, 100], 'lr': 0.001})
    assert config_hash({'a': 1}) != config_hash({'a': 2})
    assert config_hash({'a': 1}, version=1) != config_hash({'a': 1}, version=2)
    assert len(config_hash({'x': [1, 2, {'y': None}]})) == 12


def test_hash_stable_across_processes():
    code = "from lth_nb.core import config_hash; print(config_hash({'b': [1, 2], 'a': {'c': 0.5}}, version=3))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, 'PYTHONHASHSEED': '123'}).stdout.strip()
    assert out == config_hash({'a': {'c': 0.5}, 'b': (1, 2)}, version=3)


# --- Config ----------------------------------------------------------------------------------------------------
def test_config_roundtrip_and_hash():
    c = TrainCfg(lr=0.01, optimizer='adam')
    d = c.to_dict()
    assert d == {'lr': 0.01, 'optimizer': 'adam', 'iterations': 100, 'widths': [300, 100]}
    assert json.loads(json.dumps(d)) == d
    assert TrainCfg.from_dict(d) == c
    assert c.hash() == config_hash(d) and len(c.hash()) == 12
    c2 = c.replace(lr=0.02)
    assert c2.lr == 0.02 and c.lr == 0.01 and c2.hash() != c.hash()


def test_config_nested():
    o = Outer(train=TrainCfg(lr=0.5))
    d = o.to_dict()
    assert d['train']['lr'] == 0.5
    assert Outer.from_dict(d) == o


@pytest.mark.parametrize('kw, exc, msg', [
    (dict(lr=-1.0), ValueError, "lr=-1.0 is not allowed: expected lr > 0"),
    (dict(iterations=0), ValueError, "iterations=0 is not allowed: expected iterations >= 1"),
    (dict(optimizer='rmsprop'), TypeError, "optimizer='rmsprop' is not allowed: expected one of 'sgd', 'adam'"),
    (dict(lr='fast'), TypeError, "lr='fast' is not allowed: expected float"),
    (dict(iterations=1.5), TypeError, "iterations=1.5 is not allowed: expected int"),
])
def test_config_validation_errors(kw, exc, msg):
    with pytest.raises(exc, match=msg.replace('(', r'\(').replace(')', r'\)')):
        TrainCfg(**kw)


def test_config_replace_and_from_dict_validate():
    c = TrainCfg()
    with pytest.raises(ValueError, match='lr=0.0'): c.replace(lr=0.0)
    with pytest.raises(TypeError, match="field='momentum'"): c.replace(momentum=0.9)
    with pytest.raises(TypeError, match="field='mom'"): TrainCfg.from_dict({'mom': 1})


# --- paths, provenance -------------------------------------------------------------------------------------------
def test_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv('LTH_NB_CACHE', str(tmp_path / 'c'))
    monkeypatch.delenv('LTH_NB_DATA', raising=False)
    assert cache_dir() == tmp_path / 'c' and data_dir() == tmp_path / 'c' / 'data'
    monkeypatch.setenv('LTH_NB_DATA', str(tmp_path / 'd'))
    assert data_dir() == tmp_path / 'd'
    assert not (tmp_path / 'c').exists()  # nothing created


def test_provenance():
    p = provenance()
    for k in ('git_sha', 'lth_nb', 'torch', 'numpy', 'python', 'platform', 'device', 'device_name', 'torch_threads',
              'hostname', 'time'):
        assert k in p, k
    json.dumps(p)


# --- atomic writes -----------------------------------------------------------------------------------------------
def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    f = tmp_path / 'sub' / 'a.json'
    atomic_write_text(f, 'old')
    class Unsaveable:
        def __reduce__(self): raise RuntimeError('cannot pickle')
    with pytest.raises(Exception):
        atomic_torch_save({'x': Unsaveable()}, tmp_path / 'sub' / 't.pt')
    atomic_write_text(f, 'new')
    assert f.read_text() == 'new'
    assert sorted(p.name for p in f.parent.iterdir()) == ['a.json']  # no temp files left behind
    atomic_torch_save({'w': torch.ones(2)}, tmp_path / 'sub' / 't.pt')
    assert torch.equal(torch.load(tmp_path / 'sub' / 't.pt', weights_only=True)['w'], torch.ones(2))


# --- Store -------------------------------------------------------------------------------------------------------
def test_store_roundtrip(store):
    run = store.run('exp', {'lr': 0.1, 'seed': 0})
    assert run.key == config_hash({'lr': 0.1, 'seed': 0}, 1)
    assert run.path == store.root / 'exp' / run.key
    assert not run.path.exists() and store.runs() == []  # looking writes nothing
    assert not run.has('train')
    saved = run.save('train', {'acc': 0.9, 'curve': (1, 2)}, wall_s=1.5)
    meta = json.loads((run.path / 'config.json').read_text())
    assert meta['kind'] == 'exp' and meta['config'] == {'lr': 0.1, 'seed': 0} and 'provenance' in meta
    loaded = run.load('train')
    assert loaded == saved and loaded['acc'] == 0.9 and loaded['curve'] == [1, 2] and loaded['_wall_s'] == 1.5
    assert loaded['_provenance']['torch'] == torch.__version__
    run.save('count', 7)
    assert run.load('count') == 7
    # the same config (any key order, Config or dict) gives the same run; a new version a new one
    assert store.run('exp', {'seed': 0, 'lr': 0.1}).key == run.key
    assert store.run('exp', {'seed': 0, 'lr': 0.1}, version=2).key != run.key
    assert store.run('cfg', TrainCfg()).key == store.run('cfg', TrainCfg().to_dict()).key


def test_store_tensors(store):
    run = store.run('exp', {'a': 1})
    state = {'fc1.weight': torch.randn(3, 4), 'mask': torch.rand(3, 4) > 0.5}
    run.save_tensors('state', state)
    assert run.has_tensors('state') and not run.has_tensors('other')
    assert run.tensor_path == store.tensor_root / 'exp' / run.key
    back = run.load_tensors('state', map_location='cpu')
    assert torch.equal(back['fc1.weight'], state['fc1.weight']) and back['mask'].dtype == torch.bool
    with pytest.raises(FileNotFoundError, match="tensors 'other'"):
        run.load_tensors('other')


def test_stage_get_or_run(store):
    run, calls = store.run('exp', {'a': 1}), []
    def fn(): calls.append(1); return {'v': len(calls)}
    a, b = run.stage('s', fn), run.stage('s', fn)
    assert calls == [1] and a == b and a['v'] == 1
    assert a['_wall_s'] >= 0 and {'start', 'end'} <= set(a['_provenance'])
    # a fresh Store object on the same folder sees the result too
    again = Store(store.root, store.tensor_root).run('exp', {'a': 1}).stage('s', fn)
    assert calls == [1] and again == a


def test_resume_after_failure(store):
    "A multi-stage run interrupted by an exception resumes at the failed stage without redoing earlier ones."
    log = []
    def pipeline(run, fail_at=None):
        out = {}
        for name in ('train', 'prune', 'retrain', 'evaluate'):
            def fn(name=name):
                log.append(name)
                if name == fail_at: raise RuntimeError(f'killed in {name}')
                return {'stage': name}
            out[name] = run.stage(name, fn)
        return out
    run = store.run('pipe', {'seed': 0})
    with pytest.raises(RuntimeError, match='killed in retrain'):
        pipeline(run, fail_at='retrain')
    assert run.stages() == ['prune', 'train'] and not run.has('retrain')
    log.clear()
    out = pipeline(store.run('pipe', {'seed': 0}))
    assert log == ['retrain', 'evaluate']
    assert [out[k]['stage'] for k in out] == ['train', 'prune', 'retrain', 'evaluate']
    log.clear(); pipeline(run); assert log == []


def test_resume_after_kill(store, tmp_path):
    "A process killed mid-run (SIGKILL) leaves finished stages intact; the rerun computes only the rest."
    code = textwrap.dedent(f"""
        import os, signal, sys
        from lth_nb.core import Store
        run = Store({str(store.root)!r}, {str(store.tensor_root)!r}).run('killed', {{'x': 1}})
        run.stage('a', lambda: {{'a': 1}})
        def die(): os.kill(os.getpid(), signal.SIGKILL)
        run.stage('b', die)
    """)
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    run = store.run('killed', {'x': 1})
    assert run.stages() == ['a']
    assert run.stage('a', lambda: pytest.fail('recomputed a')) ['a'] == 1
    assert run.stage('b', lambda: {'b': 2})['b'] == 2


def test_get_or_run(store):
    calls = []
    def job(run):
        calls.append(run.key); run.save_tensors('w', torch.zeros(2)); return {'loss': 0.5}
    a = get_or_run(store, 'job', {'lr': 1}, job)
    b = get_or_run(store, 'job', {'lr': 1}, job)
    assert len(calls) == 1 and a == b and a['loss'] == 0.5
    get_or_run(store, 'job', {'lr': 1}, job, version=2)
    assert len(calls) == 2


def test_runs_and_find(store):
    store.run('a', {'lr': 0.1, 'seed': 0, 'model': {'width': 1}}).save('s', 1)
    store.run('a', {'lr': 0.2, 'seed': 0, 'model': {'width': 2}}).save('s', 1)
    store.run('b', {'lr': 0.1}).save_tensors('t', {'x': torch.zeros(1)})
    with store.run('c', {'lr': 0.1}).lock(): pass
    store.run('a', {'lr': 0.3})  # looked at only: not a run
    assert len(store.runs()) == 4 and len(store.runs('a')) == 2
    assert len(store.find('a', seed=0)) == 2 and len(store.find('a', lr=0.2)) == 1
    assert len(store.find('a', model__width=2)) == 1 and store.find('a', nothing=1) == []
    assert Store(store.root / 'empty').runs() == []


def test_bad_names(store):
    with pytest.raises(ValueError, match="kind='a/b' is not allowed"): store.run('a/b', {})
    run = store.run('ok', {})
    with pytest.raises(ValueError, match="stage='../x'"): run.stage('../x', dict)
    with pytest.raises(FileNotFoundError, match="stage 'missing'"): run.load('missing')


def test_lock_serialises_processes(store, tmp_path):
    "Two processes computing the same stage: the second waits on the lock, then finds the first one's result."
    flag = tmp_path / 'second_is_waiting'
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from lth_nb.core import Store
        run = Store({str(store.root)!r}, {str(store.tensor_root)!r}).run('race', {{'x': 1}})
        def slow():
            print('computing', flush=True)
            t0 = time.time()
            while not Path({str(flag)!r}).exists() and time.time() - t0 < 60: time.sleep(0.05)
            time.sleep(0.5)
            return {{'by': sys.argv[1]}}
        if sys.argv[1] == 'second': Path({str(flag)!r}).touch()
        t0 = time.time()
        print(run.stage('result', slow)['by'], round(time.time() - t0, 2), flush=True)
    """)
    p1 = subprocess.Popen([sys.executable, '-c', code, 'first'], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p1.stdout.readline().strip() == 'computing'   # p1 holds the lock now
    p2 = subprocess.Popen([sys.executable, '-c', code, 'second'], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out1, out2 = p1.communicate(timeout=120)[0], p2.communicate(timeout=120)[0]
    assert out1.split()[0] == 'first'
    by, waited = out2.split()
    assert by == 'first'                     # p2 never computed ...
    assert float(waited) >= 0.3              # ... because it waited for p1's lock
    assert store.run('race', {'x': 1}).load('result')['by'] == 'first'


def test_lock_reentrant(store):
    run = store.run('re', {})
    with run.lock():
        with run.lock():   # same process: no deadlock
            r = run.stage('s', lambda: {'ok': True})
    assert r['ok']


def test_import_is_cheap():
    code = "import sys, lth_nb.core; print(sorted(m for m in ('torchvision', 'matplotlib', 'pandas', 'seaborn', 'ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert out == '[]'
