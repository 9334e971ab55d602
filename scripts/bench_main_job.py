#!/usr/bin/env python
"""Time the README's main job (`lth-nb imp --preset lenet300_mnist --quick --seeds 3`) seed by seed and with --batched.

Each mode runs in a fresh process with a fresh results store and tensor cache (so everything trains), one after the
other on the same machine; the wall time is the process's. Writes one JSON: machine info, per mode the command, wall
seconds, trainings, and the tickets-vs-reinit summary rows the command printed (mean over seeds), so the two results
can be compared as well as timed. A single timing per mode on a shared machine: compare the ratio, not the seconds.

    LTH_NB_DATA=... python scripts/bench_main_job.py --threads 2 --json results/bench/main_job_2threads.json
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(mode: str, threads: int, tmp: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / 'lth-nb'), 'imp', '--preset', 'lenet300_mnist', '--quick', '--seeds', '3',
           '--out', str(tmp / f'out_{mode}'), '--no-progress', '--threads', str(threads)] + (['--batched'] if mode == 'batched' else [])
    env = dict(os.environ, LTH_NB_STORE=str(tmp / f'store_{mode}'), LTH_NB_CACHE=str(tmp / f'cache_{mode}'),
               OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rec = json.loads((tmp / f'out_{mode}' / 'records.json').read_text())
    from lth_nb.viz import summary_table
    rows = summary_table(rec['records'], kinds=('ticket', 'reinit'))
    return dict(mode=mode, command='lth-nb ' + ' '.join(cmd[1:]), wall_s=wall, trainings=len(rec['records']), summary=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--json', required=True)
    a = ap.parse_args(argv)
    from lth_nb.bench import machine_info
    import torch
    torch.set_num_threads(a.threads)
    info = machine_info('cpu')  # at the start: its load average is the one before the runs
    with tempfile.TemporaryDirectory() as d:
        runs = [run(m, a.threads, Path(d)) for m in ('sequential', 'batched')]
    out = dict(info=info, runs=runs, speedup=runs[0]['wall_s'] / runs[1]['wall_s'])
    out['info']['loadavg_end'] = os.getloadavg()[0]
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    for r in runs: print(f"{r['mode']:10s} {r['wall_s']:7.0f} s  {r['trainings']} trainings")
    print(f"batched speed-up x{out['speedup']:.2f}")


if __name__ == '__main__':
    main()
