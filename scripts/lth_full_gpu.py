#!/usr/bin/env python
"""The full LeNet-300-100 LTH figure on one GPU, timed: `imp_batched` over the `full` tier of `lenet300_mnist`
(dense + 20 rounds, 50K iterations each, 5 seeds, 3 random-reinit controls per round), every member of a round
trained as one CUDA-graphed stack.

Usage: LTH_NB_STORE=... LTH_NB_CACHE=... python scripts/lth_full_gpu.py --out results/bench/lth_full_gpu.json
       [--rounds R] [--iterations N] [--seeds S] [--reinits C]   (smaller overrides for a smoke run)
       [--analytic]   (capture StackedMLP.loss_and_grads in the graph instead of autograd's backward: the A/B lever)
"""
import argparse, json, os, sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='results/bench/lth_full_gpu.json')
    ap.add_argument('--tier', default='full')
    ap.add_argument('--rounds', type=int); ap.add_argument('--iterations', type=int)
    ap.add_argument('--seeds', type=int); ap.add_argument('--reinits', type=int)
    ap.add_argument('--analytic', action='store_true', help="train_stacked(analytic=True): hand-written backward")
    a = ap.parse_args(argv)
    from lth_nb.batched import imp_batched
    from lth_nb.bench import machine_info
    from lth_nb.core import Store
    from lth_nb.lottery import load_data
    from lth_nb.presets import preset, preset_seeds
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    info = machine_info(dev)
    seeds = preset_seeds('lenet300_mnist', a.tier)[:a.seeds] if a.seeds else preset_seeds('lenet300_mnist', a.tier)
    ov = {}
    if a.rounds is not None: ov['rounds'] = a.rounds
    if a.reinits is not None: ov['reinits'] = a.reinits
    if a.iterations is not None: ov['train'] = dict(iterations=a.iterations)
    cfgs = [preset('lenet300_mnist', a.tier, seed=s, **ov) for s in seeds]
    c0 = cfgs[0]
    t0 = time.time(); data = load_data(c0, dev); t_data = time.time() - t0
    t0 = time.time()
    runs = imp_batched(cfgs, Store(), data=data, analytic=a.analytic or None)
    if dev == 'cuda': torch.cuda.synchronize()
    wall = time.time() - t0
    T = c0.train.iterations
    trainings = len(seeds) * (c0.rounds + 1) + len(seeds) * c0.rounds * (c0.reinits + c0.random_masks)
    res = dict(info=info, preset='lenet300_mnist', tier=a.tier, analytic=bool(a.analytic), seeds=seeds, rounds=c0.rounds, iterations=T,
               reinits=c0.reinits, random_masks=c0.random_masks, eval_every=c0.train.eval_every, trainings=trainings,
               network_iterations=trainings * T, sequential_steps=(c0.rounds + 1) * T, data_load_s=round(t_data, 2),
               wall_s=round(wall, 1), ms_per_sequential_step=1e3 * wall / ((c0.rounds + 1) * T),
               run_keys=[r.key for r in runs])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != 'run_keys'}, indent=1))


if __name__ == '__main__': main()
