"""Invariants of lth_nb.prune (and the strategies of lth_nb.strategies) over many random models, rates and optimizers."""
import copy, subprocess, sys, warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn

from lth_nb.compact import from_torch_prune, sparsity_report   # the oracle reader; tests of compact: test_compact.py
from lth_nb.prune import (Mask, MaskEnforcer, SAFE_OPTIMIZERS, STRATEGIES, apply_mask, get_strategy,
                          large_magnitude_prune, layer_kind, magnitude_prune, mask_enforcer, prunable, prune_counts,
                          random_prune, register_strategy, score_prune)
from lth_nb.strategies import snip_prune, structured_prune, synflow_prune


# ---------------------------------------------------------------- random models
def rand_mlp(seed, depth=None, bias_scale=0.0):
    g = torch.Generator().manual_seed(seed)
    depth = depth or int(torch.randint(1, 4, (1,), generator=g))
    sizes = [int(torch.randint(6, 40, (1,), generator=g)) for _ in range(depth + 1)] + [5]
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2: layers.append(nn.ReLU())
    m = nn.Sequential(*layers)
    if bias_scale:
        with torch.no_grad():
            for l in m:
                if isinstance(l, nn.Linear): l.bias.normal_(0, bias_scale)
    m.in_shape = (sizes[0],)
    return m


def rand_conv(seed, bn=False, bias_scale=0.0):
    g = torch.Generator().manual_seed(seed)
    c1, c2, h = (int(torch.randint(3, 9, (1,), generator=g)) for _ in range(3))
    pad = int(torch.randint(0, 2, (1,), generator=g))
    torch.manual_seed(seed)
    side = 8
    s1 = side + 2 * pad - 2            # conv 3x3
    s2 = (s1 - 2) // 2                 # conv 3x3 no pad, maxpool 2
    layers = [nn.Conv2d(2, c1, 3, padding=pad)] + ([nn.BatchNorm2d(c1)] if bn else []) + [nn.ReLU(),
              nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * s2 * s2, h), nn.ReLU(),
              nn.Linear(h, 4)]
    m = nn.Sequential(*layers)
    with torch.no_grad():
        for l in m:
            if bias_scale and isinstance(l, (nn.Linear, nn.Conv2d)): l.bias.normal_(0, bias_scale)
            if isinstance(l, nn.BatchNorm2d):
                l.running_mean.normal_(); l.running_var.uniform_(0.5, 2); l.weight.normal_(); l.bias.normal_()
    m.in_shape = (2, side, side)
    return m.eval()


def tie_free(model, seed=0):
    "Give every prunable weight a distinct magnitude (random order and signs)."
    g = torch.Generator().manual_seed(seed)
    ps = list(prunable(model).values())
    n = sum(p.numel() for p in ps)
    mags = (torch.randperm(n, generator=g).float() + 1) / n
    signs = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    vals, i = mags * signs, 0
    with torch.no_grad():
        for p in ps: p.copy_(vals[i:i + p.numel()].view_as(p)); i += p.numel()
    return model


