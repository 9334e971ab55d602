"""Tests for lth_nb.models: parameter counts against the papers, output shapes, init statistics, width multiplier."""
import math

import pytest
import torch
from torch import nn

from lth_nb.models import MODELS, count_params, get_model, init_std, init_weights, output_layer, register_model

PAPER_COUNTS = {
    'lenet300_100': 266_610,   # LTH: 266K (with biases)
    'lenet5': 431_080,         # Caffe LeNet-5: conv20-conv50-fc500-10
    'conv2': 4_301_642,        # LTH table 4.3M
    'conv4': 2_425_930,        # LTH table 2.4M
    'conv6': 2_262_602,        # as described (the LTH table says 1.7M; see nbs/02_models.ipynb)
    'resnet20': 272_474,       # He et al. 0.27M (1x1 projection shortcuts)
}
SHAPES = {n: MODELS[n].in_shape for n in MODELS}


def test_registry_names():
    assert set(MODELS) >= {'lenet300_100', 'lenet5', 'conv2', 'conv4', 'conv6', 'vgg11', 'vgg16', 'vgg19', 'resnet20',
                           'mobilenetv2'}
    assert SHAPES['lenet300_100'] == (1, 28, 28) and SHAPES['lenet5'] == (1, 28, 28) and SHAPES['vgg19'] == (3, 32, 32)


@pytest.mark.parametrize('name, n', PAPER_COUNTS.items())
def test_param_counts(name, n):
    assert count_params(get_model(name)) == n


@pytest.mark.parametrize('name, lo, hi', [('resnet20', 0.26e6, 0.28e6), ('vgg19', 19.9e6, 20.2e6),
                                         ('vgg16', 14.6e6, 15.0e6), ('vgg11', 9.1e6, 9.4e6),
                                         ('mobilenetv2', 2.2e6, 2.4e6)])
def test_param_count_ranges(name, lo, hi):
    assert lo < count_params(get_model(name)) < hi


def test_prunable_count():
    m = get_model('lenet300_100')
    assert count_params(m, only_prunable=True) == 784 * 300 + 300 * 100 + 100 * 10


@pytest.mark.parametrize('name', sorted(MODELS))
def test_output_shape(name):
    m = get_model(name, seed=0).eval()
    with torch.no_grad():
        assert m(torch.randn(2, *SHAPES[name])).shape == (2, 10)
    m.train()
    assert m(torch.randn(2, *SHAPES[name])).shape == (2, 10)


@pytest.mark.parametrize('name', ['conv2', 'conv4', 'conv6'])
def test_conv_nets_take_fashion_mnist(name):
    m = get_model(name, in_shape=(1, 28, 28))
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize('name', ['lenet300_100', 'conv4', 'resnet20', 'vgg11', 'mobilenetv2'])
def test_num_classes(name):
    m = get_model(name, num_classes=100)
    assert m(torch.randn(2, *SHAPES[name])).shape == (2, 100)
    assert getattr(m.get_submodule(output_layer(m)), 'out_features') == 100


def test_parameter_names_and_output_layer():
    assert [n for n, _ in get_model('lenet300_100').named_parameters()] == \
        ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'fc3.weight', 'fc3.bias']
    assert [n for n, _ in get_model('lenet5').named_parameters()][::2] == ['conv1.weight', 'conv2.weight', 'fc1.weight', 'fc2.weight']
    assert 'features.0.weight' in dict(get_model('conv2').named_parameters())
    outs = {n: output_layer(get_model(n)) for n in MODELS}
    assert outs['lenet300_100'] == 'fc3' and outs['conv6'] == 'classifier.4' and outs['vgg19'] == 'classifier.0'
    assert outs['resnet20'] == 'fc' and outs['mobilenetv2'] == 'fc'


def test_plain_modules():
    "Only standard layers hold parameters (masks and torch.nn.utils.prune work on them)."
    allowed = (nn.Linear, nn.Conv2d, nn.BatchNorm2d)
    for name in MODELS:
        for mod_name, mod in get_model(name).named_modules():
            if any(True for _ in mod.parameters(recurse=False)):
                assert isinstance(mod, allowed), (name, mod_name, type(mod))


