"""Tests for lth_nb.dwf: deep weight factorization, known-truth checks (product, weight decay, lasso, sparsity)."""
import numpy as np
import pytest
import torch
from torch import nn

from lth_nb.dwf import (INITS, Product, check_depth, collapse, decayed_params, equivalent_penalty, evaluate,
                        factor_params, factor_penalty, factorize, fit, init_factors, is_factorized, layer_sparsity,
                        magnitude_mask, product_std_ratio, sparsify)


def mlp(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    for l in m:
        if isinstance(l, nn.Linear): nn.init.xavier_normal_(l.weight); nn.init.zeros_(l.bias)
    return m


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (2.0, TypeError),
                                     (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_bad_depth(bad, exc):
    with pytest.raises(exc, match=r"D=.* is not allowed: expected an int >= 1"): check_depth(bad)
    with pytest.raises(exc): factorize(mlp(), bad)


@pytest.mark.parametrize("D", [1, 2, 3, 4])
def test_collapsed_weight_is_product(D):
    m = factorize(mlp(), D, seed=1)
    x = torch.randn(8, 20)
    for l in (m[1], m[3]):
        fs = list(l.parametrizations.weight.parameters())
        assert len(fs) == D
        prod = fs[0]
        for f in fs[1:]: prod = prod * f
        torch.testing.assert_close(l.weight, prod)
    out = m(x).detach()
    ws = [m[1].weight.detach().clone(), m[3].weight.detach().clone()]
    collapse(m)
    assert not any(is_factorized(l) for l in m.modules())
    assert sorted(n for n, _ in m.named_parameters()) == ['1.bias', '1.weight', '3.bias', '3.weight']
    torch.testing.assert_close(m[1].weight.detach(), ws[0]); torch.testing.assert_close(m[3].weight.detach(), ws[1])
    torch.testing.assert_close(m(x).detach(), out)


def test_conv_and_balanced_init_keep_function():
    conv = nn.Conv2d(2, 3, 3)
    x = torch.randn(2, 2, 6, 6)
    ref = conv(x).detach()
    factorize(conv, 3, init='balanced')
    torch.testing.assert_close(conv(x).detach(), ref, rtol=1e-5, atol=1e-5)
    assert conv.parametrizations.weight.original2.shape == conv.parametrizations.weight.original0.shape == (3, 2, 3, 3)


def test_inits_variance():
    for D in (2, 3, 4):
        assert abs(product_std_ratio(D, 'standard', sigma=0.05) / 0.05 ** (D - 1) - 1) < 0.1   # collapses like sigma^D
        assert abs(product_std_ratio(D, 'varmatch', sigma=0.05) - 1) < 0.05
        assert 0.2 < product_std_ratio(D, 'dwf', sigma=0.05) < 1
    w = torch.randn(200, 100) * 0.05
    for D in (1, 2, 3, 4):
        fs = init_factors(w, D, 'dwf', sigma=0.05, eps=1e-4, generator=torch.Generator().manual_seed(0))
        lo, hi = 1e-4 ** (1 / D), min(1.0, 0.1 ** (1 / D))
        for f in fs: assert lo * (1 - 1e-5) <= float(f.abs().min()) and float(f.abs().max()) <= hi * (1 + 1e-5)
        p = Product(D)(*fs)
        assert float(p.abs().max()) <= 0.1 * (1 + 1e-4) and float(p.abs().min()) >= 1e-4 * (1 - 1e-4)
        assert 0.3 < float((p > 0).float().mean()) < 0.7


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_dwf_matched_restores_variance(sigma):
    "The rescaled truncated init: product std = sigma (in expectation), same signs and relative order as 'dwf'."
    for D in (1, 2, 3, 4):
        assert abs(product_std_ratio(D, 'dwf_matched', sigma=sigma) - 1) < 0.05
    w = torch.randn(300, 200) * sigma
    for D in (2, 3):
        a = init_factors(w, D, 'dwf', sigma=sigma, generator=torch.Generator().manual_seed(1))
        b = init_factors(w, D, 'dwf_matched', sigma=sigma, generator=torch.Generator().manual_seed(1))
        r = [fb / fa for fa, fb in zip(a, b)]
        for x in r: assert float(x.min()) > 1 and abs(float(x.max() - x.min())) < 1e-5   # one common factor > 1


def test_fit_batch_order_is_device_independent():
    "fit draws its minibatch order on the CPU: a model trained from a CPU copy of x gives the same weights."
    torch.manual_seed(0); x, y = torch.randn(120, 20), torch.randint(0, 3, (120,))
    a, b = mlp(0), mlp(0)
    fit(a, x, y, lr=0.05, iterations=7, batch_size=16, seed=3)
    g = torch.Generator().manual_seed(3); perm = torch.randperm(120, generator=g)   # the order fit uses
    opt = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 7)
    for i in range(7):
        idx = perm[16 * i:16 * (i + 1)]; opt.zero_grad(); nn.functional.cross_entropy(b(x[idx]), y[idx]).backward(); opt.step(); sched.step()
    for pa, pb in zip(a.parameters(), b.parameters()): torch.testing.assert_close(pa, pb)


def test_bad_inputs():
    with pytest.raises(ValueError, match="init='glorot' is not allowed"): init_factors(torch.randn(3), 2, 'glorot')
    with pytest.raises(ValueError, match="eps="): init_factors(torch.randn(3) * 0.01, 2, 'dwf', eps=1.0)
    with pytest.raises(ValueError, match="include='fc9'"): factorize(mlp(), 2, include=['fc9'])
    with pytest.raises(ValueError, match="threshold=-1"): magnitude_mask(mlp(), -1)
    m = factorize(mlp(), 2)
    with pytest.raises(ValueError, match="not factorized yet"): factorize(m, 2)
    x, y = torch.randn(10, 20), torch.randint(0, 3, (10,))
    with pytest.raises(ValueError, match="lam=-0.1"): fit(m, x, y, lam=-0.1)
    with pytest.raises(ValueError, match="lr=0"): fit(m, x, y, lr=0)
    with pytest.raises(ValueError, match="schedule='step'"): fit(m, x, y, schedule='step')
    with pytest.raises(ValueError, match="mask key='nope'"): fit(mlp(), x, y, mask={'nope': torch.ones(1, dtype=torch.bool)})


def test_include_only_some_layers():
    m = factorize(mlp(), 2, include=['3.weight'])
    assert is_factorized(m[3]) and not is_factorized(m[1])
    assert len(factor_params(m)) == 2
    dec = {id(p) for p in decayed_params(m)}
    assert id(m[1].weight) in dec and id(m[1].bias) not in dec and id(m[3].bias) not in dec


def test_penalty_equivalence():
    bal = factorize(mlp(), 3, init='balanced')
    torch.testing.assert_close(factor_penalty(bal), equivalent_penalty(bal).detach(), rtol=1e-4, atol=1e-4)
    rnd = factorize(mlp(), 3, init='dwf', seed=0)
    assert float(factor_penalty(rnd).detach()) >= float(equivalent_penalty(rnd).detach())
    # D=2: min over u*v=w of (u^2+v^2)/2 = |w|
    two = factorize(mlp(), 2, init='balanced')
    l1 = sum(float(two[i].weight.detach().abs().sum()) for i in (1, 3))
    assert abs(float(factor_penalty(two).detach()) - l1) < 1e-4 * l1


def test_d1_matches_weight_decay():
    x, y = torch.randn(256, 20), torch.randint(0, 3, (256,))
    one, plain = factorize(mlp(), 1, init='balanced'), mlp()
    fit(one, x, y, lam=1e-2, lr=0.05, iterations=25, batch_size=32, seed=3)
    opt = torch.optim.SGD([dict(params=[plain[1].weight, plain[3].weight], weight_decay=1e-2),
                           dict(params=[plain[1].bias, plain[3].bias], weight_decay=0.0)], lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 25)
    g = torch.Generator().manual_seed(3); perm, pos = torch.randperm(256, generator=g), 0
    for _ in range(25):
        if pos + 32 > 256: perm, pos = torch.randperm(256, generator=g), 0
        idx = perm[pos:pos + 32]; pos += 32
        opt.zero_grad(); nn.functional.cross_entropy(plain(x[idx]), y[idx]).backward(); opt.step(); sched.step()
    for i in (1, 3): torch.testing.assert_close(one[i].weight.detach(), plain[i].weight.detach(), rtol=1e-6, atol=1e-6)


def regression(n=60, p=12, rho=0.6, noise=0.5, seed=0):
    g = np.random.default_rng(seed)
    C = rho ** np.abs(np.subtract.outer(np.arange(p), np.arange(p)))
    X = g.standard_normal((n, p)) @ np.linalg.cholesky(C).T
    w = np.zeros(p); w[[0, 4, 8]] = [2.0, -1.5, 1.0]
    return X, X @ w + noise * g.standard_normal(n)


def lasso(X, y, alpha):
    "argmin mean((y-Xw)^2)/2 + alpha |w|_1 via scipy L-BFGS-B on the split w = wp - wn (wp, wn >= 0)."
    import scipy.optimize
    n, p = X.shape
    def f(z):
        w = z[:p] - z[p:]; r = X @ w - y; gw = X.T @ r / n
        return 0.5 * r @ r / n + alpha * z.sum(), np.concatenate([gw + alpha, alpha - gw])
    z = scipy.optimize.minimize(f, np.zeros(2 * p), jac=True, method='L-BFGS-B', bounds=[(0, None)] * (2 * p),
                                options=dict(ftol=1e-16, gtol=1e-12, maxiter=10000)).x
    return z[:p] - z[p:]


def dwf_regression(X, y, lam, D, iterations=3000, lr=0.1, seed=0):
    lin = nn.Linear(X.shape[1], 1, bias=False).double()
    with torch.no_grad(): lin.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
    factorize(lin, D, seed=seed, eps=1e-6)
    fit(lin, torch.tensor(X), torch.tensor(y), lam=lam, lr=lr, iterations=iterations, batch_size=None, momentum=0.9,
        schedule='constant', loss='mse')
    w = lin.weight.detach().squeeze(0).numpy()
    return w, 0.5 * np.mean((X @ w - y) ** 2)


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_d2_is_lasso(alpha):
    "weight_decay=lam on two factors == lasso with alpha=lam on mean((y-Xw)^2)/2 (since min_{uv=w} (u^2+v^2)/2 = |w|)."
    X, y = regression()
    wl = lasso(X, y, alpha)
    w2, _ = dwf_regression(X, y, alpha, 2)
    np.testing.assert_allclose(w2, wl, atol=1e-5)
    np.testing.assert_array_equal(np.abs(w2) > 1e-4, np.abs(wl) > 1e-4)
    # the solver is really solving the lasso: KKT conditions
    g = X.T @ (X @ wl - y) / len(y)
    nz = np.abs(wl) > 1e-8
    np.testing.assert_allclose(g[nz], -alpha * np.sign(wl[nz]), atol=1e-6)
    assert np.all(np.abs(g[~nz]) <= alpha + 1e-6)


def test_d3_sparser_than_d2_at_equal_fit():
    X, y = regression()
    w2, m2 = dwf_regression(X, y, 0.05, 2)
    nnz2 = int((np.abs(w2) > 1e-4).sum())
    sols3 = [dwf_regression(X, y, lam, 3) for lam in (0.03, 0.05, 0.1)]
    nnz3 = min(int((np.abs(w) > 1e-4).sum()) for w, m in sols3 if m <= 1.05 * m2)
    assert nnz3 < nnz2, (nnz3, nnz2)
    w3 = sols3[0][0]
    assert set(np.flatnonzero(np.abs(w3) > 1e-4)) == {0, 4, 8}     # D=3 recovers exactly the true support


def test_sparsify_mask_and_report():
    m = factorize(mlp(), 2, seed=0)
    with torch.no_grad(): m[1].parametrizations.weight.original0[:4] = 0
    mask = sparsify(m, threshold=1e-3)
    assert set(mask) == {'1.weight', '3.weight'} and all(v.dtype == torch.bool for v in mask.values())
    assert not mask['1.weight'][:4].any()
    for n, p in m.named_parameters():
        if n in mask: assert torch.all(p[~mask[n]] == 0) and torch.all(p[mask[n]].abs() > 1e-3)
    rep = layer_sparsity(mask)
    assert rep['1.weight']['numel'] == 320 and rep['1.weight']['kept'] == int(mask['1.weight'].sum())
    assert rep['total']['kept'] == sum(int(v.sum()) for v in mask.values())
    assert 4 * 20 / 320 <= rep['1.weight']['sparsity'] <= 1


def test_fit_enforces_mask():
    m = mlp()
    mask = {'1.weight': torch.rand(16, 20, generator=torch.Generator().manual_seed(0)) < 0.5}
    x, y = torch.randn(128, 20), torch.randint(0, 3, (128,))
    fit(m, x, y, lr=0.1, iterations=20, batch_size=16, mask=mask)
    assert torch.all(m[1].weight[~mask['1.weight']] == 0) and torch.all(m[1].weight[mask['1.weight']] != 0)


def test_real_mnist_dwf_sparsifies(data_root):
    "A short D=3 run on real MNIST: large LR + decay gives a sparse net that still classifies."
    from lth_nb.data import get_data
    d = get_data('mnist', root=data_root, device='cpu', n_train=6000, n_test=2000)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    for l in net:
        if isinstance(l, nn.Linear): nn.init.xavier_normal_(l.weight); nn.init.zeros_(l.bias)
    factorize(net, 3, seed=0)
    fit(net, d.x_train, d.y_train, lam=1e-3, lr=0.3, iterations=600, batch_size=60)
    mask = sparsify(net)
    acc = evaluate(net, d.x_test, d.y_test)[1]
    sp = layer_sparsity(mask)
    assert sp['total']['sparsity'] > 0.5 and acc > 0.8, (sp['total'], acc)
    assert all(r['kept'] > 0 for r in sp.values())     # no layer collapse