MODELS = [('mlp', s) for s in range(6)] + [('conv', s) for s in range(4)]
def build(kind, seed, **kw): return rand_mlp(seed, **kw) if kind == 'mlp' else rand_conv(seed, **kw)
def inp(model, n=8, seed=0):
    return torch.randn((n,) + tuple(model.in_shape), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- Mask and bad input
def test_mask_is_boolean_and_validated(tmp_path):
    m = rand_mlp(0)
    mk = Mask.ones(m)
    assert all(t.dtype == torch.bool for t in mk.values()) and mk.density == 1.0
    with pytest.raises(TypeError, match='torch.bool'): Mask({'1.weight': torch.ones(3)})
    with pytest.raises(TypeError, match='torch.bool'): mk['1.weight'] = mk['1.weight'].float()
    bad = mk.clone(); dict.__setitem__(bad, '1.weight', torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask\['1.weight'\].shape=\(2, 2\)"): bad.validate(m)
    with pytest.raises(ValueError, match='nope.weight'): Mask({'nope.weight': torch.ones(1, dtype=torch.bool)}).validate(m)
    with pytest.raises(TypeError): magnitude_prune(m, 0.2, {'1.weight': mk['1.weight'].float()})
    with pytest.raises(ValueError, match='shape'): magnitude_prune(m, 0.2, {'1.weight': torch.ones(1, dtype=torch.bool)})
    with pytest.raises(TypeError): mask_enforcer(m, {'1.weight': mk['1.weight'].int()})
    with pytest.raises(ValueError): apply_mask(m, {'x.weight': torch.ones(1, dtype=torch.bool)})
    half = magnitude_prune(m, 0.5)
    half.save(tmp_path / 'a' / 'mask.pt')
    back = Mask.load(tmp_path / 'a' / 'mask.pt')
    assert isinstance(back, Mask) and back.equal(half)
    assert (half & mk).equal(half) and abs(half.sparsity + half.density - 1) < 1e-12
    assert set(half.layer_density()) == set(half)


@pytest.mark.parametrize('rate', [-0.1, 1.0, 1.5, float('nan'), True, '0.2'])
def test_rate_outside_range(rate):
    m = rand_mlp(1)
    for name in STRATEGIES:
        with pytest.raises(ValueError, match=r"rate=.* is not allowed: expected 0 <= rate < 1"):
            get_strategy(name)(m, rate, data=(inp(m), torch.zeros(8, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"rates\['fc'\]"): magnitude_prune(m, 0.2, rates={'fc': rate})


def test_bad_keywords():
    m = rand_mlp(2)
    with pytest.raises(ValueError, match="rates key='fc9'"): magnitude_prune(m, 0.2, rates={'fc9': 0.1})
    with pytest.raises(ValueError, match="scope='local'"): magnitude_prune(m, 0.2, scope='local')
    with pytest.raises(ValueError, match="strategy='lamp'"): get_strategy('lamp')
    with pytest.raises(ValueError, match="include='zz'"): prunable(m, include='zz')
    with pytest.raises(ValueError, match='SNIP needs data'): snip_prune(m, 0.2)
    with pytest.raises(ValueError, match="scope='global'"): structured_prune(m, 0.2, scope='global')


def test_emptying_a_layer_needs_opt_in():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 1), nn.ReLU(), nn.Linear(1, 2))   # '2.weight' has 2 weights, '0.weight' 3
    mk = magnitude_prune(m, 0.6, rates={'0.weight': 0.0})             # round(0.6*2)=1 removed
    assert magnitude_prune(m, 0.5, mk).alive()['2.weight'] == 1      # round(0.5*1)=0: half to even
    with pytest.raises(ValueError, match="empties layer '2.weight'"): magnitude_prune(m, 0.6, mk, rates={'0.weight': 0.0})
    with pytest.warns(UserWarning, match="empties layer '2.weight'"):
        e = magnitude_prune(m, 0.6, mk, rates={'0.weight': 0.0}, allow_empty=True)
    assert e.alive()['2.weight'] == 0
    rep = sparsity_report(m, e)
    assert [r['warning'] for r in rep] == ['', 'empty layer', '']
    with pytest.raises(ValueError, match='empties layer'): magnitude_prune(m, 0.9, scope='global')


def test_prunable_and_kinds():
    m = rand_conv(0)
    names = list(prunable(m))
    assert [layer_kind(m, n) for n in names] == ['conv', 'conv', 'fc', 'output']
    assert list(prunable(m, exclude='output')) == names[:-1]
    assert list(prunable(m, include='conv')) == names[:2]
    assert all(n.endswith('.bias') for n in prunable(m, include='*.bias'))
    assert layer_kind(m, '0') == 'conv' and layer_kind(m, '0.bias') == 'conv'
    mk = Mask.ones(m, exclude=['output', 'conv'])
    assert list(mk) == [names[2]]


# ---------------------------------------------------------------- the recurrence and never un-pruning
@pytest.mark.parametrize('kind,seed', MODELS)
@pytest.mark.parametrize('rate', [0.2, 0.37, 0.5])
def test_density_recurrence_and_monotone(kind, seed, rate):
    m = build(kind, seed)
    rates = {'output': rate / 2, 'conv': 0.15} if seed % 2 else None
    mk, hist = Mask.ones(m), [Mask.ones(m).alive()]
    for r in range(4):
        new = magnitude_prune(m, rate, mk, rates=rates, allow_empty=True)
        assert all(t.dtype == torch.bool for t in new.values())
        assert all(not (new[n] & ~mk[n]).any() for n in mk)          # never un-prunes
        mk = new; hist.append(mk.alive())
        with torch.no_grad():                                          # weights move between rounds as in IMP
            for p in prunable(m).values(): p.add_(0.01 * torch.randn_like(p))
    for n in mk:
        lr = rate
        if rates:
            k = layer_kind(m, n)
            lr = rates.get(k, rate)
        assert [h[n] for h in hist] == prune_counts(hist[0][n], lr, 4), n


@pytest.mark.parametrize('kind,seed', MODELS)
def test_global_removes_exactly_the_smallest(kind, seed):
    m = build(kind, seed)
    mk = magnitude_prune(m, 0.3, rates={'output': 0.0}, scope='global')
    for _ in range(2):
        old = mk
        mk = magnitude_prune(m, 0.4, old, rates={'output': 0.0}, scope='global')
        pool = [n for n in mk if layer_kind(m, n) != 'output']
        ps = prunable(m)
        removed = torch.cat([ps[n].detach()[old[n] & ~mk[n]].abs() for n in pool])
        kept = torch.cat([ps[n].detach()[mk[n]].abs() for n in pool])
        assert len(removed) == round(0.4 * sum(int(old[n].sum()) for n in pool))
        assert removed.max() <= kept.min()
        out = [n for n in mk if layer_kind(m, n) == 'output'][0]
        assert mk[out].all()


def test_ties_are_broken_by_position():
    m = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        for p in m.parameters(): p.fill_(0.5)
    a = magnitude_prune(m, 0.5)
    assert a['0.weight'].reshape(-1).tolist() == [False] * 6 + [True] * 6
    assert a['1.weight'].reshape(-1).tolist() == [False] * 3 + [True] * 3
    g = magnitude_prune(m, 0.5, scope='global')                     # 9 of 18: all of layer 0's first 9
    assert g['0.weight'].reshape(-1).tolist() == [False] * 9 + [True] * 3 and g['1.weight'].all()
    assert magnitude_prune(m, 0.5, scope='global').equal(g)


def stable_sort_reference(scores, mask, names, k):
    idxs = [mask[n].reshape(-1).nonzero().squeeze(1) for n in names]
    allv = torch.cat([scores[n].reshape(-1)[i] for n, i in zip(names, idxs)])
    order = torch.sort(allv, stable=True).indices[:k]
    out, start = {n: mask[n].clone() for n in names}, 0
    for n, i in zip(names, idxs):
        sel = order[(order >= start) & (order < start + len(i))] - start
        out[n].view(-1)[i[sel]] = False
        start += len(i)
    return out


@pytest.mark.parametrize('seed', range(6))
def test_selection_with_many_ties_equals_a_stable_sort(seed):
    m = rand_mlp(seed)
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.randint(0, 3, p.shape, generator=g).float() for n, p in prunable(m).items()}
    mk = random_prune(m, 0.3, seed=seed)
    got = score_prune(m, scores, 0.45, mk, scope='global')
    ref = stable_sort_reference(scores, mk, list(mk), round(0.45 * mk.n_alive))
    assert all(torch.equal(got[n], ref[n]) for n in mk)
    got = score_prune(m, scores, 0.45, mk)
    for n in mk:
        assert torch.equal(got[n], stable_sort_reference(scores, mk, [n], round(0.45 * mk.alive()[n]))[n])


# ---------------------------------------------------------------- oracle: torch.nn.utils.prune
@pytest.mark.parametrize('kind,seed', MODELS)
def test_oracle_layerwise(kind, seed):
    m = tie_free(build(kind, seed), seed)
    t = copy.deepcopy(m)
    rates = {'output': 0.1, 'conv': 0.15}
    mk, names = None, list(prunable(t))
    for _ in range(3):
        mk = magnitude_prune(m, 0.2, mk, rates=rates)
        for n in names:
            mname = n.rpartition('.')[0]
            tprune.l1_unstructured(t.get_submodule(mname), 'weight', amount=rates.get(layer_kind(m, n), 0.2))
    theirs = from_torch_prune(t)
    assert mk.equal(theirs)


@pytest.mark.parametrize('kind,seed', MODELS)
def test_oracle_global(kind, seed):
    m = tie_free(build(kind, seed), seed + 100)
    t = copy.deepcopy(m)
    mk = None
    ps = [(t.get_submodule(n.rpartition('.')[0]), 'weight') for n in prunable(t)]
    for amount in (0.2, 0.33, 0.5):
        mk = magnitude_prune(m, amount, mk, scope='global')
        tprune.global_unstructured(ps, tprune.L1Unstructured, amount=amount)
    assert mk.equal(from_torch_prune(t))


# ---------------------------------------------------------------- strategies
def fake_data(m, n=16):
    return SimpleNamespace(x_train=inp(m, n), y_train=torch.randint(0, 4, (n,)), input_shape=m.in_shape)


@pytest.mark.parametrize('name', sorted(STRATEGIES))
@pytest.mark.parametrize('kind,seed', [('mlp', 1), ('conv', 2)])
def test_strategy_contract(name, kind, seed):
    m = build(kind, seed)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    fn = get_strategy(name)
    data = fake_data(m)
    mk = fn(m, 0.3, data=data, seed=0, iterations=5)
    mk2 = fn(m, 0.25, mk, scope='layer', rates=None, data=data, seed=1, iterations=5)
    assert isinstance(mk2, Mask) and all(t.dtype == torch.bool for t in mk2.values())
    assert all(not (mk2[n] & ~mk[n]).any() for n in mk)
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())     # model untouched
    assert all(p.grad is None for p in m.parameters())
    for n in mk:
        if name == 'structured':
            u0, u1 = (x[n].reshape(len(x[n]), -1).any(1) for x in (mk, mk2))
            if layer_kind(m, n) == 'output': assert u1.all()
            else: assert int(u1.sum()) == int(u0.sum()) - round(0.25 * int(u0.sum()))
            assert torch.equal(mk2[n].reshape(len(u1), -1).any(1), mk2[n].reshape(len(u1), -1).all(1))   # whole rows
        else:
            assert mk2.alive()[n] == mk.alive()[n] - round(0.25 * mk.alive()[n])
    if name != 'structured':
        g = fn(m, 0.3, mk, scope='global', data=data, seed=0, iterations=5)
        assert g.n_alive == mk.n_alive - round(0.3 * mk.n_alive)


