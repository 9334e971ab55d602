"""Importing the library is cheap and has no side effects: heavy optional packages load only where needed."""
import json, subprocess, sys

import pytest

HEAVY = ('torchvision', 'matplotlib', 'seaborn', 'pandas', 'ipywidgets')
LIGHT_MODULES = ['lth_nb.core', 'lth_nb.data', 'lth_nb.models', 'lth_nb.prune', 'lth_nb.compact', 'lth_nb.strategies',
                 'lth_nb.train', 'lth_nb.optim', 'lth_nb.lottery', 'lth_nb.baselines', 'lth_nb.presets', 'lth_nb.viz', 'lth_nb.claims', 'lth_nb.batched', 'lth_nb.bench', 'lth_nb.bench_suite',
                 'lth_nb.stacked', 'lth_nb.fastpath', 'lth_nb.correlation', 'lth_nb.landscape', 'lth_nb.slices',
                 'lth_nb.variational', 'lth_nb.gate_training', 'lth_nb.dwf', 'lth_nb.cli']


def _loaded_after(mod):
    code = (f"import sys, json, importlib; importlib.import_module({mod!r}); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    if r.returncode and 'ModuleNotFoundError' in r.stderr and mod in r.stderr: pytest.skip(f'{mod} not built yet')
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('mod', LIGHT_MODULES)
def test_no_heavy_imports(mod):
    assert _loaded_after(mod) == [], f'importing {mod} pulls in heavy optional packages'


def test_import_has_no_side_effects(tmp_path):
    "Importing every module touches neither the data folder nor the cache folder."
    code = "import importlib\nfor m in %r:\n    try: importlib.import_module(m)\n    except ModuleNotFoundError: pass\n" % LIGHT_MODULES
    env = {'LTH_NB_DATA': str(tmp_path / 'data'), 'LTH_NB_CACHE': str(tmp_path / 'cache'), 'LTH_NB_STORE': str(tmp_path / 'store'),
           'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
