"""StackedModel: K models of any buffer-free architecture as one vmapped module; imp_batched on conv nets."""
import pytest
import torch
import torch.nn as nn

from lth_nb.batched import StackedMLP, evaluate_stacked, train_stacked
from lth_nb.optim import StackedAdam
from lth_nb.data import get_data
from lth_nb.models import get_model
from lth_nb.prune import magnitude_prune, random_prune
from lth_nb.stacked import StackedModel, stack_models
from lth_nb.train import TrainConfig, train

from _helpers import close_bulk


@pytest.fixture(scope='module')
def synth():
    return get_data('synthetic', like='mnist', n_train=400, n_val=100, n_test=100, seed=0, device='cpu')


@pytest.mark.parametrize('name,kw', [('lenet5', {}), ('conv2', dict(in_shape=(1, 28, 28), width=0.125)),
                                     ('lenet300_100', dict(width=0.5))])
@pytest.mark.parametrize('K', [1, 3])
def test_forward_equals_members(name, kw, K):
    models = [get_model(name, seed=s, **kw) for s in range(K)]
    net = StackedModel(models)
    x = torch.randn(K, 5, 1, 28, 28)
    torch.testing.assert_close(net(x), torch.stack([m(x[k]) for k, m in enumerate(models)]), rtol=1e-5, atol=1e-5)
    for k in range(K):
        back = get_model(name, seed=100, **kw); back.load_state_dict(net.member_state_dict(k))
        torch.testing.assert_close(back(x[k]), models[k](x[k]))


def test_stack_models_picks_the_fast_mlp_path():
    assert isinstance(stack_models([get_model('lenet300_100', seed=s) for s in range(2)]), StackedMLP)
    assert isinstance(stack_models([get_model('lenet5', seed=s) for s in range(2)]), StackedModel)


@pytest.mark.parametrize('optimizer', ['adam', 'sgd'])
def test_train_equals_sequential_and_masks_hold(optimizer, synth):
    cfg = TrainConfig(optimizer=optimizer, lr=1e-3 if optimizer == 'adam' else 0.05, iterations=20, eval_every=10, batch_size=32)
    inits = [get_model('lenet5', seed=30 + k) for k in range(2)]
    masks = [magnitude_prune(m, 0.6, rates={'output': 0.3}) for m in inits]
    net = StackedModel(inits)
    res = train_stacked(net, synth, cfg, masks=masks)
    for k in range(2):
        ref = get_model('lenet5', seed=30 + k)
        r = train(ref, synth, cfg.replace(seed=k), mask=masks[k])
        sd = net.member_state_dict(k)
        for n, p in ref.state_dict().items(): close_bulk(sd[n], p)  # grouped-conv rounding, amplified by Adam
        for n, m in masks[k].items(): assert (sd[n][~m] == 0).all()
        assert abs(res[k].history[-1]['val_loss'] - r.history[-1]['val_loss']) < 1e-3


def test_per_member_lr_and_evaluate(synth):
    net = StackedModel([get_model('lenet5', seed=1) for _ in range(3)])
    cfg = TrainConfig(iterations=10, eval_every=10, batch_size=32)
    res = train_stacked(net, synth, cfg, lrs=[0.0, 1e-3, 1e-2], seeds=[0, 0, 0])
    loss, acc = evaluate_stacked(net, synth.x_test, synth.y_test)
    assert loss.shape == acc.shape == (3,)
    ref = get_model('lenet5', seed=1)  # lr 0: member 0 did not move
    for n, p in ref.state_dict().items(): torch.testing.assert_close(net.member_state_dict(0)[n], p)
    assert float((net.member_state_dict(2)['conv1.weight'] - ref.conv1.weight).abs().max()) > \
           float((net.member_state_dict(1)['conv1.weight'] - ref.conv1.weight).abs().max())


def test_bad_inputs():
    with pytest.raises(ValueError, match='at least one'): StackedModel([])
    with pytest.raises(ValueError, match='names/shapes'): StackedModel([get_model('lenet5', seed=0), get_model('lenet300_100', seed=0)])
    with pytest.raises(ValueError, match='without buffers'): StackedModel([nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))])
    with pytest.raises(ValueError, match='k'): StackedModel([get_model('lenet5', seed=0)]).member_state_dict(1)


def test_imp_batched_on_a_conv_net(tmp_path):
    "imp_batched runs LeNet-5 through StackedModel and writes what imp writes; results agree within tolerance."
    from lth_nb.batched import imp_batched
    from lth_nb.core import Store
    from lth_nb.lottery import LotteryConfig, imp, load_data
    cfg = LotteryConfig(model='lenet5', data='synthetic', data_kw=dict(like='mnist', n_train=300, n_val=60, n_test=60),
                        train=TrainConfig(iterations=12, eval_every=6, batch_size=32), rate=0.3, rounds=1, reinits=1)
    data = load_data(cfg, device='cpu')
    sa, sb = Store(tmp_path / 'a', tensor_root=tmp_path / 'ta'), Store(tmp_path / 'b', tensor_root=tmp_path / 'tb')
    seq = [imp(cfg.replace(seed=s), sa, data=data) for s in (0, 1)]
    bat = imp_batched([cfg.replace(seed=s) for s in (0, 1)], sb, data=data)
    for a, b in zip(seq, bat):
        ra, rb = a.records(), b.records()
        assert [(r['stage'], r['density']) for r in ra] == [(r['stage'], r['density']) for r in rb]
        for x, y in zip(ra, rb): assert abs(x['final_test_acc'] - y['final_test_acc']) < 0.05