def test_large_magnitude_and_random():
    m = tie_free(rand_mlp(4), 4)
    ps = prunable(m)
    lm = large_magnitude_prune(m, 0.3)
    for n, p in ps.items():
        assert p.detach()[~lm[n]].abs().min() >= p.detach()[lm[n]].abs().max()
    a, b, c = random_prune(m, 0.5, seed=3), random_prune(m, 0.5, seed=3), random_prune(m, 0.5, seed=4)
    assert a.equal(b) and not a.equal(c)


def test_snip_scores_and_data_forms():
    m = rand_mlp(5)
    x, y = inp(m, 32), torch.randint(0, 5, (32,))
    a = snip_prune(m, 0.5, data=(x, y))
    b = snip_prune(m, 0.5, data=SimpleNamespace(x_train=x, y_train=y), batch_size=32)
    assert a.equal(b)
    net = copy.deepcopy(m); F.cross_entropy(net(x), y).backward()
    scores = {n: (p.grad * p).abs() for n, p in prunable(net).items()}
    assert a.equal(score_prune(m, scores, 0.5))


def test_synflow_is_sign_invariant_and_restores():
    m = rand_conv(1)
    flipped = copy.deepcopy(m)
    with torch.no_grad():
        for p in prunable(flipped).values(): p.neg_()
    a = synflow_prune(m, 0.6, iterations=10)
    b = synflow_prune(flipped, 0.6, iterations=10)
    assert a.equal(b)                                                   # the abs trick
    c = synflow_prune(m, 0.6, scope='global', iterations=10)
    assert c.n_alive == Mask.ones(m).n_total - round(0.6 * Mask.ones(m).n_total)


