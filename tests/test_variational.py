"""Tests for lth_nb.variational (Bernoulli gates, the DisARM estimator, unit removal, compaction) and
lth_nb.gate_training (the ELBO, training)."""
import itertools, math, time, types
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from lth_nb.variational import BernoulliGate, GatedNet, disarm_grad
from lth_nb.gate_training import (VariationalConfig, train_gated, elbo_terms, spike_slab_log_prior, optimal_lambda,
                                  bernoulli_kl, gate_report, count_weights)
from lth_nb.models import get_model


def _set_p(net, fn):
    with torch.no_grad():
        for g in net.gates: g.logit.copy_(fn(g))


def test_gate_p1_leaves_net_unchanged():
    torch.manual_seed(0)
    for name, inputs in [('lenet300_100', True), ('lenet5', False)]:
        m = get_model(name, seed=0)
        net = GatedNet(m, gate_inputs=inputs)
        _set_p(net, lambda g: torch.full_like(g.logit, 60.))   # p = 1
        x = torch.randn(6, 1, 28, 28)
        for mode in ('sample', 'map', 'mean'):
            net.set_mode(mode)
            assert torch.allclose(net(x), m(x), atol=1e-5), (name, mode)


def test_gate_p0_unit_contributes_nothing():
    torch.manual_seed(0)
    net = GatedNet(get_model('lenet300_100', seed=0))
    _set_p(net, lambda g: torch.where(torch.arange(g.logit.numel()) == 7, -60., 60.))   # unit 7 of fc1 and fc2 off
    net.set_mode('sample')
    x = torch.randn(5, 1, 28, 28)
    before = net(x)
    fc1, fc2 = net.body[1], net.body[4]
    with torch.no_grad():
        fc1.weight[7].normal_(0, 10.); fc1.bias[7] = 100.; fc2.weight[:, 7].normal_(0, 10.)
    assert torch.equal(net(x), before)


def _exact_grad(net, x, y):
    gates = net.gates; sizes = [g.logit.numel() for g in gates]; E = 0
    for bits in itertools.product([0., 1.], repeat=sum(sizes)):
        zs = torch.tensor(bits).split(sizes)
        prob = math.prod((g.p * z + (1 - g.p) * (1 - z)).prod() for g, z in zip(gates, zs))
        h, k = x, 0
        for m in net.body:
            if isinstance(m, BernoulliGate): h = h * zs[k]; k += 1
            else: h = m(h)
        E = E + prob * F.cross_entropy(h, y)
    return torch.cat(torch.autograd.grad(E, [g.logit for g in gates]))


@pytest.mark.parametrize('seed', [0, 1])
def test_disarm_agrees_with_exact_enumeration(seed):
    torch.manual_seed(seed)
    tiny = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        for p in tiny.parameters(): p.mul_(4)
    net = GatedNet(tiny, in_shape=(3,), gate_inputs=True, init_p=0.5)
    _set_p(net, lambda g: torch.randn(g.logit.shape))
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    exact = _exact_grad(net, x, y)
    M = 40000
    net.set_mode('pair'); xr, yr = x.repeat(M, 1), y.repeat(M)
    with torch.no_grad():
        losses = F.cross_entropy(net(torch.cat([xr, xr])), torch.cat([yr, yr]), reduction='none')
        est = torch.cat([disarm_grad(g, losses) for g in net.gates])
        per = torch.cat([0.5 * (losses[:M * 4] - losses[M * 4:])[:, None] * (1 - 2 * g.last[1])
                         * (g.last[0] != g.last[1]).float() * torch.sigmoid(g.logit.abs()) for g in net.gates], 1)
    se = per.std(0) / len(per) ** 0.5
    assert torch.allclose(per.mean(0), est, atol=1e-6)
    assert ((est - exact).abs() <= 4.5 * se + 1e-4).all(), (est, exact, se)
    # a biased estimator (straight-through: dL/dz at the sample, times dp/dphi) fails the same check somewhere
    assert exact.abs().max() > 1e-3


def test_disarm_1d_expectation_is_exact():
    "For f(1)=1, f(0)=0 the DisARM estimate averages to p(1-p)."
    g = BernoulliGate(1, init_p=0.7); g.mode = 'pair'
    torch.manual_seed(0)
    z = g(torch.ones(400000, 1))[:, 0]
    est = disarm_grad(g, z).item()
    assert abs(est - 0.7 * 0.3) < 3e-3


