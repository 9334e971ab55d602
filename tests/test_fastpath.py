"""The GPU fast path: CUDA-graph replay of batched steps equals eager training; n:m masks; clear refusals.

The graph tests need a CUDA device and are skipped without one (CI has none); they were run on a lent H100.
"""
import pytest
import torch

from lth_nb.batched import StackedMLP, train_stacked
from lth_nb.data import get_data
from lth_nb.fastpath import GraphedStep, nm_mask, nm_prune, semi_structured, train_stacked_graphed
from lth_nb.models import get_model
from lth_nb.prune import Mask
from lth_nb.train import TrainConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("shape", [(4, 8), (16, 64), (3, 5, 16)])
@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_keeps_n_largest_per_group(shape, nm):
    n, m = nm
    w = torch.randn(*shape)
    k = nm_mask(w, n, m)
    assert k.shape == w.shape and k.dtype == torch.bool
    g, kg = w.abs().reshape(-1, m), k.reshape(-1, m)
    assert (kg.sum(1) == n).all()
    assert (g.masked_fill(~kg, float('inf')).min(1).values >= g.masked_fill(kg, -1).max(1).values).all()


def test_nm_bad_inputs():
    with pytest.raises(ValueError, match="divisible by m=4"): nm_mask(torch.randn(2, 6))
    with pytest.raises(ValueError, match="0 < n <= m"): nm_mask(torch.randn(2, 8), 5, 4)
    with pytest.raises(ValueError, match="fp16/bf16 on CUDA"): semi_structured(torch.randn(64, 64))


def test_nm_prune_skips_indivisible_layers():
    m = get_model('lenet300_100', seed=0)  # fc1 784 inputs, fc2 300, fc3 100: all divide by 4
    mk = nm_prune(m)
    assert set(mk) == {'fc1.weight', 'fc2.weight', 'fc3.weight'} and abs(mk.density - 0.5) < 1e-9
    assert set(nm_prune(m, 2, 8)) == {'fc1.weight'}  # 300 and 100 do not divide by 8


def test_graphed_refuses_cpu():
    data = get_data('synthetic', like='mnist', n_train=200, n_val=50, n_test=50, seed=0, device='cpu')
    net = StackedMLP.from_models([get_model('lenet300_100', seed=s) for s in range(2)])
    with pytest.raises(ValueError, match="a CUDA device"):
        train_stacked_graphed(net, data, TrainConfig(iterations=5))


def _pair(cfg, K=3, masks=None, lrs=None, start_iter=0, seed=0):
    data = get_data('synthetic', like='mnist', n_train=1000, n_val=200, n_test=200, seed=seed, device='cuda')
    models = [get_model('lenet300_100', seed=s) for s in range(K)]
    a = StackedMLP.from_models(models).cuda(); b = StackedMLP.from_models(models).cuda()
    ra = train_stacked(a, data, cfg, lrs=lrs, masks=masks, start_iter=start_iter, graph=False)
    rb = train_stacked(b, data, cfg, lrs=lrs, masks=masks, start_iter=start_iter, graph=True)
    return a, b, ra, rb


@cuda
@pytest.mark.parametrize("case", ["adam", "adam_lrs", "sgd", "sgd_lrs", "adam_masked", "sgd_masked_start", "cosine"])
def test_graphed_equals_eager(case):
    kw = dict(iterations=120, eval_every=25, batch_size=32)
    cfg = dict(adam=TrainConfig(**kw), adam_lrs=TrainConfig(**kw), sgd=TrainConfig(optimizer='sgd', lr=0.05, **kw),
               sgd_lrs=TrainConfig(optimizer='sgd', lr=0.05, **kw), adam_masked=TrainConfig(**kw),
               sgd_masked_start=TrainConfig(optimizer='sgd', lr=0.05, nesterov=True, weight_decay=1e-4, **kw),
               cosine=TrainConfig(schedule='cosine', warmup_iters=10, **kw))[case]
    K = 3
    lrs = {'adam_lrs': [1e-3, 2e-3, 5e-4], 'sgd_lrs': [0.01, 0.05, 0.1]}.get(case)
    masks = None
    if 'masked' in case:
        g = torch.Generator().manual_seed(0)
        ref = get_model('lenet300_100', seed=0)
        masks = [Mask({n: torch.rand(p.shape, generator=g) < 0.3 for n, p in ref.named_parameters() if n.endswith('weight')})
                 for _ in range(K)]
    a, b, ra, rb = _pair(cfg, K, masks, lrs, start_iter=30 if 'start' in case else 0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    for x, y in zip(ra, rb):
        assert [h['iter'] for h in x.history] == [h['iter'] for h in y.history]
        for hx, hy in zip(x.history, y.history):
            assert hx['lr'] == pytest.approx(hy['lr'])
            for k in ('train_loss', 'val_loss', 'test_acc'): assert hx[k] == pytest.approx(hy[k], rel=1e-4, abs=1e-5)
    if masks is not None:  # pruned weights stay exactly zero on the graphed path
        for i, (n, _) in enumerate(zip(b.names, b.weights)):
            w = b.weights[i]
            stacked = torch.stack([m[f'{n}.weight'] for m in masks]).cuda()
            assert (w[~stacked] == 0).all()


@cuda
def test_graphed_step_replays():
    x = torch.zeros(3, device='cuda')
    step = GraphedStep(lambda: x.add_(1), warmup=2)
    for _ in range(5): step()
    assert step.graph is not None and x.tolist() == [5.0] * 3


@cuda
def test_semi_structured_matches_dense():
    w = torch.randn(128, 128, device='cuda', dtype=torch.float16); w = w * nm_mask(w)
    x = torch.randn(64, 128, device='cuda', dtype=torch.float16)
    try: ws = semi_structured(w)
    except (RuntimeError, NotImplementedError) as e: pytest.skip(f"no 2:4 kernel on this device/torch: {e}")
    ref = torch.nn.functional.linear(x.float(), w.float())
    out = torch.nn.functional.linear(x, ws).float()
    assert float((out - ref).norm() / ref.norm()) < 1e-2