def test_structured_norms():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[3., 0, 0], [1, 1, 1], [0.1, 0, 0], [2, 2, -2]]))
    l1 = structured_prune(m, 0.5, norm='l1')
    l2 = structured_prune(m, 0.5, norm='l2')
    assert l1['0.weight'].all(1).tolist() == [False, True, False, True]     # L1: 3, 3, .1, 6: tie, earlier goes
    assert l2['0.weight'].all(1).tolist() == [True, False, False, True]      # L2: 3, 1.73, .1, 3.46
    assert l1['2.weight'].all()
    o = structured_prune(m, 0.5, rates={'output': 0.5})
    assert int(o['2.weight'].all(1).sum()) == 1


def test_register_strategy():
    @register_strategy('_test_first')
    def first(model, rate, mask=None, scope='layer', rates=None, data=None, **kw):
        scores = {n: torch.arange(p.numel(), dtype=torch.float).view_as(p) for n, p in prunable(model).items()}
        return score_prune(model, scores, rate, mask, scope, rates)
    try:
        mk = get_strategy('_test_first')(rand_mlp(0), 0.5)
        assert all(not t.reshape(-1)[:t.numel() // 2].any() for t in mk.values())
    finally: del STRATEGIES['_test_first']


# ---------------------------------------------------------------- training with a mask
def opt_factory(name):
    return {
        'sgd': lambda ps: torch.optim.SGD(ps, lr=0.1),
        'sgd_mom_wd': lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-4),
        'sgd_nesterov': lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        'sgd_mom_foreach': lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, foreach=True),
        'adam': lambda ps: torch.optim.Adam(ps, lr=1e-2),
        'adam_wd_amsgrad': lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2, amsgrad=True),
        'adam_fused': lambda ps: torch.optim.Adam(ps, lr=1e-2, fused=True),
        'adam_foreach': lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=True),
        'adamw_wd': lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        'adamw_fused': lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, fused=True),
        'rmsprop': lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, weight_decay=1e-3),
        'nadam': lambda ps: torch.optim.NAdam(ps, lr=1e-2, weight_decay=1e-2),
        'radam': lambda ps: torch.optim.RAdam(ps, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
        'adagrad': lambda ps: torch.optim.Adagrad(ps, lr=1e-2, weight_decay=1e-3),
        'adamax': lambda ps: torch.optim.Adamax(ps, lr=1e-2, weight_decay=1e-2),          # not SAFE
        'rprop': lambda ps: torch.optim.Rprop(ps, lr=1e-2),                              # not SAFE
    }[name]
