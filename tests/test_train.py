"""Tests for lth_nb.train: the loop on synthetic data, one short real-MNIST run, determinism, masks, bad input."""
import json

import pytest
import torch
import torch.nn as nn

from lth_nb.data import get_data
from lth_nb.prune import magnitude_prune
from lth_nb.train import Callback, LambdaCallback, TrainConfig, TrainResult, evaluate, make_optimizer, train


def mlp(seed=0, sizes=(784, 64, 10)):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]): layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@pytest.fixture(scope='module')
def syn():
    return get_data('synthetic', like='mnist', n_train=1200, n_val=300, n_test=300, device='cpu')


def test_train_learns_and_records(syn):
    cfg = TrainConfig(iterations=200, eval_every=50)
    r = train(mlp(), syn, cfg)
    assert [h['iter'] for h in r.history] == [50, 100, 150, 200]
    assert set(r.history[0]) == {'iter', 'lr', 'train_loss', 'val_loss', 'val_acc', 'test_loss', 'test_acc'}
    best = min(r.history, key=lambda h: h['val_loss'])
    assert r.early_stop_iter == best['iter'] and r.early_stop_test_acc == best['test_acc']
    assert r.final_test_acc == r.history[-1]['test_acc'] > 0.7
    json.dumps(r.to_dict())
    assert TrainResult.from_dict(r.to_dict()).history == r.history


def test_eval_at_end_when_not_multiple(syn):
    r = train(mlp(), syn, TrainConfig(iterations=70, eval_every=30))
    assert [h['iter'] for h in r.history] == [30, 60, 70]


def test_deterministic(syn):
    cfg = TrainConfig(iterations=60, eval_every=20)
    a, b = train(mlp(0), syn, cfg), train(mlp(0), syn, cfg)
    assert a.history == b.history
    assert train(mlp(0), syn, cfg.replace(seed=3)).history != a.history


@pytest.mark.parametrize('opt', ['sgd', 'adam', 'adamw'])
def test_mask_enforced(syn, opt):
    model = mlp(0); mask = magnitude_prune(model, 0.8)
    train(model, syn, TrainConfig(iterations=30, eval_every=30, optimizer=opt, lr=0.05 if opt == 'sgd' else 1e-3,
                                  weight_decay=0.1, nesterov=opt == 'sgd'), mask=mask)
    ps = dict(model.named_parameters())
    for n, m in mask.items():
        assert (ps[n][~m] == 0).all()
        assert (ps[n][m] != 0).all()


def test_schedules():
    f = TrainConfig(iterations=100, schedule='step', milestones=(50, 75), warmup_iters=10).lr_factor(1000)
    assert abs(f(4) - 0.5) < 1e-12 and f(20) == 1 and abs(f(50) - 0.1) < 1e-12 and abs(f(99) - 0.01) < 1e-12
    c = TrainConfig(iterations=100, schedule='cosine').lr_factor(1000)
    assert c(0) == 1 and abs(c(50) - 0.5) < 1e-12
    e = TrainConfig(epochs=3, batch_size=100, schedule='step', milestone_epochs=(2,)).lr_factor(1000)
    assert e(19) == 1 and abs(e(20) - 0.1) < 1e-12
    assert TrainConfig(epochs=3, batch_size=100).total_iters(1000) == 30


def test_lr_reaches_optimizer(syn):
    class Rec(Callback):
        def before_fit(self, s): self.lrs = []
        def after_step(self, s): self.lrs.append(s.opt.param_groups[0]['lr'])
    rec = Rec()
    train(mlp(), syn, TrainConfig(optimizer='sgd', lr=0.1, iterations=20, eval_every=20, schedule='step', milestones=(10,),
                                  warmup_iters=5), callbacks=[rec])
    assert rec.lrs[0] == pytest.approx(0.02) and rec.lrs[5] == pytest.approx(0.1) and rec.lrs[10] == pytest.approx(0.01)


def test_callbacks_order_stop_and_errors(syn):
    events = []
    class Log(Callback):
        def __call__(self, event, state): events.append(event)
    train(mlp(), syn, TrainConfig(iterations=2, eval_every=2), callbacks=[Log()])
    assert events == ['before_fit', 'before_batch', 'after_loss', 'after_backward', 'after_step',
                      'before_batch', 'after_loss', 'after_backward', 'after_step', 'after_eval', 'after_fit']
    stop = LambdaCallback(after_step=lambda s: setattr(s, 'stop', s.iter >= 7))
    r = train(mlp(), syn, TrainConfig(iterations=100, eval_every=50), callbacks=[stop])
    assert r.iterations == 7 and r.history[-1]['iter'] == 7
    with pytest.raises(ValueError, match='event'): LambdaCallback(after_everything=print)
    def boom(s): raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'):
        train(mlp(), syn, TrainConfig(iterations=5, eval_every=5), callbacks=[LambdaCallback(after_step=boom)])


def test_keep_at_and_start_iter(syn):
    cfg = TrainConfig(iterations=40, eval_every=20)
    model = mlp(); r = train(model, syn, cfg, keep_at=[0, 10])
    assert sorted(r.snapshots) == [0, 10]
    assert not torch.equal(r.snapshots[0]['1.weight'], r.snapshots[10]['1.weight'])
    m2 = mlp(5); m2.load_state_dict(r.snapshots[10])
    r2 = train(m2, syn, cfg, start_iter=10)
    assert r2.start_iter == 10 and [h['iter'] for h in r2.history] == [20, 40]


def test_bad_input(syn):
    with pytest.raises(ValueError, match='iterations=0'): TrainConfig(iterations=0)
    with pytest.raises(ValueError, match='iterations=-3'): TrainConfig(iterations=-3)
    with pytest.raises(ValueError, match='epochs=-1'): TrainConfig(epochs=-1)
    with pytest.raises(ValueError, match='exactly one'): TrainConfig()
    with pytest.raises(ValueError, match='schedule'): TrainConfig(iterations=1, schedule='poly')
    with pytest.raises(ValueError, match='eval_every=0'): TrainConfig(iterations=1, eval_every=0)
    with pytest.raises(ValueError, match='start_iter=10'): train(mlp(), syn, TrainConfig(iterations=10), start_iter=10)
    with pytest.raises(ValueError, match='batch_size'): train(mlp(), syn, TrainConfig(iterations=1, batch_size=5000))


def test_fused_adam_on_cpu():
    opt = make_optimizer(mlp().parameters(), TrainConfig(iterations=1))
    assert opt.defaults.get('fused') or opt.defaults.get('foreach')


def test_real_mnist_short(data_root):
    d = get_data('mnist', root=data_root, device='cpu')
    assert len(d.x_train) == 55_000 and len(d.x_val) == 5000
    r = train(mlp(0, (784, 300, 100, 10)), d, TrainConfig(iterations=300, eval_every=100))
    loss, acc = evaluate(mlp(0), d.x_test, d.y_test)
    assert r.final_test_acc > 0.9 > acc
