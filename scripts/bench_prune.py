#!/usr/bin/env python
"""Masked / dense training-step time of lth_nb.prune's MaskEnforcer, side by side in one run.

Claim checked: training with a mask costs at most 1.05x a dense step with fused Adam (LeNet-300-100, batch 60).

Setup: a LeNet-300-100-shaped MLP (784-300-100-10), batch 60 of preloaded random data, a mask at 20% density
(LTH rates: 0.8 of the hidden layers, 0.5 of the output layer). For each method a dense and a masked model+optimizer
are built; trials are interleaved (every trial times every configuration once, in rotating order, `--steps` steps
each) so that machine noise hits all of them alike. A step is zero_grad + forward + loss + backward + optimizer.step.

Methods (masked side; the dense side is the same optimizer on an unmasked copy):
  fused Adam + MaskEnforcer            mask_enforcer attached to torch.optim.Adam(fused=True) (default remask_every)
  fused Adam + ...(remask_every=1)     the same, re-zeroing weights and checking state after every step
  foreach Adam + MaskEnforcer          torch.optim.Adam(foreach=True)
  SGD momentum + MaskEnforcer          torch.optim.SGD(momentum=0.9, foreach=True)
  torch.nn.utils.prune hooks (...)     prune.custom_from_mask forward pre-hooks, fused / foreach Adam

Output format (stdout):
  '# '-prefixed header lines: UTC time, machine (CPU model or GPU name, cores), torch version, threads, device,
  steps x trials, the clock used and the 1-minute load average; then one row per method:
    method | dense ms/step min median | masked ms/step min median | ratio median | ratio min | wall med | wall min
  ms are per step on the primary clock: the thread's CPU time (time.thread_time) on a CPU with 1 thread (immune to
  time spent descheduled on a shared machine), wall clock otherwise (GPU: synchronized). 'ratio median' is the
  median over trials of masked/dense within the same trial (paired), 'ratio min' is min(masked)/min(dense); the
  last two columns are the same ratios on the wall clock. With --json PATH the figures are written as
  {"when", "machine", "threads", "torch", "device", "steps", "trials", "batch", "density", "clock", "loadavg",
   "rows": [{"method", "dense_ms_min", "dense_ms_median", "masked_ms_min", "masked_ms_median", "ratio_median",
   "ratio_min", and the same with a "wall_" prefix}]}.

Usage: OMP_NUM_THREADS=1 python scripts/bench_prune.py --threads 1 [--steps 20 --trials 41 --device cpu --json F]
"""
import argparse, copy, json, os, platform, statistics, sys, time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from torch import nn


def machine(device):
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'): name = line.split(':', 1)[1].strip(); break
    except OSError: pass
    return f'{name}, {os.cpu_count()} logical cores'


def lenet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--steps', type=int, default=20, help='steps per configuration per trial')
    ap.add_argument('--trials', type=int, default=41)
    ap.add_argument('--batch', type=int, default=60)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--json', default=None, help='also write the figures here')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    from lth_nb.prune import magnitude_prune, mask_enforcer, to_torch_prune
    dev = torch.device(a.device)
    base = lenet().to(dev)
    mask = magnitude_prune(base, 0.8, rates={'output': 0.5})
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(a.batch, 1, 28, 28, generator=g).to(dev), torch.randint(0, 10, (a.batch,), generator=g).to(dev))
               for _ in range(8)]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)

    def make(opt_fn, masked, hooks=False, remask_every=None):
        m = copy.deepcopy(base)
        if hooks: to_torch_prune(m, mask)
        opt = opt_fn(m.parameters())
        if masked and not hooks: mask_enforcer(m, mask, opt, remask_every=remask_every)
        return m, opt

    adam_fused = lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)
    adam_foreach = lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)
    sgd = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True)
    methods = {'fused Adam + MaskEnforcer': (adam_fused, False, None),
               'fused Adam + MaskEnforcer(remask_every=1)': (adam_fused, False, 1),
               'foreach Adam + MaskEnforcer': (adam_foreach, False, None),
               'SGD momentum + MaskEnforcer': (sgd, False, None),
               'torch.nn.utils.prune hooks (fused Adam)': (adam_fused, True, None),
               'torch.nn.utils.prune hooks (foreach Adam)': (adam_foreach, True, None)}
    configs = []
    for name, (fn, hooks, every) in methods.items():
        configs.append((name, 'dense', *make(fn, False)))
        configs.append((name, 'masked', *make(fn, True, hooks, every)))

    def run(m, opt, n):
        sync(); t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(n):
            x, y = batches[i % len(batches)]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
        sync(); return (time.perf_counter() - t0) / n * 1e3, (time.thread_time() - c0) / n * 1e3

    for c in configs: run(c[2], c[3], 10)                          # warm-up
    times = {(c[0], c[1]): [] for c in configs}
    for t in range(a.trials):
        k = t % len(configs)
        for c in configs[k:] + configs[:k]: times[(c[0], c[1])].append(run(c[2], c[3], a.steps))

    # thread CPU time is immune to time spent descheduled on a shared machine; valid when all work runs on this
    # thread (CPU, 1 thread). Otherwise wall clock.
    clock = 'thread_cpu' if dev.type == 'cpu' and a.threads == 1 else 'wall'
    ci = 1 if clock == 'thread_cpu' else 0
    rows = []
    for name in methods:
        row = dict(method=name)
        for key, j in (('', ci), ('wall_', 0)):
            d = [x[j] for x in times[(name, 'dense')]]; m = [x[j] for x in times[(name, 'masked')]]
            row.update({f'{key}dense_ms_min': min(d), f'{key}dense_ms_median': statistics.median(d),
                        f'{key}masked_ms_min': min(m), f'{key}masked_ms_median': statistics.median(m),
                        f'{key}ratio_median': statistics.median([b / a_ for a_, b in zip(d, m)]),
                        f'{key}ratio_min': min(m) / min(d)})
        rows.append(row)
    info = dict(when=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), machine=machine(dev),
                threads=torch.get_num_threads(), torch=torch.__version__, device=str(dev), steps=a.steps,
                trials=a.trials, batch=a.batch, density=round(mask.density, 4), clock=clock,
                loadavg=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)
    print(f"# {info['when']} | {info['machine']} | torch {info['torch']} | threads {info['threads']} | device {info['device']}")
    print(f"# LeNet-300-100 MLP, batch {a.batch}, mask density {info['density']}, {a.steps} steps x {a.trials} interleaved trials")
    print(f"# clock: {clock} (ratios on wall clock in the last two columns); 1-min load average {info['loadavg']}")
    print(f"{'method':44s} {'dense ms min/med':>18s} {'masked ms min/med':>19s} {'ratio med':>9s} {'ratio min':>9s}"
          f" {'wall med':>9s} {'wall min':>9s}")
    for r in rows:
        print(f"{r['method']:44s} {r['dense_ms_min']:8.3f} {r['dense_ms_median']:8.3f}  {r['masked_ms_min']:8.3f} "
              f"{r['masked_ms_median']:8.3f}  {r['ratio_median']:9.3f} {r['ratio_min']:9.3f}"
              f" {r['wall_ratio_median']:9.3f} {r['wall_ratio_min']:9.3f}")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, 'w') as f: json.dump(dict(info, rows=rows), f, indent=1)
    return rows


if __name__ == '__main__': main()
