#!/usr/bin/env bash
# GPU job (lth_nb session-2 contract): the quick tier of the LeNet-5/Fashion-MNIST LR sweep of
# nbs/experiments/weight_correlation.ipynb, on cuda, as JSON in $LTH_NB_STORE (copy it into results/correlation).
# Run from the repo root with PYTHONPATH=$PWD, LTH_NB_DATA, LTH_NB_STORE, LTH_NB_CACHE set.
# Local smoke test on CPU: LTH_NB_TIER=ci WORKERS=2 LTH_NB_DEVICE=cpu bash scripts/gpu_jobs/correlation_conv.sh
set -euo pipefail
export OMP_NUM_THREADS=1
python3 scripts/gpu_jobs/correlation_conv.py --tier "${LTH_NB_TIER:-quick}" --workers "${WORKERS:-8}"
