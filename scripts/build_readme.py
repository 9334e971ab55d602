#!/usr/bin/env python
"""Build README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which is not available everywhere).

    python scripts/build_readme.py          # write README.md
    python scripts/build_readme.py --check  # exit 1 if README.md is out of date

Markdown cells are copied; code cells are shown as python blocks with their text output; cells marked `#| hide`
are dropped and nbdev directive lines (`#| ...`) are removed, as nbdev's own README does.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB, OUT = ROOT / 'nbs' / 'index.ipynb', ROOT / 'README.md'
HEADER = '<!-- Generated from nbs/index.ipynb by scripts/build_readme.py: edit the notebook, not this file. -->\n\n'


def _src(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']


def _directives(src): return [l.strip()[2:].strip() for l in src.splitlines() if l.strip().startswith('#|')]


def _text_outputs(cell):
    out = []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream': out.append(''.join(o['text']))
        elif o['output_type'] in ('execute_result', 'display_data'):
            d = o.get('data', {})
            if 'text/markdown' in d: out.append(('MD', ''.join(d['text/markdown'])))
            elif 'text/plain' in d: out.append(''.join(d['text/plain']))
    return out


def render(nb) -> str:
    parts = []
    for cell in nb['cells']:
        src = _src(cell)
        dirs = _directives(src)
        if any(d.split(':')[0].strip() in ('hide', 'exporti') for d in dirs): continue
        if cell['cell_type'] == 'markdown':
            parts.append(src.strip())
        elif cell['cell_type'] == 'code':
            code = '\n'.join(l for l in src.splitlines() if not l.strip().startswith('#|')).strip()
            echo = not any(d.replace(' ', '') in ('echo:false',) for d in dirs)
            if code and echo: parts.append(f'```python\n{code}\n```')
            for o in _text_outputs(cell):
                if isinstance(o, tuple): parts.append(o[1].strip())
                elif o.strip(): parts.append(f'    ' + o.rstrip().replace('\n', '\n    '))
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'


def main(argv):
    text = render(json.loads(NB.read_text(encoding='utf-8')))
    if '--check' in argv:
        if not OUT.exists() or OUT.read_text(encoding='utf-8') != text:
            print('README.md is out of date with nbs/index.ipynb: run `python scripts/build_readme.py`')
            return 1
        print('README.md is in sync with nbs/index.ipynb')
        return 0
    OUT.write_text(text, encoding='utf-8')
    print(f'wrote {OUT.relative_to(ROOT)}')
    return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
