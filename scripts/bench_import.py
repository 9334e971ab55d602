#!/usr/bin/env python
"""Import cost of lth_nb's user-facing modules next to `import torch` alone, measured side by side in one run.

    python scripts/bench_import.py [TRIALS] [--save results/bench/import_time.json]

Each figure is a fresh interpreter (`python -c 'import X'`), trials interleaved, min and median in seconds.
Output: one line per command, then the extra cost of each lth_nb module over torch (median difference; the target
is at most +0.5 s). With --save, the figures go to a JSON file with the machine, torch version and load average.
"""
import json, os, platform, statistics, subprocess, sys, time
from datetime import datetime, timezone

CMDS = {'python': 'pass', 'torch': 'import torch', 'lth_nb.core': 'import lth_nb.core', 'lth_nb.prune': 'import lth_nb.prune',
        'lth_nb.lottery': 'import lth_nb.lottery'}


def main(argv):
    save = argv[argv.index('--save') + 1] if '--save' in argv else None
    nums = [a for a in argv if a.isdigit()]
    trials = int(nums[0]) if nums else 7
    times = {k: [] for k in CMDS}
    load0 = os.getloadavg()[0]
    for _ in range(trials):
        for k, code in CMDS.items():
            t = time.perf_counter(); subprocess.run([sys.executable, '-c', code], check=True); times[k].append(time.perf_counter() - t)
    print(f'import times over {trials} interleaved trials (s), load average {load0:.1f}:')
    for k, v in times.items(): print(f'  {k:16s} min {min(v):.3f}  median {statistics.median(v):.3f}')
    base = statistics.median(times['torch'])
    rows = []
    for k in CMDS:
        if not k.startswith('lth_nb'): continue
        extra = statistics.median(times[k]) - base
        print(f'  {k} - torch: {extra:+.3f} s (target <= +0.5 s)')
        rows.append(dict(name=f'import {k} / import torch (fresh interpreter)', ratio_median=statistics.median(times[k]) / base,
                         extra_s_median=extra, base_s_median=base, s_median=statistics.median(times[k]),
                         base_s_min=min(times['torch']), s_min=min(times[k])))
    if save:
        import torch
        info = dict(when=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), machine=platform.processor() or platform.machine(),
                    cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__, device='cpu',
                    trials=trials, loadavg=load0, loadavg_end=os.getloadavg()[0])
        with open(save, 'w') as f: json.dump(dict(info=info, imports=rows), f, indent=1)
        print('saved', save)


if __name__ == '__main__': main(sys.argv[1:])
