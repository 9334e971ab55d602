#!/usr/bin/env python
"""Copy stored lottery runs (JSON only) into a committed store, thinned: ticket stages keep every `--every`-th
evaluation of their `history` (plus the last), control stages (reinit / random mask) drop `history`; every scalar field
is kept as it is. Each changed stage records what was done (`history_thinned_every` / `history_dropped`, and
`history_points_stored`, the number of evaluations the run had).

Used for the full LeNet-300-100 protocol trained on a GPU (`scripts/lth_full_gpu.py`; 500 evaluations per training):

    python scripts/thin_store.py /path/to/gpu_store/imp results/lottery/imp --every 5
"""
import argparse, json, re, shutil, sys
from pathlib import Path

CONTROL = re.compile(r'^round_\d+_(reinit|random_mask)_\d+$')
TICKET = re.compile(r'^(round|target)_[\w.]+$')


def thin_history(h: list, every: int) -> list:
    "Every `every`-th evaluation of `h` (the 1st kept is number `every`), plus the last."
    return [e for i, e in enumerate(h) if (i + 1) % every == 0 or i == len(h) - 1]


def thin_stage(d: dict, name: str, every: int) -> dict:
    "A copy of stage `d` with its history thinned (ticket) or dropped (control); other fields unchanged."
    h = d.get('history')
    if not h or 'history_thinned_every' in d or 'history_dropped' in d: return d
    out = dict(d)
    if CONTROL.match(name):
        out.pop('history'); out.update(history_dropped=True, history_points_stored=len(h))
    else:
        out.update(history=thin_history(h, every), history_thinned_every=every, history_points_stored=len(h))
    return out


def thin_run(src: Path, dst: Path, every: int) -> int:
    "Thin one run folder `src` (config.json, meta.json, stages) into `dst`; returns the bytes written."
    dst.mkdir(parents=True, exist_ok=True); n = 0
    for f in sorted(src.glob('*.json')):
        if f.stem in ('config', 'meta') or not (CONTROL.match(f.stem) or TICKET.match(f.stem)):
            shutil.copyfile(f, dst / f.name)
        else:
            (dst / f.name).write_text(json.dumps(thin_stage(json.loads(f.read_text()), f.stem, every), indent=1))
        n += (dst / f.name).stat().st_size
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('src', help='a kind folder of a store (e.g. <store>/imp) holding run folders <key>/')
    ap.add_argument('dst', help='the kind folder to write (e.g. results/lottery/imp)')
    ap.add_argument('--every', type=int, default=5, help='keep every N-th evaluation of ticket histories (and the last)')
    ap.add_argument('--keys', nargs='*', help='only these run keys (default: every run folder with a config.json)')
    a = ap.parse_args(argv)
    if a.every < 1: sys.exit('--every must be >= 1')
    src, dst = Path(a.src), Path(a.dst)
    runs = [p.parent for p in sorted(src.glob('*/config.json')) if not a.keys or p.parent.name in a.keys]
    if not runs: sys.exit(f'no run folders (<key>/config.json) under {src}')
    total = 0
    for r in runs:
        n = thin_run(r, dst / r.name, a.every); total += n
        print(f'{r.name}: {n / 1e6:.2f} MB')
    print(f'{len(runs)} runs, {total / 1e6:.2f} MB written to {dst}')


if __name__ == '__main__': main()
