#!/usr/bin/env bash
# GPU job for issue #10 (deep weight factorization): the LeNet-5 quick tier (LR sweep + sparsity-accuracy grid,
# MNIST then Fashion-MNIST, 3 seeds) of nbs/experiments/deep_weight_factorization.ipynb, 4 worker processes on one GPU,
# no new run after 170 s, workers killed at 225 s. Run from the repository root with PYTHONPATH=$PWD, LTH_NB_DATA,
# LTH_NB_STORE (the store root; runs go to $LTH_NB_STORE/dwf/<key>/) and LTH_NB_CACHE set.
# Local smoke test on CPU:  LTH_NB_TIER=ci LTH_NB_STORE=/tmp/dwf5 LTH_NB_DATA=/work/data bash scripts/gpu_jobs/dwf_lenet5.sh
# Afterwards: cp -r $LTH_NB_STORE/dwf/* results/dwf/ and re-execute the notebook at the quick tier.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: "${LTH_NB_STORE:?set LTH_NB_STORE}"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
exec python3 scripts/gpu_jobs/dwf_lenet5.py
