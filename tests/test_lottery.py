"""Tests for lth_nb.lottery and lth_nb.baselines: IMP end to end on synthetic data, resume, controls, one-shot, pruning & fine-tuning,
bad input, determinism and one short real-MNIST run (presets: test_presets.py; imported here through lth_nb.lottery's
lazy re-export, as existing callers do)."""
import pytest
import torch

from lth_nb.core import Store
from lth_nb.baselines import one_shot, prune_finetune
from lth_nb.lottery import (LOTTERY_VERSION, PRESETS, LotteryConfig, find_runs, imp, load_data, load_round, preset,
                            preset_seeds, records, rounds_done, run_preset, summary)
from lth_nb.prune import prune_counts
from lth_nb.train import Callback, TrainConfig

SYN = dict(data='synthetic', data_kw=dict(like='mnist', n_train=600, n_val=120, n_test=120))


def small(**kw):
    d = dict(SYN, width=0.25, train=TrainConfig(iterations=40, eval_every=20), rates={'fc': 0.2, 'output': 0.1}, rounds=3)
    d.update(kw)
    return LotteryConfig(**d)


class Seen(Callback):
    def __init__(self): self.seen = []
    def before_fit(self, s): self.seen.append((s.tag.get('round'), s.tag.get('control')))


@pytest.fixture(scope='module')
def data():
    return load_data(small(), device='cpu')


def test_imp_rounds_controls_and_store(store, data):
    cfg = small(reinits=1, random_masks=1)
    run = imp(cfg, store, data=data)
    assert run.rounds() == [0, 1, 2, 3]
    meta = run.run.load('meta')
    for k in range(4):
        r = load_round(run, k)
        for n, size in meta['layer_sizes'].items():
            assert int(r['mask'][n].sum()) == prune_counts(size, meta['layer_rates'][n], k)[-1]
        w = r['final']['fc1.weight']
        assert (w[~r['mask']['fc1.weight']] == 0).all()
        assert torch.equal(r['rewind']['fc1.weight'], r['init']['fc1.weight'])
    recs = records(run)
    assert [(r['round'], r['kind']) for r in recs][:4] == [(0, 'ticket'), (1, 'ticket'), (1, 'reinit'), (1, 'random_mask')]
    assert len(recs) == 4 + 2 * 3
    for r in recs:
        assert {'kind', 'seed', 'round', 'density', 'early_stop_iter', 'early_stop_test_acc', 'final_test_acc', 'history',
                'layer_density'} <= set(r)
        assert 0 <= r['early_stop_test_acc'] <= 1
    re = load_round(run, 2, 'reinit'); rm = load_round(run, 2, 'random_mask'); t = load_round(run, 2)
    assert re['mask'].equal(t['mask']) and not torch.equal(re['init']['fc1.weight'], t['init']['fc1.weight'])
    assert rm['mask'].layer_density() == t['mask'].layer_density() and not rm['mask'].equal(t['mask'])
    assert len(summary(store, model='lenet300_100')) == len(recs)
    assert [lr.key for lr in find_runs(store)] == [run.key]
    # more rounds / controls extend the same run
    seen = Seen()
    run2 = imp(cfg.replace(rounds=4, reinits=2), store, data=data, callbacks=[seen])
    assert run2.key == run.key
    assert seen.seen == [(1, 'reinit'), (2, 'reinit'), (3, 'reinit'), (4, 'ticket'), (4, 'reinit'), (4, 'reinit'),
                         (4, 'random_mask')]


def test_resume_after_kill(tmp_path, data):
    class Killer(Callback):
        def before_fit(self, s):
            if s.tag['round'] == 2: raise RuntimeError('killed in round 2')
    cfg = small(rounds=3, reinits=1)
    st = Store(tmp_path / 'a', tensor_root=tmp_path / 'at')
    with pytest.raises(RuntimeError, match='killed'): imp(cfg, st, data=data, callbacks=[Killer()])
    assert rounds_done(st.run('imp', cfg.identity(), version=LOTTERY_VERSION)) == [0, 1]
    seen = Seen()
    run = imp(cfg, st, data=data, callbacks=[seen])
    assert seen.seen == [(2, 'ticket'), (2, 'reinit'), (3, 'ticket'), (3, 'reinit')]
    # identical to an uninterrupted run (determinism)
    ref = imp(cfg, Store(tmp_path / 'b', tensor_root=tmp_path / 'bt'), data=data)
    for k in range(4):
        assert load_round(run, k)['mask'].equal(load_round(ref, k)['mask'])
        assert run.metrics(k)['history'] == ref.metrics(k)['history']
    assert run.metrics(3, 'reinit')['history'] == ref.metrics(3, 'reinit')['history']


