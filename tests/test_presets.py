"""lth_nb.presets: the papers' settings and tiers, CIFAR presets end to end on synthetic CIFAR-shaped data, and the lazy
re-export of the preset names from lth_nb.lottery."""
import subprocess, sys

import pytest

from lth_nb.presets import PRESETS, TIERS, get_preset, preset, preset_seeds, run_preset


# ---------------------------------------------------------------- re-export from lth_nb.lottery
def test_lottery_reexports_lazily():
    import lth_nb.lottery, lth_nb.presets
    from lth_nb.lottery import PRESETS as P, TIERS as T, preset as p, run_preset as r
    assert (P, T, p, r) == (PRESETS, TIERS, preset, run_preset) and lth_nb.lottery.get_preset is get_preset
    assert set(lth_nb.presets.__all__) <= set(lth_nb.lottery.__all__)
    with pytest.raises(AttributeError, match='no_such_name'): lth_nb.lottery.no_such_name
    with pytest.raises(ImportError): exec('from lth_nb.lottery import no_such_name', {})


@pytest.mark.parametrize('code', [
    "import lth_nb.lottery as L, sys; assert 'lth_nb.presets' not in sys.modules; "
    "assert L.preset('lenet300_mnist', 'ci').rounds == 5 and L.run_preset.__module__ == 'lth_nb.presets'",
    "import lth_nb.presets, lth_nb.lottery; assert lth_nb.lottery.PRESETS is lth_nb.presets.PRESETS",
    "from lth_nb.lottery import *; assert len(PRESETS) > 5 and TIERS == ('ci', 'quick', 'full') and callable(imp)",
    "import lth_nb.cli, lth_nb.viz"])
def test_import_orders_have_no_cycle(code):
    subprocess.run([sys.executable, '-c', code], check=True)


# ---------------------------------------------------------------- presets
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
