#!/usr/bin/env python
"""lth_nb benchmarks: ratios measured side by side in one run (lth_nb.bench_suite.main).

Claims checked (issue 8): masked/dense step <= 1.05 with fused Adam; K=10 batched >= 2x per-model throughput on a
2-core CPU; our masked training vs torch.nn.utils.prune hooks; on-device batches vs a torchvision DataLoader; one IMP
round end to end vs OpenLTH on identical work (where OpenLTH is available beside the project, never vendored); and
where sparsity pays for inference (compact for structured masks; CSR vs dense matmul with the break-even density).

Method: every comparison is timed in interleaved trials (each trial times each configuration once, rotating order) so
the noise of a shared machine hits all alike. Clock: thread CPU time (time.thread_time) on a CPU with 1 thread (immune
to being descheduled), wall clock otherwise (GPU: synchronised). OpenLTH vs lth_nb: wall time of fresh processes.

Output format (stdout):
  '# ' header lines: UTC time | CPU or GPU name, logical cores | torch version | threads | device; the 1-minute load
  average at start and end; a column header. Then one line per record:
    name | base ms min | base ms median | ms min | ms median | ratio median | ratio min
  'base' is the reference configuration named second in the name ('masked/dense': dense is the base; 'batched/
  sequential per model': sequential is the base, ratio < 1 means batching pays, speed-up = 1/ratio). 'ratio median' is
  the median over trials of the paired per-trial ratio, 'ratio min' = min(ms)/min(base ms). Skipped benchmarks print
  'skipped: reason'. The sparse block ends with 'sparse break-even density' (largest measured density where CSR is
  faster than dense; None: never).
  With --json PATH: {"info": {when, machine, cores, torch, threads, device, loadavg, loadavg_end},
   "masked": [records], "batched": [records + K, speedup, optimizer, path (the batched step train_stacked runs
   here: analytic on a CPU), speedup_autograd, analytic_vs_autograd], "batched_per_member_lr": [...],
   "data": [...], "compact": [records + rate, bytes, dense_bytes, memory_ratio],
   "sparse": {"rows": [records + density, memory_ratio], "break_even_density", "shape", "batch", "clock"},
   "openlth": [records (ms of whole processes) + iters, trials], "imp_batched": [record + speedup, test accuracies], "imp_batched_lr_sweep": [the same
   over a learning-rate sweep + lrs],
   "floor": [GEMM rate {gflops}, step floor {mflop, floor_ms}], "parts": [3 records (part: step, products,
   optimizer; base = K sequential steps, per model) + {ceilings: {speedup, products_optimizer, floor_optimizer,
   floor}, gemm_gflops, products_gflops, floor_ms, rest_ms, ...}], "<name>_wall_s": seconds each benchmark took}
  where a record is {"name", "base_ms_min", "base_ms_median", "ms_min", "ms_median", "ratio_median", "ratio_min",
  "clock", ...} or {"name", "skipped"}.

Environment: LTH_NB_DATA (MNIST root, torchvision layout) for the data and OpenLTH benchmarks; OPENLTH_DIR (an
OpenLTH checkout with the fixes in /work/shared/anchors.md) and OPENLTH_HOME (a HOME whose open_lth_datasets/mnist is
the MNIST root) for the OpenLTH comparison, skipped with a message when absent.

Usage: OMP_NUM_THREADS=1 python scripts/bench.py --threads 1 [--quick] [--skip openlth,data] [--json results/bench/speed_1thread.json]
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

if __name__ == '__main__':
    from lth_nb.bench_suite import main
    main()
