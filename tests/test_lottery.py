"""Tests for lth_nb.lottery: IMP end to end on synthetic data, resume, controls, one-shot, pruning & fine-tuning,
presets (CIFAR ones on synthetic CIFAR-shaped data), bad input, determinism and one short real-MNIST run."""
import pytest
import torch

from lth_nb.core import Store
from lth_nb.lottery import (LOTTERY_VERSION, PRESETS, LotteryConfig, find_runs, imp, load_data, load_round, one_shot,
                            preset, preset_seeds, prune_finetune, records, rounds_done, run_preset, summary)
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


def test_presets_tiers():
    assert set(PRESETS) >= {'lenet300_mnist', 'conv2_cifar10', 'conv4_cifar10', 'conv6_cifar10', 'resnet20_cifar10',
                            'resnet20_cifar10_lr001', 'resnet20_cifar10_warmup', 'vgg19_cifar10', 'vgg19_cifar10_lr001',
                            'vgg19_cifar10_warmup'}
    f = preset('lenet300_mnist', 'full')
    assert (f.train.optimizer, f.train.lr, f.train.batch_size, f.train.iterations, f.train.eval_every, f.val_size) == \
           ('adam', 1.2e-3, 60, 50_000, 100, 5000)
    assert f.rates == {'fc': 0.2, 'output': 0.1} and f.reinits == 3 and preset_seeds('lenet300_mnist', 'full') == [0, 1, 2, 3, 4]
    q = preset('lenet300_mnist', 'quick')
    assert (q.train.iterations, q.train.eval_every) == (4000, 200)
    for name, lr, it, conv in (('conv2', 2e-4, 20_000, 0.1), ('conv4', 3e-4, 25_000, 0.1), ('conv6', 3e-4, 30_000, 0.15)):
        c = preset(f'{name}_cifar10', 'full')
        assert (c.train.lr, c.train.iterations, c.rates['conv'], c.rates['fc'], c.rates['output']) == (lr, it, conv, 0.2, 0.1)
    r = preset('resnet20_cifar10', 'full')
    assert (r.scope, r.train.optimizer, r.train.lr, r.train.momentum, r.train.schedule, r.rates['conv'], r.rates['output']) == \
           ('global', 'sgd', 0.1, 0.9, 'step', 0.2, 0.0)
    assert preset('resnet20_cifar10_lr001', 'full').train.lr == 0.01
    assert preset('vgg19_cifar10_warmup', 'full').train.warmup_iters > 0
    # the tier is data, not code: same base
    assert preset('lenet300_mnist', 'ci').replace(train=f.train, rounds=f.rounds, reinits=3).identity() == f.identity()


@pytest.mark.parametrize('name', ['conv2_cifar10', 'conv4_cifar10', 'conv6_cifar10', 'resnet20_cifar10',
                                  'resnet20_cifar10_warmup', 'vgg19_cifar10_lr001'])
def test_cifar_presets_end_to_end_synthetic(store, name):
    kw = dict(width=0.25) if name.startswith('vgg') else {}
    runs = run_preset(name, 'ci', store=store, device='cpu', rounds=1, train=dict(iterations=2, eval_every=2, batch_size=8),
                      data_kw=dict(n_train=32, n_val=16, n_test=16), **kw)
    recs = runs[0].records()
    assert [(r['round'], r['kind']) for r in recs] == [(0, 'ticket'), (1, 'ticket'), (1, 'reinit')]
    assert recs[0]['data'] == 'synthetic' and 0.7 < recs[1]['density'] < 0.9
    ld = recs[1]['layer_density']
    if preset(name).scope == 'global':
        out = [n for n in ld if n.startswith('fc') or n.startswith('classifier')][-1]
        assert ld[out] == 1.0


def test_real_mnist_short(data_root, store):
    runs = run_preset('lenet300_mnist', 'ci', seeds=1, store=store, device='cpu', data_root=data_root, rounds=1, reinits=0,
                      train=dict(iterations=200, eval_every=100))
    recs = runs[0].records()
    assert [r['round'] for r in recs] == [0, 1] and abs(recs[1]['density'] - 0.8004) < 1e-3
    assert recs[0]['early_stop_test_acc'] > 0.9 and recs[1]['early_stop_test_acc'] > 0.9
