"""LeNet-5 quick tier of the deep-weight-factorization experiment (issue #10) on a GPU.

Runs the compute cells of nbs/experiments/deep_weight_factorization.ipynb (the code cells whose first line is
`# compute cell`) in WORKERS processes on the one GPU, with LTH_NB_DWF_MODELS=lenet5: first the learning-rate sweep
(sharded; every worker waits until all sweep runs are stored, then applies the notebook's LR rule), then the
sparsity-accuracy grid, sharded by plan position. Results land in the notebook's store ($LTH_NB_STORE/dwf/<key>/*.json);
re-running skips finished runs. No new run starts after BUDGET_S seconds; a run that raises is logged as an `error`
stage and skipped. A summary of the job is written to $LTH_NB_STORE/dwf_lenet5_job.json.

Run from the repository root:  PYTHONPATH=$PWD LTH_NB_DATA=... LTH_NB_STORE=... python3 scripts/gpu_jobs/dwf_lenet5.py
Environment: LTH_NB_TIER (default quick), DWF_WORKERS (default 4), DWF_BUDGET_S (seconds before the last run may
start; default 170), DWF_HARD_S (workers killed after this; default 225).
"""
import json, os, subprocess, sys, time
from pathlib import Path

NB = Path(__file__).resolve().parents[2] / 'nbs' / 'experiments' / 'deep_weight_factorization.ipynb'

def compute_source(nb=NB):
    "The notebook's compute cells, joined into one script."
    cells = json.loads(Path(nb).read_text())['cells']
    src = [''.join(c['source']) for c in cells if c['cell_type'] == 'code' and ''.join(c['source']).startswith('# compute cell')]
    assert len(src) >= 4, f'expected the compute cells in {nb}, found {len(src)}'
    return '\n\n'.join(src) + "\nprint('worker done:', len(records), 'runs ready,', len(MISSING), 'missing')\n"

def main():
    t0 = time.time()
    workers = int(os.environ.get('DWF_WORKERS', '4'))
    budget, hard = float(os.environ.get('DWF_BUDGET_S', '170')), float(os.environ.get('DWF_HARD_S', '225'))
    store = Path(os.environ.get('LTH_NB_STORE', 'results')); store.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LTH_NB_TIER=os.environ.get('LTH_NB_TIER', 'quick'), LTH_NB_DWF_MODELS='lenet5',
               LTH_NB_DWF_COMPUTE='lenet5', LTH_NB_DWF_KEEP_GOING='1', LTH_NB_DWF_WAIT='1', MPLBACKEND='Agg',
               LTH_NB_DWF_DEADLINE=str(t0 + budget), OMP_NUM_THREADS='1', LTH_NB_STORE=str(store))
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(NB.parents[2]), env.get('PYTHONPATH')) if p)
    src = compute_source()
    procs = [subprocess.Popen([sys.executable, '-u', '-c', src], env=dict(env, LTH_NB_DWF_SHARD=f'{i}/{workers}'))
             for i in range(workers)]
    rcs = []
    for p in procs:
        try: rcs.append(p.wait(timeout=max(1, t0 + hard - time.time())))
        except subprocess.TimeoutExpired: p.kill(); p.wait(); rcs.append('killed')
    runs = sorted((store / 'dwf').glob('*/result.json'))
    errors = sorted((store / 'dwf').glob('*/error.json'))
    dev = {}
    try:
        import torch
        dev = dict(cuda=torch.cuda.is_available(), name=torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu',
                   torch=torch.__version__)
    except Exception as e: dev = dict(error=repr(e))
    job = dict(job='dwf_lenet5', tier=env['LTH_NB_TIER'], workers=workers, budget_s=budget, hard_s=hard, rcs=rcs,
               wall_s=round(time.time() - t0, 1), results=len(runs), errors=[str(e.parent.name) for e in errors], device=dev,
               start=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t0)))
    (store / 'dwf_lenet5_job.json').write_text(json.dumps(job, indent=1))
    print(json.dumps(job))
    return 0 if all(rc == 0 for rc in rcs) else 1

if __name__ == '__main__': sys.exit(main())