OPTS = ['sgd', 'sgd_mom_wd', 'sgd_nesterov', 'sgd_mom_foreach', 'adam', 'adam_wd_amsgrad', 'adam_fused',
        'adam_foreach', 'adamw_wd', 'adamw_fused', 'rmsprop', 'nadam', 'radam', 'adagrad', 'adamax', 'rprop']
SAFE = [o for o in OPTS if o not in ('adamax', 'rprop')]


def assert_masked(m, mk, opt, check_state=True):
    for n, p in prunable(m).items():
        if n not in mk: continue
        assert (p.detach()[~mk[n]] == 0).all(), f'{n}: pruned weight revived'
        if check_state:
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    assert (v[~mk[n]] == 0).all(), f'{n}: optimizer state {k} nonzero at a pruned weight'


def train_steps(m, opt, steps, seed, enforcer=None, check=None):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn((16,) + tuple(m.in_shape), generator=g)
        y = torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
        if check: check()


@pytest.mark.parametrize('opt_name', OPTS)
@pytest.mark.parametrize('kind,seed', [('mlp', 0), ('mlp', 3), ('conv', 1)])
def test_enforcer_keeps_pruned_weights_and_state_zero(opt_name, kind, seed):
    m = build(kind, seed).train()
    opt = opt_factory(opt_name)(m.parameters())
    train_steps(m, opt, 3, seed)                                  # dense training first: state is nonzero
    mk = random_prune(m, 0.3 + 0.1 * seed, seed=seed, rates={'output': 0.2})
    enf = mask_enforcer(m, mk, opt)
    assert_masked(m, mk, opt)                                     # construction zeroes weights and state
    train_steps(m, opt, 8, seed + 1, check=lambda: assert_masked(m, mk, opt))
    # the next round prunes further; the enforcer takes the new mask, nothing revives
    mk2 = magnitude_prune(m, 0.5, mk)
    enf.set_mask(mk2)
    train_steps(m, opt, 5, seed + 2, check=lambda: assert_masked(m, mk2, opt))
    alive = {n: (p.detach() != 0) for n, p in prunable(m).items()}
    assert all(not (alive[n] & ~mk2[n]).any() for n in mk2)
    enf.detach()


