"""lth_nb.bench and lth_nb.bench_suite: every benchmark runs at tiny sizes and returns well-formed records (no timing asserts)."""
import json

import pytest
import torch

from lth_nb.bench import (bench_batched, bench_compact, bench_data, bench_masked, bench_sparse, bench_step_parts,
                          interleaved, machine_info, ratio_row)
from lth_nb.bench_suite import bench_openlth, format_report, main, run_all

KEYS = {'name', 'base_ms_min', 'base_ms_median', 'ms_min', 'ms_median', 'ratio_median', 'ratio_min'}


def _ok(r):
    assert KEYS <= set(r), r
    assert all(r[k] > 0 for k in KEYS - {'name'}), r
    json.dumps(r)


def test_interleaved_and_ratio_row():
    t = interleaved({'a': lambda: torch.ones(10).sum(), 'b': lambda: torch.ones(20).sum()}, steps=2, trials=3)
    assert set(t) == {'a', 'b'} and all(len(v) == 3 for v in t.values())
    _ok(ratio_row('b/a', t['a'], t['b']))


def test_machine_info():
    i = machine_info()
    assert {'when', 'machine', 'cores', 'torch', 'threads', 'device', 'loadavg'} <= set(i)


def test_bench_masked():
    rows = bench_masked(steps=1, trials=2, sizes=(16, 8, 4))
    assert len(rows) == 4 and 'hooks' in rows[-1]['name']
    for r in rows: _ok(r); assert 0 < r['density'] < 1


def test_bench_batched():
    rows = bench_batched(Ks=(1, 3), steps=1, trials=2, sizes=(16, 8, 4))
    assert [r['K'] for r in rows] == [1, 3] and rows[0]['optimizer'] in ('fused', 'foreach')
    for r in rows: _ok(r)
    assert bench_batched(Ks=(3,), steps=1, trials=2, sizes=(16, 8, 4), per_member_lr=True)[0]['optimizer'] == 'foreach'


@pytest.mark.parametrize('K', [1, 3])
def test_bench_step_parts(K):
    "Three part records on the sequential base, then the ceilings; the parts are pieces of the step, so they are cheaper."
    rows = bench_step_parts(K=K, steps=1, trials=2, sizes=(32, 16, 4), n=64)
    assert [r.get('part') for r in rows] == ['step', 'products', 'optimizer', None] and all(r['K'] == K for r in rows)
    for r in rows[:3]: _ok(r)
    c = rows[3]
    assert set(c['ceilings']) == {'speedup', 'products_optimizer', 'floor_optimizer', 'floor'} and 'note' in c
    assert c['ceilings']['floor'] > c['ceilings']['floor_optimizer'] > 0  # the optimizer's time only lowers a ceiling
    assert c['products_ms'] < c['step_ms'] and c['optimizer_ms'] < c['step_ms']
    json.dumps(rows)


def test_bench_step_parts_bad_k():
    with pytest.raises(ValueError, match='K'): bench_step_parts(K=0)


def test_bench_data(data_root):
    rows = bench_data(steps=1, trials=2, root=data_root)
    _ok(rows[0])


def test_bench_data_skips_without_mnist(tmp_path):
    assert 'skipped' in bench_data(root=tmp_path)[0]


def test_bench_compact_and_sparse():
    rows = bench_compact(rates=(0.5,), batch=8, steps=1, trials=2, sizes=(16, 12, 8, 4))
    _ok(rows[0]); assert rows[0]['memory_ratio'] < 1
    sp = bench_sparse(densities=(0.5, 0.1), shape=(16, 16), batch=4, steps=1, trials=2)
    assert len(sp['rows']) == 2 and sp['break_even_density'] in (None, 0.5, 0.1)
    for r in sp['rows']: _ok(r)


def test_bench_openlth_skips(tmp_path, monkeypatch):
    monkeypatch.delenv('OPENLTH_DIR', raising=False)
    assert 'skipped' in bench_openlth(iters=2)[0]
    assert 'skipped' in bench_openlth(iters=2, openlth_dir=tmp_path)[0]


def test_run_all_main_and_report(tmp_path, capsys):
    skip = 'masked,batched,batched_per_member_lr,data,sparse,openlth,imp_batched,imp_batched_lr_sweep'
    res = main(['--quick', '--skip', skip, '--json', str(tmp_path / 'b.json')])
    out = capsys.readouterr().out
    assert out.startswith('# ') and 'compact/dense' in out
    stored = json.loads((tmp_path / 'b.json').read_text())
    assert stored['info']['threads'] >= 1 and len(stored['compact']) == 3 and 'masked' not in stored
    assert [r.get('part') for r in stored['parts']] == ['step', 'products', 'optimizer', None] and 'ceilings' in out
    assert format_report(stored).splitlines()[0].startswith('# ')
    with pytest.raises(ValueError, match='threads'): main(['--threads', '0'])
    torch.set_num_threads(1)


def test_bench_imp_batched_lr_sweep():
    "The end-to-end comparison over a learning-rate sweep: every seed at every lr, trained both ways, one record."
    from lth_nb.bench_suite import bench_imp_batched
    from lth_nb.data import get_data
    syn = get_data('synthetic', like='mnist', n_train=300, n_val=60, n_test=60, seed=0)
    r, = bench_imp_batched('lenet300_mnist', 'ci', rounds=1, seeds=[0], lrs=(1e-3, 3e-3), data=syn,
                           train=dict(iterations=10, eval_every=10))
    _ok(r)
    assert r['lrs'] == [1e-3, 3e-3] and r['trainings'] == 2 * 3 and 'x 2 lrs' in r['name'] and 'run by run' in r['name']
    assert len(r['test_acc_sequential']) == len(r['test_acc_batched']) == 6
