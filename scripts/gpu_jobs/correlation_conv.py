"""The LeNet-5 / Fashion-MNIST learning-rate sweep of nbs/experiments/weight_correlation.ipynb, run outside the notebook.

For every (lr, seed) of `lth_nb.correlation.CONV_SWEEP[tier]`: IMP with one random reinit per ticket (dense round only
at the LRs that do not get IMP) and the stored dense analysis (R_p curve, correlations, |theta| sample), through
`lth_nb.correlation.lr_sweep` -- the notebook's own code path, so the notebook reads these runs back from the JSON
store without retraining. Points run in parallel worker processes (small nets do not fill a GPU); every run is
resumable (re-running skips what is stored).

    python scripts/gpu_jobs/correlation_conv.py --tier quick --workers 8     # LTH_NB_STORE / LTH_NB_CACHE / LTH_NB_DATA
    python scripts/gpu_jobs/correlation_conv.py --tier quick --summary       # only the summary of what is stored

On the lent H100, seeds 0-2 of the quick tier (141 trainings of 1,000 iterations) took ~3 min with 8 workers;
seed 3 (added after seed 2 diverged at LR 0.1) ran on one CPU thread, ~4 min per IMP point.
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path


def sweep(tier, points=None, train=True, log=None):
    from lth_nb.core import Store
    from lth_nb.correlation import CONV_SWEEP, lr_sweep, sweep_config
    S = CONV_SWEEP[tier]
    lrs = sorted({p[0] for p in points}) if points else S['lrs']
    seeds = sorted({p[1] for p in points}) if points else S['seeds']
    return lr_sweep(lambda lr, s: sweep_config(lr, s, **S['cfg']), lrs, seeds, Store(), imp_lrs=S['imp_lrs'],
                    train=train, log=log)


def summary(tier) -> dict:
    "Per LR: dense accuracy, R_0.2 and the ticket - reinit gap per round (means and stds over seeds) of the stored sweep."
    from lth_nb.lottery import records
    sw = sweep(tier, train=False)
    out = dict(missing=sw['missing'], lrs={})
    ms = lambda v: [round(statistics.fmean(v), 4), round(statistics.stdev(v), 4) if len(v) > 1 else 0.0] if v else None
    for lr in sorted({k[0] for k in sw['analysis']}):
        keys = [k for k in sw['analysis'] if k[0] == lr]
        acc = [sw['analysis'][k]['dense_acc'] for k in keys]
        r02 = [next(c for c in sw['analysis'][k]['rp'] if c['p'] == 0.2)['overall'] for k in keys
               if sw['analysis'][k]['rp']]   # diverged networks (non-finite weights) have no R_p
        gaps = {}
        for k in keys:
            recs = {(r['round'], r['control']): r for r in records(sw['runs'][k], with_history=False)}
            for (rd, c), r in recs.items():
                if c == 'ticket' and rd > 0 and (rd, 'reinit') in recs:
                    gaps.setdefault(rd, []).append(r['final_test_acc'] - recs[rd, 'reinit']['final_test_acc'])
        out['lrs'][str(lr)] = dict(seeds=len(keys), diverged=[k[1] for k in keys if sw['analysis'][k].get('diverged')],
                                   dense_acc=ms(acc), r02=ms(r02), gap_by_round={r: ms(v) for r, v in sorted(gaps.items())})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tier', default=os.environ.get('LTH_NB_TIER', 'quick'), help="a key of CONV_SWEEP: ci, quick, full")
    ap.add_argument('--workers', type=int, default=1, help="parallel worker processes (one (lr, seed) point each)")
    ap.add_argument('--point', help="internal: run only 'lr,seed'")
    ap.add_argument('--summary', action='store_true', help="only print the summary of the stored sweep")
    a = ap.parse_args(argv)
    if a.summary: print(json.dumps(summary(a.tier), indent=1)); return 0
    import torch
    torch.set_num_threads(int(os.environ.get('LTH_NB_THREADS', '1')))
    if a.point:
        lr, s = a.point.split(','); t0 = time.time()
        sweep(a.tier, [(float(lr), int(s))], log=lambda m: print(m, flush=True))
        print(f"point lr={lr} seed={s} done in {time.time() - t0:.0f} s", flush=True); return 0
    from lth_nb.core import Store, get_device
    from lth_nb.correlation import CONV_SWEEP
    S = CONV_SWEEP[a.tier]; t0 = time.time()
    todo = sweep(a.tier, train=False)['missing']
    todo.sort(key=lambda p: (p[0] not in S['imp_lrs'], p))   # IMP points (long) first
    print(f"tier={a.tier} device={get_device()} store={Store()} points to run: {len(todo)} with {a.workers} workers", flush=True)
    procs, rcs = [], {}
    while todo or procs:
        while todo and len(procs) < max(1, a.workers):
            lr, s = todo.pop(0)
            procs.append(((lr, s), subprocess.Popen([sys.executable, __file__, '--tier', a.tier, '--point', f'{lr},{s}'])))
        time.sleep(0.5)
        for p in [p for p in procs if p[1].poll() is not None]:
            rcs[p[0]] = p[1].returncode; procs.remove(p)
    failed = {f'{k[0]},{k[1]}': rc for k, rc in rcs.items() if rc != 0}
    out = dict(tier=a.tier, device=str(get_device()), wall_s=round(time.time() - t0, 1), workers=a.workers,
               failed_points=failed, **summary(a.tier))
    Path(Store().root).mkdir(parents=True, exist_ok=True)
    (Path(Store().root)/f'job_summary_{a.tier}.json').write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 1 if failed or out['missing'] else 0


if __name__ == '__main__':
    sys.exit(main())
