"""lth_nb.compact: compaction keeps outputs and shrinks params/MACs, sparsity reports, torch.nn.utils.prune interop,
and the lazy re-export of these names from lth_nb.prune."""
import copy, subprocess, sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lth_nb.compact import compact, from_torch_prune, sparsity_report, to_torch_prune
from lth_nb.prune import Mask, apply_mask, layer_kind, magnitude_prune, mask_enforcer, prunable, random_prune
from lth_nb.strategies import structured_prune
from test_prune import MODELS, assert_masked, build, inp, rand_conv   # the random models of the prune tests


# ---------------------------------------------------------------- re-export from lth_nb.prune
def test_prune_reexports_lazily():
    import lth_nb.compact, lth_nb.prune
    from lth_nb.prune import compact as c, from_torch_prune as f, sparsity_report as s, to_torch_prune as t
    assert (c, f, s, t) == (compact, from_torch_prune, sparsity_report, to_torch_prune)
    assert {'compact', 'sparsity_report', 'to_torch_prune', 'from_torch_prune'} <= set(lth_nb.prune.__all__)
    with pytest.raises(AttributeError, match='no_such_name'): lth_nb.prune.no_such_name
    with pytest.raises(ImportError): exec('from lth_nb.prune import no_such_name', {})


@pytest.mark.parametrize('code', [
    "import lth_nb.prune, sys; assert 'lth_nb.compact' not in sys.modules; from lth_nb.prune import compact; "
    "assert compact.__module__ == 'lth_nb.compact'",
    "import lth_nb.compact, lth_nb.prune; assert lth_nb.prune.sparsity_report is lth_nb.compact.sparsity_report",
    "from lth_nb.prune import *; assert compact.__module__ == 'lth_nb.compact' and callable(magnitude_prune)"])
def test_import_orders_have_no_cycle(code):
    subprocess.run([sys.executable, '-c', code], check=True)


# ---------------------------------------------------------------- torch.nn.utils.prune interop and reports
def test_torch_prune_roundtrip():
    m = rand_conv(3)
    mk = random_prune(m, 0.6, seed=1)
    to_torch_prune(m, mk)
    x = inp(m)
    y = m(x)
    back = from_torch_prune(m, remove=True)
    assert back.equal(mk) and 'weight_orig' not in dict(m.named_parameters())
    assert torch.allclose(m(x), y)
    assert all((p[~mk[n]] == 0).all() for n, p in prunable(m).items())


def test_sparsity_report_rows():
    m = rand_conv(0)
    mk = magnitude_prune(m, 0.5)
    apply_mask(m, mk)
    rows = sparsity_report(m, mk)
    assert [r['layer'] for r in rows] == list(mk) + ['total']
    assert rows[-1]['alive'] == mk.n_alive and rows[-1]['weights'] == mk.n_total
    assert all(r['zeros'] >= r['weights'] - r['alive'] for r in rows)
    inferred = sparsity_report(m)                                  # from the stored zeros
    assert inferred[-1]['alive'] <= mk.n_alive
    df = sparsity_report(m, mk, as_frame=True)
    assert list(df.index) == [r['layer'] for r in rows]


# ---------------------------------------------------------------- compact
@pytest.mark.parametrize('kind,seed', MODELS)
@pytest.mark.parametrize('rate', [0.3, 0.6])
def test_compact_keeps_outputs(kind, seed, rate):
    m = build(kind, seed, bias_scale=0.5)
    if kind == 'conv' and seed % 2: m = rand_conv(seed, bn=True, bias_scale=0.5)
    mk = structured_prune(m, rate, norm='l2' if seed % 2 else 'l1')
    mk = magnitude_prune(m, 0.2, mk)                               # plus some unstructured sparsity
    small, rep = compact(m, mk)
    x = inp(m, 16, seed)
    ref = apply_mask(copy.deepcopy(m), mk).eval()(x)
    assert torch.allclose(small(x), ref, atol=1e-5, rtol=1e-4)
    assert rep['params_after'] == sum(p.numel() for p in small.parameters())
    assert rep['params_after'] < rep['params_before'] and rep['macs_after'] < rep['macs_before']
    assert rep['flops_after'] == 2 * rep['macs_after']
    names = [n.rpartition('.')[0] for n in mk]
    for n in names[:-1]:
        w = mk[n + '.weight']
        assert rep['units_after'][n] <= int(w.reshape(len(w), -1).any(1).sum()) + rep['kept_unfoldable']


def test_compact_dead_outgoing_and_functional_forward():
    class Net(nn.Module):
        def __init__(self):
            super().__init__(); self.fc1, self.fc2, self.fc3 = nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3)
        def forward(self, x): return self.fc3(F.relu(self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))))
    torch.manual_seed(0)
    m = Net()
    mk = Mask.ones(m)
    mk['fc2.weight'][:, 1] = False                                 # unit 1 of fc1 feeds nothing
    small, rep = compact(m, mk)
    assert rep['units_after'] == {'fc1': 4, 'fc2': 4, 'fc3': 3}
    x = torch.randn(3, 6)
    assert torch.allclose(small(x), apply_mask(copy.deepcopy(m), mk)(x), atol=1e-6)


def test_compact_refuses_residual_and_depthwise():
    class Res(nn.Module):
        def __init__(self): super().__init__(); self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
        def forward(self, x): return self.b(torch.relu(self.a(x)) + x)
    with pytest.raises(ValueError, match='residual'): compact(Res(), Mask.ones(Res()))
    dw = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match='depthwise'): compact(dw, Mask.ones(dw), input_shape=(4, 3, 3))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match='input_shape'): compact(conv, Mask.ones(conv))


@pytest.mark.parametrize('name,width', [('lenet300_100', 0.25), ('lenet5', 0.5), ('conv2', 0.125), ('conv6', 0.125),
                                        ('vgg11', 0.125)])
def test_registry_nets_prune_compact_enforce(name, width):
    models = pytest.importorskip('lth_nb.models')
    m = models.get_model(name, width=width, seed=0).eval()
    shape = models.MODELS[name].in_shape
    names = list(prunable(m))
    assert layer_kind(m, names[-1]) == 'output' and all(layer_kind(m, n) != 'output' for n in names[:-1])
    mk = structured_prune(m, 0.5)
    mk = magnitude_prune(m, 0.2, mk, rates={'conv': 0.15, 'fc': 0.2, 'output': 0.1})
    small, rep = compact(m, mk, input_shape=shape)
    x = torch.randn((4,) + shape)
    assert torch.allclose(small(x), apply_mask(copy.deepcopy(m), mk)(x), atol=1e-5, rtol=1e-4)
    assert rep['macs_after'] < rep['macs_before']
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    enf = mask_enforcer(m, mk, opt)
    for _ in range(2):
        opt.zero_grad(); F.cross_entropy(m(x), torch.arange(4) % 10).backward(); opt.step()
        assert_masked(m, mk, opt)
    enf.detach()


@pytest.mark.parametrize('name', ['resnet20', 'mobilenetv2'])
def test_registry_residual_nets_refused(name):
    models = pytest.importorskip('lth_nb.models')
    m = models.get_model(name, width=0.25, seed=0).eval()
    shape = models.MODELS[name].in_shape
    with pytest.raises(ValueError, match='residual'): compact(m, structured_prune(m, 0.5), input_shape=shape)