@pytest.mark.parametrize('name,inputs', [('lenet300_100', True), ('lenet5', False)])
def test_compaction_equivalence(name, inputs):
    torch.manual_seed(0)
    net = GatedNet(get_model(name, seed=0, width=0.5), gate_inputs=inputs)
    _set_p(net, lambda g: torch.randn(g.logit.shape) * 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(7, 1, 28, 28)
    net.set_mode('pair'); net(torch.cat([x, x])).sum().backward(); opt.step()
    net.prune_gates(0.3, opt)                       # physical removal mid-training
    net.set_mode('map'); out = net(x)
    small = net.compact()
    assert not any(isinstance(m, BernoulliGate) for m in small.modules())
    assert torch.allclose(small(x), out, atol=1e-5)
    assert count_weights(small) < count_weights(get_model(name, seed=0, width=0.5))
    # training goes on after removal (optimizer state was sliced with the parameters)
    net.set_mode('pair'); opt.zero_grad(); net(torch.cat([x, x])).sum().backward(); opt.step()


def test_removal_slices_optimizer_state_and_matches_zeroed_units():
    torch.manual_seed(0)
    mk = lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    net = GatedNet(mk(), in_shape=(6,), gate_inputs=True)
    opt = [torch.optim.SGD(net.weight_params(), lr=0.1, momentum=0.9), torch.optim.Adam(net.gate_params(), lr=0.1)]
    x = torch.randn(8, 6)
    net.set_mode('map'); (net(x).sum() + sum(g.logit.sum() for g in net.gates)).backward(); [o.step() for o in opt]
    keep = {'input': torch.tensor([1, 0, 1, 1, 0, 1]).bool(), '0': torch.tensor([1, 1, 0, 1, 0]).bool()}
    ref = GatedNet(mk(), in_shape=(6,), gate_inputs=True); ref.load_state_dict(net.state_dict())
    _set_p(ref, lambda g: torch.where(keep[g.name], 50., -50.))
    mom_before = opt[0].state[net.body[3].weight]['momentum_buffer'].clone()
    assert net.remove_units(keep, opt) == {'input': 2, '0': 2}
    W = net.body[3].weight
    assert tuple(W.shape) == (3, 4) and tuple(opt[0].state[W]['momentum_buffer'].shape) == (3, 4)
    assert torch.equal(opt[0].state[W]['momentum_buffer'], mom_before[[0, 1, 3]][:, [0, 2, 3, 5]])
    assert opt[1].state[net.gates[0].logit]['exp_avg'].shape == (4,)
    ref.set_mode('map'); net.set_mode('map')
    assert torch.allclose(net(x), ref(x), atol=1e-6)


def test_smaller_net_steps_faster():
    torch.manual_seed(0)
    net = GatedNet(get_model('lenet300_100', seed=0, width=2), gate_inputs=True)
    x, y = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))
    def ms(reps=15):
        net.set_mode('pair'); t = time.perf_counter()
        for _ in range(reps): F.cross_entropy(net(torch.cat([x, x])), torch.cat([y, y])).backward()
        return (time.perf_counter() - t) / reps
    ms(2); t_big = ms()
    net.remove_units({'fc1': torch.arange(600) < 30, 'fc2': torch.arange(200) < 10})
    ms(2); t_small = ms()
    assert t_small < 0.7 * t_big, (t_big, t_small)


