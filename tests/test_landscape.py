"""Tests of lth_nb.landscape and lth_nb.slices against known truth: a quadratic model with a known Hessian,
self-interpolation, mask restriction, bad inputs, and the cost on LeNet-300-100 / MNIST."""
import math, time, warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lth_nb.landscape import (Objective, eval_batches, top_eigenvalues, lanczos, power_iteration, hessian_trace,
                              random_direction, filter_scales, basin_radii, basin_volume, measure)
from lth_nb.slices import (interpolate, barrier, linear_connectivity, consecutive_barriers, mask_state,
                           loss_surface_1d, loss_surface_2d)

warnings.filterwarnings('ignore', message='.*torch.jit.script.*')


def mse(out, y): return 0.5 * ((out - y) ** 2).sum(1).mean()


def quadratic(lam, n=200, seed=0):
    "Linear least squares whose Hessian is exactly Q diag(lam) Q'; minimum at the model's weights."
    g = torch.Generator().manual_seed(seed); d = len(lam)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g))[0]; U = torch.linalg.qr(torch.randn(n, d, generator=g))[0]
    X = n ** .5 * U @ torch.diag(torch.as_tensor(lam, dtype=torch.float32).sqrt()) @ Q.T
    model = nn.Linear(d, 1, bias=False); w = torch.randn(1, d, generator=g)
    with torch.no_grad(): model.weight.copy_(w)
    return model, [(X[:n // 2], X[:n // 2] @ w.T), (X[n // 2:], X[n // 2:] @ w.T)], X.T @ X / n


@pytest.fixture
def quad():
    lam = torch.tensor([0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 7.0])
    model, batches, H = quadratic(lam)
    return lam, model, batches, H


def test_hvp_matches_hessian(quad):
    lam, model, batches, H = quad
    obj = Objective(model, batches, loss_fn=mse)
    V = torch.randn(3, 8)
    torch.testing.assert_close(obj.hvp(V), V @ H, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(obj.hvp(V[0]), H @ V[0], rtol=1e-4, atol=1e-4)
    assert obj.loss() < 1e-10


@pytest.mark.parametrize('method,kw,tol', [('lanczos', dict(steps=8), 1e-4), ('power', dict(iters=500, tol=1e-8), 1e-3)])
def test_eigenvalues_recovered(quad, method, kw, tol):
    lam, model, batches, H = quad
    r = top_eigenvalues(Objective(model, batches, loss_fn=mse), k=2, method=method, **kw)
    np.testing.assert_allclose(r['eigenvalues'], [7.0, 4.0], rtol=tol)
    ev = torch.linalg.eigh(H).eigenvectors[:, -1]
    assert abs(float(r['eigenvectors'][0] @ ev)) > 0.999


def test_trace_recovered(quad):
    lam, model, batches, H = quad
    r = hessian_trace(Objective(model, batches, loss_fn=mse), samples=400, seed=3)
    assert abs(r['trace'] - float(lam.sum())) < 4 * r['se'] + 1e-3
    # a diagonal Hessian makes Hutchinson exact with Rademacher probes
    X = torch.diag(torch.tensor([1., 2., 3.])) * 3 ** .5
    m = nn.Linear(3, 1, bias=False)
    r = hessian_trace(Objective(m, [(X, torch.zeros(3, 1))], loss_fn=mse), samples=4)
    assert abs(r['trace'] - 14.0) < 1e-4 and r['se'] < 1e-5


def test_mask_restricts_everything(quad):
    lam, model, batches, H = quad
    mask = torch.tensor([[True, False, True, True, False, True, False, True]])
    S = mask[0]
    obj = Objective(model, batches, mask={'weight': mask}, loss_fn=mse)
    assert obj.n == 5 and bool((obj.theta[~S] == 0).all())
    sub = H[S][:, S]
    r = lanczos(obj, k=2, steps=5)
    np.testing.assert_allclose(r['eigenvalues'], torch.linalg.eigvalsh(sub).flip(0)[:2].numpy(), rtol=1e-4)
    assert float(r['eigenvectors'][:, ~S].abs().max()) == 0.0
    p = power_iteration(obj, k=1, iters=300, tol=1e-8)
    assert float(p['eigenvectors'][:, ~S].abs().max()) == 0.0
    t = hessian_trace(obj, samples=400)
    assert abs(t['trace'] - float(sub.trace())) < 4 * t['se'] + 1e-3
    for norm in ('filter', 'layer', None):
        d = random_direction(obj, seed=1, norm=norm, k=4)
        assert float(d[:, ~S].abs().max()) == 0.0 and float(d[:, S].abs().min()) > 0
    assert float(filter_scales(obj)[~S].abs().max()) == 0.0
    s = loss_surface_2d(obj, ts=[-1, 0, 1])
    assert s['loss'][1][1] == pytest.approx(obj.loss(), abs=1e-6)


def test_filter_normalisation_matches_solution_norms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3))
    mk = {'0.weight': torch.rand(5, 10) > 0.4}
    mk['0.weight'][:, 0] = True
    obj = Objective(net, [(torch.randn(16, 10), torch.randint(0, 3, (16,)))], mask=mk)
    d = obj.unflatten(random_direction(obj, seed=2))
    torch.testing.assert_close(d['0.weight'].norm(dim=1), (net[0].weight * mk['0.weight']).norm(dim=1).detach())
    torch.testing.assert_close(d['2.weight'].norm(dim=1), net[2].weight.norm(dim=1).detach())


def test_basin_radii_and_volume_on_quadratic():
    lam = torch.tensor([0.5, 1.0, 4.0])
    model, batches, H = quadratic(lam, n=60)
    obj = Objective(model, batches, loss_fn=mse)
    U = F.normalize(torch.randn(5, 3), dim=1)
    r = basin_radii(obj, U, rise=0.1, t0=0.01, rtol=1e-3)
    truth = torch.tensor([(0.2 / float(u @ H @ u)) ** .5 for u in U])
    torch.testing.assert_close(torch.tensor(r['radii']), truth, rtol=2e-3, atol=0)
    v = basin_volume(obj, n_dirs=2000, rise=0.1, norm=None, t0=0.01, rtol=1e-3, chunk=2000)
    s = float(obj.theta.norm()) / 3 ** .5
    true_lv = 1.5 * math.log(math.pi) - math.lgamma(2.5) + 1.5 * math.log(0.2) - 0.5 * float(torch.logdet(H)) - 3 * math.log(s)
    assert abs(v['log_volume'] - true_lv) < 0.05
    assert v['log_volume_lb'] <= true_lv and v['censored'] == 0 and len(v['radii']) == 2000
    # a flatter basin (Hessian / 4) has every radius doubled: log-volume up by n log 2
    model2, batches2, _ = quadratic(lam / 4, n=60)
    v2 = basin_volume(Objective(model2, batches2, loss_fn=mse), n_dirs=200, rise=0.1, norm=None, t0=0.01, rtol=1e-3, chunk=200)
    v1 = basin_volume(obj, n_dirs=200, rise=0.1, norm=None, t0=0.01, rtol=1e-3, chunk=200)
    assert abs((v2['log_volume_lb'] - v1['log_volume_lb']) - 3 * math.log(2)) < 0.02


def test_censoring():
    model, batches, _ = quadratic(torch.tensor([1e-6, 1e-6]), n=20)
    r = basin_radii(Objective(model, batches, loss_fn=mse), torch.eye(2), rise=0.1, t_max=4.0)
    assert r['censored'] == 2 and r['radii'] == [4.0, 4.0]


def test_self_interpolation_is_flat_and_convex_has_no_barrier(quad):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    b = [(torch.randn(32, 4), torch.randint(0, 3, (32,)))]
    c = linear_connectivity(net, net.state_dict(), net.state_dict(), b, alphas=7)
    assert c['err_barrier'] == 0.0 and abs(c['loss_barrier']) < 1e-6 and len(c['alpha']) == 7
    assert max(c['loss']) - min(c['loss']) < 1e-6
    lam, model, batches, H = quad
    other = {'weight': torch.randn(1, 8)}
    assert linear_connectivity(model, model.state_dict(), other, batches, loss_fn=mse)['loss_barrier'] <= 1e-5
    # barrier of a known curve
    assert barrier(dict(alpha=[0, .5, 1], err=[0.1, 0.5, 0.3])) == pytest.approx(0.3)


def test_consecutive_barriers_mask_earlier_solution():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    b = [(torch.randn(32, 4), torch.randint(0, 3, (32,)))]
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    m = {'0.weight': torch.rand(8, 4) > 0.5}
    out = consecutive_barriers(net, [sd, mask_state(sd, m)], [None, m], b)
    assert len(out) == 1 and out[0]['err_barrier'] == 0.0
    assert out[0]['density'] == pytest.approx(float(m['0.weight'].float().mean()))


def test_bad_inputs(quad):
    lam, model, batches, H = quad
    obj = Objective(model, batches, loss_fn=mse)
    with pytest.raises(ValueError, match='batches'): Objective(model, [], loss_fn=mse)
    with pytest.raises(ValueError, match=r"mask\['weight'\].shape"): Objective(model, batches, mask={'weight': torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match='mask='): Objective(model, batches, mask={'bias': torch.ones(1, 8, dtype=torch.bool)})
    with pytest.raises(ValueError, match='at least one unpruned'): Objective(model, batches, mask={'weight': torch.zeros(1, 8, dtype=torch.bool)})
    with pytest.raises(ValueError, match='names='): Objective(model, batches, names=['nope'])
    with pytest.raises(ValueError, match='k=0'): top_eigenvalues(obj, k=0)
    with pytest.raises(ValueError, match="method='svd'"): top_eigenvalues(obj, method='svd')
    with pytest.raises(ValueError, match='samples=1'): hessian_trace(obj, samples=1)
    with pytest.raises(ValueError, match='v.shape'): obj.hvp(torch.ones(3))
    with pytest.raises(ValueError, match='rise=0'): basin_radii(obj, torch.eye(8), rise=0)
    with pytest.raises(ValueError, match='n_dirs=3'): basin_volume(obj, n_dirs=3)
    with pytest.raises(ValueError, match="norm='row'"): random_direction(obj, norm='row')
    with pytest.raises(ValueError, match='alphas'): interpolate(model, model.state_dict(), model.state_dict(), batches, alphas=[2.0], loss_fn=mse)
    with pytest.raises(ValueError, match='missing key'): interpolate(model, model.state_dict(), {}, batches, loss_fn=mse)
    with pytest.raises(ValueError, match='len\\(y\\)'): eval_batches(torch.ones(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="key='acc'"): barrier(dict(alpha=[0, 1], err=[0, 0]), key='acc')


def test_measure_and_surfaces_are_jsonable():
    import json
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    obj = Objective(net, [(torch.randn(32, 4), torch.randint(0, 3, (32,)))])
    r = measure(obj, k=2, steps=6, trace_samples=4, n_dirs=4)
    json.dumps(r); json.dumps(loss_surface_1d(obj, ts=[-1, 0, 1])); json.dumps(loss_surface_2d(obj, ts=[-1, 0, 1]))
    assert len(r['top_eigenvalues']) == 2 and r['lambda_max'] >= r['top_eigenvalues'][1]


def test_lenet_top_eigenvalue_under_a_minute(data_root):
    from lth_nb.data import get_data
    d = get_data('mnist', root=data_root, device='cpu')
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    opt = torch.optim.Adam(net.parameters(), 1.2e-3)
    for _ in range(200):
        i = torch.randint(0, len(d.x_train), (60,))
        opt.zero_grad(); F.cross_entropy(net(d.x_train[i]), d.y_train[i]).backward(); opt.step()
    obj = Objective(net, eval_batches(d.x_train, d.y_train, n=2000, batch_size=1000))
    t = time.perf_counter(); r = top_eigenvalues(obj, steps=20); el = time.perf_counter() - t
    print(f'LeNet-300-100, 2,000 examples: lambda_max={r["eigenvalues"][0]:.3f} in {el:.1f} s')
    assert el < 60 and r['eigenvalues'][0] > 0
