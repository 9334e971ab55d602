"""lth_nb.widgets and lth_nb.browsers: the widgets' callbacks as plain functions, on tiny synthetic IMP runs (no browser)."""
import os
os.environ.setdefault('MPLBACKEND', 'Agg')

import pytest
import torch

from lth_nb.core import Store
from lth_nb.lottery import imp, load_round
from lth_nb.widgets import (IMPExplorer, ProgressCallback, explorer_config, missing_trainings, planned_trainings,
                            preset_for, round_lr, stored_run)
from lth_nb.browsers import CorrelationBrowser, RunBrowser, correlation_view, lr_groups, round_view, run_rp, ticket_gap

TINY = dict(data_kw=dict(n_train=300, n_val=60, n_test=100), val_size=60,
            train=dict(iterations=12, eval_every=4, batch_size=50))


def tiny_cfg(lr=3e-3, seed=0, rate=0.5, rounds=2):
    return explorer_config('lenet300_100', 'synthetic', rate=rate, lr=lr, rounds=rounds, seed=seed, **TINY)


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
    "A store with IMP runs at two learning rates x two seeds (2 rounds, 1 reinit each)."
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('widgets')
    store = Store(root / 'runs', tensor_root=root / 'tensors')
    runs = {(lr, s): imp(tiny_cfg(lr, s), store) for lr in (3e-4, 3e-2) for s in (0, 1)}
    return store, runs


def test_explorer_config():
    c = explorer_config('lenet300_100', 'mnist', rate=0.4, lr=1.23456e-3, tier='ci')
    assert c.rates == {'fc': 0.4, 'output': 0.2} and c.rate == 0.4
    assert c.train.lr == 1.23e-3 and c.reinits >= 1 and c.model == 'lenet300_100' and c.data == 'mnist'
    assert round_lr(10 ** -2.5) == 0.00316
    assert preset_for('conv2', 'fashion_mnist') == 'conv2_fashion_mnist'
    assert preset_for('conv2', 'mnist') == 'conv2_cifar10'
    s = explorer_config('conv2', 'synthetic', rate=0.2)
    assert s.data == 'synthetic' and s.data_kw['like'] == 'cifar10'
    assert s.rates['conv'] == pytest.approx(0.1)   # conv keeps its ratio to the base rate
    r = explorer_config('resnet20', 'cifar10', rate=0.4, tier='ci')
    assert r.rates['fc'] == 0.0 and r.rates['output'] == 0.0   # never-pruned layers stay unpruned
    assert tiny_cfg().train.iterations == 12 and tiny_cfg().data_kw['n_train'] == 300


@pytest.mark.parametrize('kw, msg', [(dict(rate=1.0), 'rate=1.0 is not allowed'), (dict(rate=0), 'rate=0'),
                                     (dict(lr=-1.0), 'lr=-1.0'), (dict(model='mlp'), "model='mlp'"),
                                     (dict(data='imagenet'), "data='imagenet'"), (dict(tier='huge'), "tier='huge'"),
                                     (dict(rounds=-1), 'rounds=-1')])
def test_explorer_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg): explorer_config(**kw)


def test_store_lookup(sweep):
    store, runs = sweep
    cfg = tiny_cfg(3e-4, 0)
    assert planned_trainings(cfg) == ['round_0', 'round_1', 'round_1_reinit_0', 'round_2', 'round_2_reinit_0']
    found = stored_run(cfg, store)
    assert found.key == runs[(3e-4, 0)].key and missing_trainings(cfg, found) == []
    more = cfg.replace(rounds=3)   # more rounds extend the same stored run
    assert stored_run(more, store).key == found.key
    assert missing_trainings(more, found) == ['round_3', 'round_3_reinit_0']
    other = tiny_cfg(1e-3, 0)
    n = len(list((store.root / 'imp').iterdir()))
    assert stored_run(other, store) is None and missing_trainings(other) == planned_trainings(other)
    assert len(list((store.root / 'imp').iterdir())) == n, 'a lookup creates nothing'


def test_progress_callback(store):
    seen = []
    imp(tiny_cfg(rounds=1), store, callbacks=[ProgressCallback(3, lambda f, tag: seen.append((f, tag['round'])))])
    fr = [f for f, _ in seen]
    assert fr[0] == 0 and fr[-1] == 1.0 and all(a <= b for a, b in zip(fr, fr[1:]))
    assert {k for _, k in seen} == {0, 1}
    assert len(seen) <= 3 * 101 + 3