def _toy(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, ((x[:, 0] + x[:, 1] - x[:, 2]) > 0).long()


@pytest.mark.parametrize('seed', [0, 1])
def test_toy_removes_exactly_the_irrelevant_inputs_and_dead_units(seed):
    (xtr, ytr), (xv, yv) = _toy(1000, 0), _toy(500, 1)
    data = types.SimpleNamespace(x_train=xtr, y_train=ytr, x_val=xv, y_val=yv, x_test=xv, y_test=yv)
    torch.manual_seed(seed)
    base = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad(): base[0].weight[4:] = 0; base[0].bias[4:] = -1.0   # units 4..7 dead: known irrelevant
    net = GatedNet(base, in_shape=(6,), gate_inputs=True)
    cfg = VariationalConfig(iterations=1200, batch_size=50, eval_every=0, lr=0.05, init_p=0.9, gate_lr=0.1, threshold=0.05, seed=seed)
    res = train_gated(net, data, cfg)
    assert net.gates[0].orig_index.tolist() == [0, 1, 2]
    assert set(net.gates[1].orig_index.tolist()).isdisjoint({4, 5, 6, 7})
    # deterministic final network: removed gates are exactly 0, every kept one is within 0.05 of 1
    assert res.max_gate_dist < 0.05
    assert all(v['max_dist_from_1'] < 0.05 for v in gate_report(net).values())
    assert res.final_test_acc > 0.95
    # the dead units go before the irrelevant inputs and before the end of training
    assert max(res.removed_at['0'][4:]) < cfg.iterations
    small = net.compact(); net.set_mode('map')
    assert torch.allclose(small(xv), net(xv), atol=1e-6)


def test_elbo_terms_and_priors():
    torch.manual_seed(0)
    net = GatedNet(get_model('lenet300_100', seed=0), gate_inputs=True)
    t = elbo_terms(net, torch.tensor(0.5), 55000, VariationalConfig())
    assert set(t) == {'nll', 'kl_gates', 'neg_log_prior_w', 'neg_log_hyper', 'loss'}
    assert torch.allclose(t['loss'], t['nll'] + t['kl_gates'] + t['neg_log_prior_w'] + t['neg_log_hyper'])
    lam = optimal_lambda(torch.ones(100), 300, 1.0, 10 * 55000)
    assert abs(lam - 100 / (300 + 10 * 55000 - 1)) < 1e-12
    assert bernoulli_kl(torch.tensor([0.3]), 0.3).abs().item() < 1e-6
    w = torch.full((50,), 1.0)
    assert spike_slab_log_prior(w, torch.ones(50), 1.0, 1e-3) > spike_slab_log_prior(w, torch.zeros(50), 1.0, 1e-3)
    w = torch.full((50,), 1e-3)
    assert spike_slab_log_prior(w, torch.ones(50), 1.0, 1e-3) < spike_slab_log_prior(w, torch.zeros(50), 1.0, 1e-3)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__(); self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
    def forward(self, x): return self.b(self.a(x) + x)


def test_bad_inputs():
    with pytest.raises(ValueError, match='init_p=1.5'): BernoulliGate(3, init_p=1.5)
    with pytest.raises(ValueError, match='n=0'): BernoulliGate(0)
    with pytest.raises(ValueError, match='threshold=1.5'): VariationalConfig(threshold=1.5)
    with pytest.raises(ValueError, match='spike_ratio'): VariationalConfig(spike_ratio=0.0)
    with pytest.raises(ValueError, match='iterations'): VariationalConfig(iterations=0)
    with pytest.raises(ValueError, match='sequential'): GatedNet(_Residual(), in_shape=(4,))
    with pytest.raises(ValueError, match='gate_inputs'): GatedNet(get_model('lenet5', seed=0), gate_inputs=True)
    with pytest.raises(ValueError, match='BatchNorm'): GatedNet(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)), in_shape=(3,))
    with pytest.raises(ValueError, match='last layer'): GatedNet(nn.Sequential(nn.Conv2d(1, 2, 3)), in_shape=(1, 5, 5))
    with pytest.raises(ValueError, match='in_shape'): GatedNet(nn.Sequential(nn.Linear(3, 2)), in_shape=(0,))
    net = GatedNet(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), in_shape=(3,))
    with pytest.raises(ValueError, match='mode'): net.set_mode('dropout')
    with pytest.raises(ValueError, match="keep\\['0'\\]"): net.remove_units({'0': torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match='threshold'): net.prune_gates(0.0)
    with pytest.raises(ValueError, match='last'): disarm_grad(BernoulliGate(2), torch.zeros(4))
    with pytest.raises(ValueError, match='net'): train_gated(nn.Linear(3, 2), None)
    with pytest.raises(ValueError, match='input.shape'): net.gates[0](torch.zeros(2, 5))


def test_mnist_short_run(data_root):
    from lth_nb.data import get_data
    torch.manual_seed(0)
    d = get_data('mnist', root=data_root)
    net = GatedNet(get_model('lenet300_100', seed=0), gate_inputs=True)
    res = train_gated(net, d, VariationalConfig(iterations=150, eval_every=0, init_p=0.99, gate_lr=0.02))
    assert res.final_test_acc > 0.8
    assert all(res.units_final[k] <= res.units_start[k] for k in res.units_start)
    small = net.compact(); net.set_mode('map')
    x = d.x_test[:500]
    assert torch.allclose(small(x), net(x), atol=1e-4)
