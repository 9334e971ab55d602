"""Helpers shared by the test files (pytest puts this folder on sys.path)."""


def close_bulk(a, b, atol=1e-4, frac=1e-3, worst=1e-2):
    """All but a fraction `frac` of the entries (or 2, in small tensors) within `atol` (+1e-3 relative), none beyond `worst`.

    On this project's CPU every entry agrees within 1e-4; on another CPU (the H100 host's) bmm and mm round differently
    and Adam amplifies it: after 60 steps 0.1% of the weights were up to 1.3e-3 apart. A batching bug moves weights by
    the size of whole updates, everywhere."""
    d = (a - b).abs()
    tol = atol + 1e-3 * b.abs()
    bad = int((d > tol).sum())
    assert bad <= max(2, frac * d.numel()) and float(d.max()) < worst, (float(d.max()), bad, d.numel())