def test_explorer_shows_stored_then_runs(sweep, tmp_path):
    store, runs = sweep
    ex = IMPExplorer(store, 'lenet300_100', 'synthetic', rate=0.5, lr=3e-4, rounds=2, **TINY)
    assert ex.shown == (runs[(3e-4, 0)].key, 5), 'a stored setting appears at once'
    assert ex.w_progress.value == 1 and 'stored' in ex.w_status.value and len(ex.fig.axes) == 3
    ex.w_lr.value = 3e-2
    assert ex.shown == (runs[(3e-2, 0)].key, 5)
    # an unstored setting: nothing drawn, status says what Run would train; run() trains, stores and draws it
    st2 = Store(tmp_path / 'runs', tensor_root=tmp_path / 'tensors')
    ex2 = IMPExplorer(st2, 'lenet300_100', 'synthetic', rate=0.5, lr=3e-3, rounds=1, **TINY)
    assert ex2.shown is None and 'click Run' in ex2.w_status.value and ex2.w_progress.value == 0
    res = ex2.run()
    assert ex2.error is None and ex2.shown == (res.key, 3) and ex2.w_progress.value == 1
    assert missing_trainings(ex2.config(), stored_run(ex2.config(), st2)) == []
    ex2.w_rounds.value = 2
    assert '3/5 trainings stored' in ex2.w_status.value and ex2.shown == (res.key, 3)  # partial run shown
    # a preset change resets lr and rounds to the preset's
    ex2.w_model.value = 'conv2'
    assert ex2.config().model == 'conv2' and ex2.w_lr.value == pytest.approx(2e-4) and ex2.shown is None


def test_explorer_run_error_is_shown(store, monkeypatch):
    import lth_nb.widgets as wmod
    def boom(*a, **k): raise RuntimeError('no data here')
    monkeypatch.setattr(wmod, 'imp', boom)
    ex = IMPExplorer(store, 'lenet300_100', 'synthetic', rate=0.5, lr=3e-3, rounds=1, **TINY)
    assert ex.run() is None and isinstance(ex.error, RuntimeError)
    assert 'no data here' in ex.w_status.value and not ex.w_run.disabled


def test_round_view_and_browser(sweep):
    store, runs = sweep
    run = runs[(3e-4, 0)]
    v = round_view(run, 2)
    assert v['first_layer'] == 'fc1.weight' and v['mask_image'].shape == (300, 784)
    assert v['mask_image'].mean() == pytest.approx(v['layer_density']['fc1.weight'])
    assert v['layer_density']['fc1.weight'] == pytest.approx(0.25, abs=0.01)
    m = load_round(run, 2)['mask']
    assert v['weights']['fc2.weight'][1].numel() == int(m['fc2.weight'].sum())
    with pytest.raises(ValueError, match='round=7'): round_view(run, 7)
    rb = RunBrowser(store, model='lenet300_100')
    assert len(rb.w_run.options) == 4 and rb.w_round.max == 2 and rb.view['round'] == 0
    rb.w_round.value = 1
    assert rb.view['round'] == 1 and rb.view['density'] < 1 and len(rb.fig.axes) == 3
    # without tensors: densities only
    bare = Store(store.root, tensor_root=store.root / 'elsewhere')
    rb2 = RunBrowser(bare)
    assert rb2.view['weights'] is None and 'densities only' in rb2.w_status.value


def test_correlation_sweep(sweep):
    store, runs = sweep
    g = lr_groups(store, rate=0.5)
    assert list(g) == [3e-4, 3e-2] and all(len(v) == 2 for v in g.values())
    views = [correlation_view(rs) for rs in g.values()]
    assert all(v['n_rp'] == 2 for v in views)
    assert views[0]['rp'][-1] == pytest.approx(1.0)   # p = 1 selects every weight
    assert views[0]['rp'][2] > views[1]['rp'][2]      # larger lr: theta_T forgets theta_0
    gap = ticket_gap(g[3e-4])
    assert [o['round'] for o in gap] == [1, 2] and all(o['n'] == 2 for o in gap)
    tick = {r.key: r.load('round_1')['early_stop_test_acc'] for r in g[3e-4]}
    rein = {r.key: r.load('round_1_reinit_0')['early_stop_test_acc'] for r in g[3e-4]}
    assert gap[0]['gap'] == pytest.approx(sum(tick[k] - rein[k] for k in rein) / 2)
    with pytest.raises(ValueError, match='single learning rate'): correlation_view(g[3e-4] + g[3e-2])
    cb = CorrelationBrowser(store, rate=0.5)
    assert cb.view['lr'] == 3e-4
    cb.w_lr.value = 3e-2
    assert cb.view['lr'] == 3e-2 and 'R_0.2' in cb.w_status.value and len(cb.fig.axes) == 4


def test_rp_from_stored_correlation_result(sweep):
    "Without the tensors, R_p comes from a stored weight_correlation result that names the run."
    store, runs = sweep
    bare = Store(store.root, tensor_root=store.root / 'no_tensors')
    run = [r for r in bare.runs('imp') if r.key == runs[(3e-2, 1)].key][0]
    assert run_rp(run) is None
    ps = (0.1, 0.5, 1.0)
    wc = bare.run('weight_correlation', dict(source_kind='imp', source_key=run.key))
    wc.save('result', dict(rp=[dict(p=p, overall=0.5 + p / 4, chance=p) for p in ps]))
    got = run_rp(run, ps)
    assert [o['overall'] for o in got] == [0.525, 0.625, 0.75]
    assert run_rp(run, (0.3,)) is None   # p values not stored
    other = [r for r in bare.runs('imp') if r.key != run.key][0]   # a diverged network stores rp=None: no curve
    bare.run('weight_correlation', dict(source_kind='imp', source_key=other.key)).save('result', dict(rp=None))
    assert run_rp(other, ps) is None


def test_empty_store(store):
    assert RunBrowser(store).view is None
    cb = CorrelationBrowser(store)
    assert cb.view is None and 'no stored imp runs' in cb.w_status.value
