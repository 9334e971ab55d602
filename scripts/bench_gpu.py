#!/usr/bin/env python
"""GPU benchmarks (run on a CUDA machine): per-model step time sequential/batched, eager/graphed; 2:4 sparsity;
masked/dense on the GPU; `lth_nb.train.train` per-iteration time of the papers' small nets on real data.

Usage: python scripts/bench_gpu.py --out results/bench/gpu_h100.json [--quick]
Output: one JSON file {info, steps, semi_structured, masked, train_step} (see lth_nb.fastpath.gpu_report), and the
text report on stdout.
"""
import argparse, json, os, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lth_nb.bench import bench_masked, machine_info
from lth_nb.fastpath import bench_gpu_steps, bench_semi_structured, gpu_report


def train_steps(quick):
    "Per-iteration wall time of lth_nb.train.train (eager, one model) for LeNet-300-100 and LeNet-5 on real data."
    from lth_nb.data import get_data
    from lth_nb.models import get_model
    from lth_nb.train import TrainConfig, train
    out = []
    for ds in ('mnist', 'fashion_mnist'):
        try: data = get_data(ds, device='cuda', download=False)
        except Exception as e: out.append(dict(data=ds, skipped=str(e)[:200])); continue
        for model in ('lenet300_100', 'lenet5'):
            for opt in ('sgd', 'adam'):
                it = 200 if quick else 1000
                cfg = TrainConfig(optimizer=opt, lr=0.05 if opt == 'sgd' else 1e-3, iterations=it, eval_every=it, batch_size=60)
                train(get_model(model, seed=0), data, cfg)  # warm-up
                t0 = time.perf_counter(); r = train(get_model(model, seed=1), data, cfg); torch.cuda.synchronize()
                out.append(dict(data=ds, model=model, optimizer=opt, iterations=it, ms_per_iter=1e3 * (time.perf_counter() - t0) / it,
                                eval_included=1, final_test_acc=r.final_test_acc))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='results/bench/gpu.json')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--skip', default='', help='comma-separated sections to skip')
    a = ap.parse_args(argv)
    assert torch.cuda.is_available(), 'bench_gpu.py needs a CUDA device'
    skip = set(filter(None, a.skip.split(',')))
    res = dict(info=machine_info('cuda'))
    jobs = dict(steps=lambda: bench_gpu_steps(steps=50 if a.quick else 300, trials=3 if a.quick else 7),
                semi_structured=lambda: bench_semi_structured(steps=10 if a.quick else 50),
                masked=lambda: bench_masked(steps=20 if a.quick else 100, trials=5 if a.quick else 11, device='cuda'),
                train_step=lambda: train_steps(a.quick))
    for k, f in jobs.items():
        if k in skip: continue
        t0 = time.time()
        try: res[k] = f()
        except Exception as e: res[k] = [dict(name=k, skipped=f'{type(e).__name__}: {e}'[:300])]
        res[f'{k}_wall_s'] = round(time.time() - t0, 1)
        print(f'# {k}: {res[f"{k}_wall_s"]} s', flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(gpu_report(a.out))
    for r in res.get('train_step', []): print(r)


if __name__ == '__main__': main()
