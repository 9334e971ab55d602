#!/usr/bin/env python
"""Check that `nbdev_export` and `nbdev_clean` leave the tree unchanged (run in a scratch copy of the tree)."""
import hashlib, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def files(root):
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=root, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if (root / f).is_file() or (root / f).is_symlink()]


def digest(root, fs): return {f: hashlib.sha1((root / f).read_bytes()).hexdigest() for f in fs if (root / f).exists()}


def main():
    fs = files(ROOT)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for f in fs:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            src = ROOT / f
            if src.is_symlink(): (tmp / f).symlink_to(src.readlink())
            else: shutil.copy2(src, tmp / f)
        before = digest(tmp, fs)
        for cmd in ('nbdev_export', 'nbdev_clean'):
            r = subprocess.run([str(BIN / cmd)], cwd=tmp, capture_output=True, text=True)
            if r.returncode: print(f'{cmd} failed:\n{r.stdout}\n{r.stderr}'); return 1
        after_files = [str(p.relative_to(tmp)) for p in tmp.rglob('*') if p.is_file() and '__pycache__' not in p.parts]
        after = digest(tmp, after_files)
    changed = sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f))
    if changed:
        print('nbdev_export / nbdev_clean change these files (run them and commit the result):')
        for f in changed: print('  ', f)
        return 1
    print(f'nbdev_export and nbdev_clean leave all {len(fs)} files unchanged')
    return 0


if __name__ == '__main__': sys.exit(main())