@pytest.mark.parametrize('scheme', ['glorot', 'kaiming'])
def test_init_statistics(scheme):
    m = get_model('conv4', init=scheme, seed=0)
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            w = mod.weight
            fan_in = w[0].numel(); fan_out = w.shape[0] * (w[0, 0].numel() if w.ndim > 2 else 1)
            want = math.sqrt(2 / (fan_in + fan_out)) if scheme == 'glorot' else math.sqrt(2 / fan_in)
            assert init_std(w, scheme) == pytest.approx(want)
            if w.numel() > 20_000: assert w.std().item() == pytest.approx(want, rel=0.03)
            assert abs(w.mean().item()) < 4 * want / math.sqrt(w.numel()) + 1e-6
            assert mod.bias.abs().sum() == 0


def test_glorot_lenet_first_layer():
    w = get_model('lenet300_100', seed=0).fc1.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (784 + 300)), rel=0.01)
    # Gaussian, not uniform: about 4.6% of draws beyond 2 sigma (uniform Glorot has none beyond 1.73 sigma)
    frac = (w.abs() > 2 * w.std()).float().mean().item()
    assert 0.035 < frac < 0.06


def test_batchnorm_init():
    m = get_model('resnet20', seed=0)
    assert torch.all(m.bn1.weight == 1) and torch.all(m.bn1.bias == 0)


def test_seeded_init_reproducible():
    a, b, c = get_model('lenet5', seed=1), get_model('lenet5', seed=1), get_model('lenet5', seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    state = torch.get_rng_state()
    get_model('lenet5', seed=3)
    assert torch.equal(state, torch.get_rng_state())    # a seeded init leaves the global generator alone
    m = get_model('lenet5', seed=1)
    init_weights(m, 'glorot', seed=1)
    assert torch.equal(m.fc1.weight, a.fc1.weight)


@pytest.mark.parametrize('width', [0.5, 2.0])
def test_width_multiplier(width):
    m = get_model('lenet300_100', width=width)
    assert (m.fc1.out_features, m.fc2.out_features, m.fc3.out_features) == (int(300 * width), int(100 * width), 10)
    assert m.fc1.in_features == 784
    c = get_model('conv6', width=width)
    assert [l.out_channels for l in c.modules() if isinstance(l, nn.Conv2d)] == [int(v * width) for v in (64, 64, 128, 128, 256, 256)]
    assert c.classifier[0].out_features == int(256 * width) and c.classifier[-1].out_features == 10
    r = get_model('resnet20', width=width)
    assert r.conv1.out_channels == int(16 * width) and r.fc.in_features == int(64 * width)
    for name in ('lenet5', 'vgg11', 'mobilenetv2'):
        assert get_model(name, width=width)(torch.randn(2, *SHAPES[name])).shape == (2, 10)
    # a wider dense net has more parameters, roughly by width**2 for the hidden layers
    assert count_params(get_model('conv4', width=width)) / count_params(get_model('conv4')) == pytest.approx(width ** 2, rel=0.25)


def test_errors():
    with pytest.raises(ValueError, match=r"name='resnet18' is not allowed: expected one of \['conv2'"):
        get_model('resnet18')
    with pytest.raises(ValueError, match="init='uniform' is not allowed"):
        get_model('conv2', init='uniform')
    with pytest.raises(ValueError, match='width=0 is not allowed'):
        get_model('conv2', width=0)
    with pytest.raises(ValueError, match=r'in_shape=\(3, 16, 16\)'):
        get_model('vgg11', in_shape=(3, 16, 16))
    with pytest.raises(ValueError, match='in_shape'):
        get_model('conv2', in_shape=(28, 28))


def test_register_model():
    @register_model('tiny_test_mlp', in_shape=(1, 4, 4))
    def tiny(num_classes=10, in_shape=(1, 4, 4), width=1.0):
        return nn.Sequential(nn.Flatten(), nn.Linear(16, max(1, int(8 * width))), nn.ReLU(),
                             nn.Linear(max(1, int(8 * width)), num_classes))
    try:
        m = get_model('tiny_test_mlp', width=2, num_classes=3)
        assert m(torch.randn(5, 1, 4, 4)).shape == (5, 3) and m[1].out_features == 16
    finally:
        del MODELS['tiny_test_mlp']