@pytest.mark.parametrize('opt_name', SAFE)
def test_safe_optimizers_keep_zeros_by_themselves(opt_name):
    "The claim behind SAFE_OPTIMIZERS: with grads masked and state zeroed once, the update of a pruned weight is 0."
    m = rand_mlp(7).train()
    opt = opt_factory(opt_name)(m.parameters())
    assert isinstance(opt, SAFE_OPTIMIZERS)
    mk = magnitude_prune(m, 0.6)
    enf = mask_enforcer(m, mk, opt, attach=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = torch.randn((16,) + m.in_shape, generator=g), torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad(); F.cross_entropy(m(x), y).backward()
        enf.before_step()
        for n, p in prunable(m).items(): assert (p.grad[~mk[n]] == 0).all()
        opt.step()                                                # no after_step
        assert_masked(m, mk, opt)


def test_unattached_step_and_scheduler():
    m = rand_conv(2).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    mk = magnitude_prune(m, 0.7)
    with MaskEnforcer(m, mk, opt, attach=False) as enf:
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            x, y = torch.randn((8,) + m.in_shape, generator=g), torch.randint(0, 4, (8,), generator=g)
            opt.zero_grad(); F.cross_entropy(m(x), y).backward(); enf.step(); sched.step()
            assert_masked(m, mk, opt)
    # detached: a plain step is no longer masked (proves the hooks are what does the work when attached)
    enf2 = mask_enforcer(m, mk, opt); enf2.detach()
    opt.zero_grad(); F.cross_entropy(m(inp(m)), torch.zeros(8, dtype=torch.long)).backward(); opt.step()
    assert any((p.detach()[~mk[n]] != 0).any() for n, p in prunable(m).items())


@pytest.mark.parametrize('opt_name', ['adamw_fused', 'sgd_nesterov', 'adamax'])
def test_enforcer_remask_every_step(opt_name):
    m = rand_conv(3).train()
    opt = opt_factory(opt_name)(m.parameters())
    mk = magnitude_prune(m, 0.5)
    enf = mask_enforcer(m, mk, opt, remask_every=1)
    train_steps(m, opt, 6, 0, check=lambda: assert_masked(m, mk, opt))
    assert enf.steps == 6
    enf.detach()
    if opt_name == 'adamax':
        with pytest.raises(ValueError, match='remask_every=5'): mask_enforcer(m, mk, opt, remask_every=5)


def test_subclass_of_a_safe_optimizer_is_masked_every_step():
    class Noisy(torch.optim.SGD):                                 # an update that moves zero-gradient weights
        @torch.no_grad()
        def step(self, closure=None):
            super().step(closure)
            for g in self.param_groups:
                for p in g['params']: p.add_(1e-3)
    m = rand_mlp(2).train()
    opt = Noisy(m.parameters(), lr=0.1, momentum=0.9)
    mk = magnitude_prune(m, 0.5)
    enf = mask_enforcer(m, mk, opt)
    assert not enf.safe and enf.remask_every == 1
    train_steps(m, opt, 4, 0, check=lambda: assert_masked(m, mk, opt))
    enf.detach()


def test_eps_zero_refused():
    m = rand_mlp(0)
    opt = torch.optim.Adam(m.parameters(), eps=0.0)
    with pytest.raises(ValueError, match='eps=0.0'): mask_enforcer(m, Mask.ones(m), opt)


def test_no_forward_hooks_and_apply_mask():
    m = rand_mlp(1)
    mk = magnitude_prune(m, 0.5)
    opt = torch.optim.Adam(m.parameters())
    enf = mask_enforcer(m, mk, opt)
    assert all(not mod._forward_pre_hooks and not mod._forward_hooks for mod in m.modules())
    m2 = apply_mask(copy.deepcopy(rand_mlp(1)), mk)
    assert all((p[~mk[n]] == 0).all() and (p[mk[n]] != 0).all() for n, p in prunable(m2).items())
    enf.detach()


def test_strategies_registered_by_importing_prune_alone():
    "lth_nb.prune imports lth_nb.strategies last: either import order gives the full registry, without a cycle error."
    for first in ('lth_nb.prune', 'lth_nb.strategies'):
        code = (f"import sys, {first}; from lth_nb.prune import STRATEGIES, get_strategy; "
                "assert {'snip', 'synflow', 'structured'} <= set(STRATEGIES), sorted(STRATEGIES); "
                "assert get_strategy('snip').__module__ == 'lth_nb.strategies'; "
                "from lth_nb.lottery import LotteryConfig; LotteryConfig(strategy='synflow')")
        subprocess.run([sys.executable, '-c', code], check=True)
    import lth_nb.prune, lth_nb.strategies
    assert not hasattr(lth_nb.prune, 'snip_prune')                       # no alias: the names live in lth_nb.strategies
    assert STRATEGIES['structured'] is structured_prune and get_strategy('synflow') is synflow_prune


def test_import_is_light():
    code = ("import sys, lth_nb.prune; bad=[m for m in ('torchvision','matplotlib','pandas','seaborn','ipywidgets')"
            " if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, '-c', code], check=True)


# ---------------------------------------------------------------- the model registry's nets
@pytest.mark.parametrize('name', ['resnet20', 'mobilenetv2'])
def test_registry_residual_nets(name):
    models = pytest.importorskip('lth_nb.models')
    m = models.get_model(name, width=0.25, seed=0).eval()
    shape = models.MODELS[name].in_shape
    sf = synflow_prune(m, 0.5, input_shape=shape, iterations=5, scope='global')   # ReLU6 handled: no empty layer
    assert sf.n_alive == Mask.ones(m).n_total - round(0.5 * Mask.ones(m).n_total)
    assert min(sf.alive().values()) > 0
