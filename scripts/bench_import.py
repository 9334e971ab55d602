#!/usr/bin/env python
"""Import cost of lth_nb's user-facing modules next to `import torch` alone, measured side by side in one run.

Each figure is a fresh interpreter (`python -c 'import X'`), trials interleaved, min and median in seconds.
Output: one line per command, then the extra cost of each lth_nb module over torch (median difference).
"""
import statistics, subprocess, sys, time

CMDS = {'torch': 'import torch', 'lth_nb.core': 'import lth_nb.core', 'lth_nb.prune': 'import lth_nb.prune',
        'lth_nb.lottery': 'import lth_nb.lottery', 'python': 'pass'}


def main(trials=int(sys.argv[1]) if len(sys.argv) > 1 else 7):
    times = {k: [] for k in CMDS}
    for _ in range(trials):
        for k, code in CMDS.items():
            t = time.perf_counter(); subprocess.run([sys.executable, '-c', code], check=True); times[k].append(time.perf_counter() - t)
    print(f'import times over {trials} interleaved trials (s):')
    for k, v in times.items(): print(f'  {k:16s} min {min(v):.3f}  median {statistics.median(v):.3f}')
    base = statistics.median(times['torch'])
    for k in CMDS:
        if k.startswith('lth_nb'): print(f'  {k} - torch: {statistics.median(times[k]) - base:+.3f} s (target <= +0.5 s)')


if __name__ == '__main__': main()
