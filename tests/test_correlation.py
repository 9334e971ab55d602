"""Known-answer tests for lth_nb.correlation (R_p, its hypergeometric null, init-to-final correlation, masks, bad input)."""
import math

import pytest
import torch
from torch import nn

from lth_nb.correlation import (default_names, magnitude_pairs, overlap_ratio, rp_chance, rp_curve, top_p_mask,
                                weight_correlation, weight_pairs)


def _sets(seed=0, shapes=(('fc1.weight', (300, 784)), ('fc2.weight', (100, 300)), ('fc3.weight', (10, 100)))):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g) for k, s in shapes}


@pytest.mark.parametrize('p', [0.01, 0.05, 0.2, 0.5, 0.9, 1.0])
def test_rp_self_is_one(p):
    a = _sets()
    r = overlap_ratio(a, a, p)
    assert r['overall'] == 1.0
    assert all(v == 1.0 for v in r['layers'].values())
    assert overlap_ratio(a, a, p, scope='global')['overall'] == 1.0


@pytest.mark.parametrize('p', [0.05, 0.2, 0.5])
@pytest.mark.parametrize('scope', ['layer', 'global'])
def test_rp_independent_is_about_p(p, scope):
    a, b = _sets(0), _sets(1)
    r = overlap_ratio(a, b, p, scope=scope)
    # hypergeometric null: mean k/n ~ p, sd from the hypergeometric variance; 5 sd is a 1-in-3.5-million miss
    assert abs(r['chance'] - p) < 1e-3
    assert abs(r['overall'] - r['chance']) < 5 * r['chance_sd'], (r['overall'], r['chance'], r['chance_sd'])
    mean, sd = rp_chance(p, 784 * 300)
    assert abs(r['layers']['fc1.weight'] - mean) < 5 * sd


def test_rp_chance_matches_simulation():
    p, n = 0.2, 500
    mean, sd = rp_chance(p, n)
    g = torch.Generator().manual_seed(0)
    sims = torch.tensor([overlap_ratio({'w': torch.randn(n, generator=g)[None]}, {'w': torch.randn(n, generator=g)[None]},
                                       p, names=['w'])['overall'] for _ in range(400)])
    assert abs(sims.mean().item() - mean) < 4 * sd / math.sqrt(400)
    assert 0.8 < sims.std().item() / sd < 1.2


def test_rp_scale_and_sign_invariant():
    a = _sets()
    assert overlap_ratio(a, {k: -3.7 * v for k, v in a.items()}, 0.3)['overall'] == 1.0


def test_rp_p_one_and_monotone_extremes():
    a, b = _sets(0), _sets(1)
    assert overlap_ratio(a, b, 1.0)['overall'] == 1.0  # everything is selected
    curve = rp_curve(a, b, ps=(0.1, 0.5))
    assert [c['p'] for c in curve] == [0.1, 0.5]


def test_rp_mask_respected():
    a = _sets()
    b = {k: v.clone() for k, v in a.items()}
    keep = {k: torch.rand(v.shape, generator=torch.Generator().manual_seed(3)) < 0.3 for k, v in a.items()}
    for k in b: b[k][~keep[k]] = torch.randn(int((~keep[k]).sum())) * 100  # garbage where pruned
    r = overlap_ratio(a, b, 0.2, mask=keep)
    assert r['overall'] == 1.0
    assert r['n'] == {k: int(m.sum()) for k, m in keep.items()}
    assert overlap_ratio(a, b, 0.2)['overall'] < 0.5  # unmasked, the garbage dominates the top 20%
    # mask keys define the layers compared
    r1 = overlap_ratio(a, b, 0.2, mask={'fc2.weight': keep['fc2.weight']})
    assert list(r1['layers']) == ['fc2.weight']


def test_rp_known_small_case():
    a = {'w': torch.tensor([[4., 3., 2., 1.]])}
    b = {'w': torch.tensor([[4., 1., 3., 2.]])}
    # top-2 of a = {0,1}, of b = {0,2}: overlap 1 of k=2
    assert overlap_ratio(a, b, 0.5, names=['w'])['overall'] == 0.5
    m = {'w': torch.tensor([[True, False, True, True]])}
    # kept a = [4,2,1] b=[4,3,2]; k=round(0.5*3)=2 -> a{0,1} b{0,1}
    assert overlap_ratio(a, b, 0.5, mask=m)['overall'] == 1.0
    assert top_p_mask(torch.tensor([1., -5., 2.]), 0.34).tolist() == [False, True, False]