def test_rewind_global_exclude_strategy(store, data):
    cfg = small(rewind_iter=10, scope='global', rate=0.3, rates={'output': 0.0}, exclude=('fc2.weight',), rounds=2,
                strategy='random')
    run = imp(cfg, store, data=data)
    r = load_round(run, 2)
    assert not torch.equal(r['rewind']['fc1.weight'], r['init']['fc1.weight'])
    assert run.run.has_tensors('rewind')
    assert run.metrics(2)['start_iter'] == 10 and run.metrics(2)['history'][0]['iter'] == 20
    ld = r['mask'].layer_density()
    assert ld['fc2.weight'] == 1.0 and ld['fc3.weight'] == 1.0 and abs(ld['fc1.weight'] - 0.49) < 0.01
    e = imp(small(rewind_epochs=0.5, rounds=1), store, data=data)
    assert e.run.load('meta')['rewind_iter'] == round(0.5 * (600 // 60))


def test_one_shot_and_prune_finetune(store, data):
    cfg = small(rounds=2)
    o = one_shot(cfg, [0.5, 0.25], store, data=data)
    dens = {r['stage']: r['density'] for r in o.records()}
    assert dens['round_0'] == 1.0 and abs(dens['target_0.5000'] - 0.5) < 1e-3 and abs(dens['target_0.2500'] - 0.25) < 1e-3
    dense = imp(cfg.replace(rounds=0), store, data=data)
    assert torch.equal(o.load_round(0)['final']['fc1.weight'], dense.load_round(0)['final']['fc1.weight'])
    pf = prune_finetune(cfg, store, data=data)
    its = [(r['round'], r['iterations'], r['kind']) for r in pf.records()]
    assert its == [(0, 40, 'prune_finetune'), (1, 40, 'prune_finetune'), (2, 40, 'prune_finetune')]
    assert pf.load_round(1)['mask'].equal(imp(cfg, store, data=data).load_round(1)['mask'])   # same trained dense net
    with pytest.raises(ValueError, match='density=0'): one_shot(cfg, [0], store, data=data)
    with pytest.raises(ValueError, match='finetune_iters=-1'): prune_finetune(cfg, store, data=data, finetune_iters=-1)


def test_bad_input_before_training(store, data):
    seen = Seen()
    with pytest.raises(ValueError, match=r"preset='nope' is not allowed: expected one of \['conv2_cifar10'"): preset('nope')
    with pytest.raises(ValueError, match='tier'): preset('lenet300_mnist', 'medium')
    with pytest.raises(ValueError, match='iterations=0'): preset('lenet300_mnist', 'ci', train=dict(iterations=0))
    with pytest.raises(ValueError, match='iterations=-10'): small(train=TrainConfig(iterations=-10))
    with pytest.raises(ValueError, match='epochs=-1'): small(train=TrainConfig(epochs=-1))
    with pytest.raises(ValueError, match='rate=1.0'): small(rate=1.0)
    with pytest.raises(ValueError, match=r"rates\['output'\]=2"): small(rates={'output': 2})
    with pytest.raises(ValueError, match='rewind_iter=40'): small(rewind_iter=40)
    with pytest.raises(ValueError, match='rounds=-1'): small(rounds=-1)
    with pytest.raises(ValueError, match='rewind_iter=100'):   # epochs-based rewind beyond the budget: caught at imp
        imp(small(rewind_epochs=10), store, data=data, callbacks=[seen])
    with pytest.raises(ValueError, match='fc7.weight'):
        imp(small(rates={'fc7.weight': 0.1}), store, data=data, callbacks=[seen])
    with pytest.raises(ValueError, match='seeds'): run_preset('lenet300_mnist', 'ci', seeds=[], store=store, data=data)
    assert seen.seen == [] and all(not rounds_done(r) for r in store.runs('imp'))


def test_real_mnist_short(data_root, store):
    runs = run_preset('lenet300_mnist', 'ci', seeds=1, store=store, device='cpu', data_root=data_root, rounds=1, reinits=0,
                      train=dict(iterations=200, eval_every=100))
    recs = runs[0].records()
    assert [r['round'] for r in recs] == [0, 1] and abs(recs[1]['density'] - 0.8004) < 1e-3
    assert recs[0]['early_stop_test_acc'] > 0.9 and recs[1]['early_stop_test_acc'] > 0.9
