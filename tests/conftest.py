"""Shared pytest fixtures for lth_nb."""
import os
from pathlib import Path

import pytest
import torch

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    "Keep tests polite on small shared machines."
    torch.set_num_threads(int(os.environ.get("LTH_NB_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def data_root() -> Path:
    "Root of the real MNIST / Fashion-MNIST files (LTH_NB_DATA): skipped locally when unset, a failure in CI."
    root = os.environ.get("LTH_NB_DATA")
    if not root or not Path(root).exists():
        msg = (f"LTH_NB_DATA={root!r} does not point at a dataset root; unpack the offline copies with "
               "`../shared/data/unpack DEST` and export LTH_NB_DATA=DEST")
        if IN_CI: pytest.fail(msg)
        pytest.skip(msg)
    return Path(root)


@pytest.fixture
def store(tmp_path):
    "A results store in a temporary folder (JSON and tensors both under tmp_path)."
    from lth_nb.core import Store
    return Store(tmp_path / "runs", tensor_root=tmp_path / "tensors")