def test_models_and_state_dicts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    assert default_names(net) == ['0.weight', '3.weight']
    assert default_names(net.state_dict()) == ['0.weight', '3.weight']  # BN weight (1-D) and biases skipped
    r = overlap_ratio(net, net.state_dict(), 0.1)
    assert r['overall'] == 1.0 and set(r['layers']) == {'0.weight', '3.weight'}


@pytest.mark.parametrize('p', [0, -0.1, 1.5, 2, float('nan'), '0.2', None, True])
def test_bad_p(p):
    a = _sets()
    with pytest.raises(ValueError, match='0 < p <= 1'):
        overlap_ratio(a, a, p)


def test_bad_inputs():
    a = _sets()
    with pytest.raises(KeyError, match="fc3.weight"):
        overlap_ratio(a, {k: v for k, v in a.items() if k != 'fc3.weight'}, 0.2)
    with pytest.raises(ValueError, match=r"shape of layer 'fc2.weight'.*\(100, 300\) as in a"):
        overlap_ratio(a, {**a, 'fc2.weight': torch.randn(100, 30)}, 0.2)
    with pytest.raises(ValueError, match="mask shape of layer 'fc1.weight'"):
        overlap_ratio(a, a, 0.2, mask={'fc1.weight': torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(KeyError, match="'nope' of mask"):
        extra = {**a, 'nope': torch.ones(3)}
        weight_pairs(extra, extra, mask={'fc1.weight': torch.ones(300, 784, dtype=torch.bool)}, names=['fc1.weight', 'nope'])
    with pytest.raises(TypeError, match="nn.Module or a state dict"):
        overlap_ratio([1, 2], a, 0.2)
    with pytest.raises(ValueError, match="scope"):
        overlap_ratio(a, a, 0.2, scope='net')
    with pytest.raises(ValueError, match="at least one kept weight"):
        overlap_ratio(a, a, 0.2, mask={k: torch.zeros(v.shape, dtype=torch.bool) for k, v in a.items()})


def test_correlation_known_answers():
    a, b = _sets(0), _sets(1)
    c = weight_correlation(a, {k: 2.5 * v for k, v in a.items()})
    for s in list(c['layers'].values()) + [c['overall']]:
        assert s['pearson'] == pytest.approx(1.0) and s['cosine'] == pytest.approx(1.0)
        assert s['abs_pearson'] == pytest.approx(1.0) and s['rel_dist'] == pytest.approx(1.5)
    neg = weight_correlation(a, {k: -v for k, v in a.items()})['overall']
    assert neg['pearson'] == pytest.approx(-1.0) and neg['rel_dist'] == pytest.approx(2.0)
    i = weight_correlation(a, b)['overall']
    assert abs(i['pearson']) < 5 / math.sqrt(i['n']) and i['rel_dist'] == pytest.approx(math.sqrt(2), abs=0.01)
    shifted = weight_correlation(a, {k: v + 1 for k, v in a.items()})['overall']  # Pearson ignores offsets, cosine not
    assert shifted['pearson'] == pytest.approx(1.0) and shifted['cosine'] < 0.9


def test_correlation_mask_respected():
    a = _sets()
    keep = {k: torch.rand(v.shape, generator=torch.Generator().manual_seed(4)) < 0.5 for k, v in a.items()}
    final = {k: torch.where(keep[k], 2 * v, torch.randn_like(v) * 50) for k, v in a.items()}
    c = weight_correlation(a, final, mask=keep)
    assert c['overall']['pearson'] == pytest.approx(1.0) and c['overall']['rel_dist'] == pytest.approx(1.0)
    assert c['overall']['n'] == sum(int(m.sum()) for m in keep.values())
    assert weight_correlation(a, final)['overall']['pearson'] < 0.2


def test_magnitude_pairs():
    a = _sets()
    x, y = magnitude_pairs(a, {k: 2 * v for k, v in a.items()}, max_points=500)
    assert x.shape == (500,) and torch.allclose(2 * x, y) and (x >= 0).all()
    x2, _ = magnitude_pairs(a, a, max_points=500)
    assert torch.equal(x, x2)  # fixed seed


def test_with_prune_mask_and_models():
    "The real lth_nb.prune.Mask and registry models: default layers agree with prune.prunable; masks respected."
    from lth_nb.models import get_model
    from lth_nb.prune import magnitude_prune, prunable
    a, b = get_model('lenet300_100', seed=0), get_model('lenet300_100', seed=1)
    assert default_names(a) == list(prunable(a))
    mask = magnitude_prune(a, 0.5)
    r = overlap_ratio(a, a, 0.2, mask=mask)
    assert r['overall'] == 1.0 and r['n'] == {k: int(m.sum()) for k, m in mask.items()}
    s = overlap_ratio(a, b, 0.2, mask=mask)
    assert abs(s['overall'] - s['chance']) < 5 * s['chance_sd']
    c = get_model('resnet20', seed=0)
    assert default_names(c) == list(prunable(c))


# --- LR sweeps through the store (lr_sweep, stored_run, dense_analysis, sweep_config, CONV_SWEEP) ---

def _syn_sweep(tmp_path):
    from lth_nb.core import Store
    from lth_nb.correlation import sweep_config
    syn = dict(model='lenet300_100', data='synthetic', data_kw=dict(like='mnist', n_train=300, n_val=50, n_test=100),
               iters=20, rounds=2, rate=0.5, val_size=0)
    st = Store(tmp_path/'runs', tensor_root=tmp_path/'tensors')
    return st, (lambda lr, s: sweep_config(lr, s, **syn).replace(width=0.25))


def test_sweep_config_and_conv_sweep():
    from lth_nb.correlation import CONV_SWEEP, sweep_config
    from lth_nb.models import get_model
    from lth_nb.prune import prunable
    c = sweep_config(0.05, 2, **CONV_SWEEP['quick']['cfg'])
    assert (c.train.optimizer, c.train.lr, c.train.momentum, c.train.schedule) == ('sgd', 0.05, 0.9, 'constant')
    assert c.seed == 2 and c.reinits == 1 and c.scope == 'layer' and c.model == 'lenet5' and c.data == 'fashion_mnist'
    m = get_model('lenet5', num_classes=10, in_shape=(1, 28, 28))
    assert sum(p.numel() for p in m.parameters()) == 431_080
    rates = c.layer_rates(m)   # the first conv is never pruned, every other layer at the same rate
    assert rates['conv1.weight'] == 0 and {r for n, r in rates.items() if n != 'conv1.weight'} == {c.rate}
    assert set(rates) == set(prunable(m))
    for t, S in CONV_SWEEP.items():
        assert set(S['imp_lrs']) <= set(S['lrs']), t
        sweep_config(S['lrs'][0], S['seeds'][0], **S['cfg'])   # valid configs


def test_lr_sweep_get_or_run_and_json_only(tmp_path):
    import shutil
    from lth_nb.correlation import lr_sweep
    st, make = _syn_sweep(tmp_path)
    logs = []
    sw = lr_sweep(make, (0.01, 0.2), (0, 1), st, imp_lrs=(0.01,), device='cpu', log=logs.append)
    assert len(logs) == 4 and sw['missing'] == []
    assert sw['runs'][0.01, 1].rounds() == [0, 1, 2] and sw['runs'][0.2, 0].rounds() == [0]
    a = sw['analysis'][0.01, 0]
    assert [c['p'] for c in a['rp']][-1] == 1.0 and a['rp'][-1]['overall'] == 1.0 and len(a['abs_init']) == 1000
    logs.clear()
    shutil.rmtree(tmp_path/'tensors')   # as back from a GPU job: JSON only
    again = lr_sweep(make, (0.01, 0.2), (0, 1), st, imp_lrs=(0.01,), log=logs.append)
    assert logs == [] and again['analysis'] == sw['analysis'] and again['missing'] == []
    n_dirs = len(list((tmp_path/'runs').rglob('config.json')))
    assert lr_sweep(make, (0.03,), (0,), st, train=False)['missing'] == [(0.03, 0)]
    assert len(list((tmp_path/'runs').rglob('config.json'))) == n_dirs   # looking does not create runs


def test_lr_sweep_diverged_run_is_stored_and_skipped(tmp_path):
    from lth_nb.correlation import lr_sweep
    st, make = _syn_sweep(tmp_path)
    sw = lr_sweep(make, (1e8,), (0,), st, device='cpu')
    run, a = sw['runs'][1e8, 0], sw['analysis'][1e8, 0]
    assert run.run.has('diverged') and 'non-finite' in run.run.load('diverged')['error']
    assert a['rp'] is None and a['diverged'] and run.rounds() == [0]
    assert lr_sweep(make, (1e8,), (0,), st, train=False)['missing'] == []
