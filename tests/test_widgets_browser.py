"""The IMP explorer in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

Opt-in locally with LTH_NB_BROWSER_TESTS=1; always on in CI (CI=true), where missing pieces are failures.
Needs `jupyterlab` and `playwright` (Python) and /usr/bin/chromium (apt-get install chromium); never downloads a browser.
Set LTH_NB_DOCS_SCREENSHOT=1 to also write the docs image nbs/images/widgets_explorer.png.
"""
import json, os, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')
ENABLED = IN_CI or os.environ.get('LTH_NB_BROWSER_TESTS', '').lower() in ('1', 'true', 'yes')
CHROMIUM = os.environ.get('LTH_NB_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']
ROOT = Path(__file__).resolve().parents[1]
TOKEN = 'lth-nb-browser-test'

pytestmark = pytest.mark.skipif(not ENABLED, reason='browser test: set LTH_NB_BROWSER_TESTS=1 (always on with CI=true)')

TINY = dict(data_kw=dict(n_train=300, n_val=60, n_test=100), val_size=60,
            train=dict(iterations=12, eval_every=4, batch_size=50))


def _require():
    "Skip locally / fail in CI when jupyterlab, playwright or Chromium is missing."
    missing = []
    for mod in ('jupyterlab', 'playwright'):
        try: __import__(mod)
        except ImportError: missing.append(f'python package {mod}')
    if not Path(CHROMIUM).exists(): missing.append(CHROMIUM)
    if missing:
        msg = f'browser test needs {", ".join(missing)} (pip install jupyterlab playwright; apt-get install chromium)'
        if IN_CI: pytest.fail(msg)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _notebook(path: Path, store_dir: Path):
    "A one-cell notebook that builds the explorer on a tiny synthetic budget over `store_dir`."
    src = (f"import os\nos.environ['OMP_NUM_THREADS'] = '1'\nimport torch\ntorch.set_num_threads(1)\n"
           f"from lth_nb.core import Store\nfrom lth_nb.widgets import IMPExplorer\n"
           f"store = Store({str(store_dir / 'runs')!r}, tensor_root={str(store_dir / 'tensors')!r})\n"
           f"ex = IMPExplorer(store, 'lenet300_100', 'synthetic', rate=0.5, lr=3e-3, rounds=1, **{TINY!r})\nex")
    nb = dict(nbformat=4, nbformat_minor=5, cells=[dict(cell_type='code', id='explorer', metadata={}, source=src,
                                                         outputs=[], execution_count=None)],
              metadata=dict(kernelspec=dict(name='python3', display_name='Python 3 (ipykernel)', language='python')))
    path.write_text(json.dumps(nb, indent=1))


@pytest.fixture
def lab(tmp_path):
    "JupyterLab with a token on 127.0.0.1 (free port), serving tmp_path; stopped (with its kernels) afterwards."
    _require()
    port = _free_port()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep)}
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--ServerApp.port={port}', '--ServerApp.ip=127.0.0.1',
           f'--IdentityProvider.token={TOKEN}', f'--ServerApp.root_dir={tmp_path}', '--ServerApp.port_retries=0',
           f'--LabApp.user_settings_dir={tmp_path / "settings"}', f'--LabApp.workspaces_dir={tmp_path / "workspaces"}',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.extension_manager=readonly']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')   # CI containers run as root
    log = open(tmp_path / 'jupyterlab.log', 'w')
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f'{url}/api/status?token={TOKEN}', timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f'JupyterLab did not start:\n{(tmp_path / "jupyterlab.log").read_text()[-3000:]}')
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()   # the server shuts its kernels down on SIGTERM
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        log.close()


def test_explorer_in_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright
    from lth_nb.core import Store
    from lth_nb.lottery import imp
    from lth_nb.widgets import explorer_config
    import torch
    torch.set_num_threads(1)
    store_dir = tmp_path / 'store'
    # the starting setting is already stored, so the explorer shows a plot at once
    imp(explorer_config('lenet300_100', 'synthetic', rate=0.5, lr=3e-3, rounds=1, **TINY),
        Store(store_dir / 'runs', tensor_root=store_dir / 'tensors'))
    _notebook(tmp_path / 'explorer.ipynb', store_dir)
    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport=dict(width=1400, height=1000))
            page.set_default_timeout(60_000)
            page.goto(f'{lab}/lab/tree/explorer.ipynb?token={TOKEN}', timeout=60_000)
            # wait for the kernel, then run the cell (Shift+Enter in its editor; retried if the keypress was lost)
            page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=90_000)
            started = "() => { const p = document.querySelector('.jp-Cell .jp-InputPrompt'); return p && /\\[[*0-9]/.test(p.innerText); }"
            for attempt in range(3):
                page.locator('.jp-Notebook .jp-Cell .cm-content').first.click(timeout=30_000)
                page.keyboard.press('Shift+Enter')
                try: page.wait_for_function(started, timeout=15_000); break
                except Exception:
                    if attempt == 2: raise
            page.wait_for_selector('.widget-slider', timeout=90_000)
            plot = page.locator('.widget-output img').first
            plot.wait_for(timeout=60_000)
            src0 = plot.get_attribute('src')
            status = page.locator('.widget-html-content').first
            assert 'stored: 3/3' in status.inner_text()
            # the rate slider (the first): arrow keys move it to an unstored setting
            handle = page.locator('.widget-slider [role=slider]').first
            handle.focus()
            page.keyboard.press('ArrowRight'); page.keyboard.press('ArrowRight')
            page.wait_for_function("() => [...document.querySelectorAll('.widget-html-content')]"
                                   ".some(e => e.innerText.includes('click Run'))", timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('.widget-output img').length == 0", timeout=30_000)
            page.locator('.widget-button', has_text='Run').first.click()
            page.wait_for_function("() => [...document.querySelectorAll('.widget-html-content')]"
                                   ".some(e => e.innerText.includes('stored: 3/3'))", timeout=120_000)
            plot = page.locator('.widget-output img').first
            plot.wait_for(timeout=30_000)
            src1 = plot.get_attribute('src')
            assert src1 and src1 != src0, 'the plot changed after Run'
            page.screenshot(path=str(tmp_path / 'explorer_page.png'), full_page=True)
            area = page.locator('.jp-Cell-outputArea').first
            area.screenshot(path=str(tmp_path / 'widgets_explorer.png'))
            if os.environ.get('LTH_NB_DOCS_SCREENSHOT', '').lower() in ('1', 'true', 'yes'):
                (ROOT / 'nbs' / 'images').mkdir(exist_ok=True)
                shutil.copy(tmp_path / 'widgets_explorer.png', ROOT / 'nbs' / 'images' / 'widgets_explorer.png')
        except Exception:
            page.screenshot(path=str(tmp_path / 'failure.png'), full_page=True)
            print('failure screenshot:', tmp_path / 'failure.png')
            print('page text:', page.locator('.jp-Notebook').first.inner_text()[-3000:])
            raise
        finally:
            browser.close()
    assert (tmp_path / 'widgets_explorer.png').stat().st_size > 10_000
    # the run the browser asked for is in the store, at rate 0.6
    cfg = explorer_config('lenet300_100', 'synthetic', rate=0.6, lr=3e-3, rounds=1, **TINY)
    from lth_nb.widgets import stored_run, missing_trainings
    got = stored_run(cfg, Store(store_dir / 'runs', tensor_root=store_dir / 'tensors'))
    assert got is not None and missing_trainings(cfg, got) == []
    assert time.time() - t0 < 170
