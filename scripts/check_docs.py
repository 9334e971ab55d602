#!/usr/bin/env python
"""Check the docs build up to the step Quarto takes over, and that the processed pages render in a browser.

1. nbdev's docs processing (what `nbdev_proc_nbs` / `nbdev_docs` run before Quarto renders) turns every notebook
   into `_proc/` (show_doc, directives, ...). We call its steps directly (refresh_quarto_yml, module index, sidebar,
   proc_nbs), skipping only `nbdev_proc_nbs`'s attempt to install Quarto, which needs root and a network.
2. Each processed notebook is converted to HTML with nbconvert and loaded in headless Chromium (when available;
   required in CI): the page must render its title, and no cell may show an error.
`nbdev_docs` / `nbdev_preview` (Quarto) remain the way to build and publish the site where Quarto is installed.
"""
import json, os, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def process() -> Path:
    """nbdev's docs processing (`nbdev_proc_nbs` minus its Quarto install attempt, which needs root and network):
    refresh `_quarto.yml`/`nbdev.yml`, the module index, the sidebar, then `proc_nbs` into `_proc/`."""
    os.chdir(ROOT)
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    refresh_quarto_yml(); _build_modidx(); nbdev_sidebar.__wrapped__()
    try: return Path(proc_nbs(n_workers=1, force=True))
    except Exception as e:
        raise SystemExit(f'docs processing failed: {e}\n(nbdev executes every `#| export` cell and every cell that '
                         'contains an import for the docs: never mix imports with other code in one cell)')


def to_html(proc: Path, out: Path) -> list:
    from nbconvert import HTMLExporter
    import nbformat
    exp, pages = HTMLExporter(), []
    for nb_path in sorted(proc.glob('**/*.ipynb')):
        nb = nbformat.read(nb_path, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']
        if errors: raise SystemExit(f'{nb_path.relative_to(proc)}: processed notebook has error outputs: {errors[0].get("ename")}')
        title = next((l.lstrip('# ').strip() for c in nb.cells if c.cell_type == 'markdown'
                      for l in c.source.splitlines() if l.startswith('# ')), None)
        if title is None:  # nbdev moves the title into the front matter of the first raw cell
            raw = next((c.source for c in nb.cells if c.cell_type == 'raw'), '')
            title = next((l.split(':', 1)[1].strip() for l in raw.splitlines() if l.startswith('title:')), nb_path.stem)
        html, _ = exp.from_notebook_node(nb)
        page = out / nb_path.relative_to(proc).with_suffix('.html')
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(html, encoding='utf-8')
        pages.append((page, title))
    return pages


def chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(name): return shutil.which(name)
    return None


def browse(pages):
    exe = chromium()
    if exe is None:
        msg = 'headless Chromium not found (apt-get install chromium): pages not checked in a browser'
        if IN_CI: raise SystemExit('CI: ' + msg)
        print(msg); return
    with tempfile.TemporaryDirectory() as prof:
        for page, title in pages:
            r = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                '--disable-component-update', '--disable-sync', '--no-first-run', f'--user-data-dir={prof}',
                                '--dump-dom', page.as_uri()], capture_output=True, text=True, timeout=120)
            dom = r.stdout
            if r.returncode or '<body' not in dom: raise SystemExit(f'{page.name}: Chromium could not render it: {r.stderr[-500:]}')
            key = title.strip('"\'')[:40].replace('&', '&amp;')
            if key not in dom: raise SystemExit(f'{page.name}: rendered page lacks its title {key!r}')
    print(f'headless Chromium rendered {len(pages)} pages, each with its title and no error cells')


def main():
    proc = process()
    out = ROOT / '_proc' / '_html'
    pages = to_html(proc, out)
    if not pages: raise SystemExit('docs processing produced no pages')
    print(f'processed {len(pages)} notebooks into {proc.relative_to(ROOT)}/ and HTML')
    browse(pages)


if __name__ == '__main__': main()
