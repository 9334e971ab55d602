"""Tests for lth_nb.viz: plots build from fake records, tables, and the claim-table verdict rule."""
import subprocess, sys

import pytest

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lth_nb.viz import (fake_records, normalize_records, summarize, summary_table, format_table, plot_vs_remaining,
                        plot_lottery, plot_learning_curves, plot_layer_density, nearest_levels, verdict, claim_row,
                        claim_table, save_figure, VERDICTS)


@pytest.fixture(scope="module")
def recs():
    return fake_records(seeds=3, rounds=6, kinds=("ticket", "reinit", "one_shot"))


def test_import_is_light():
    code = "import sys, lth_nb.viz; bad = [m for m in ('matplotlib', 'seaborn', 'pandas', 'torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_normalize_fraction_and_percent():
    a = normalize_records([{"density": 0.5, "early_stop_test_acc": 0.98, "history": [{"iter": 0, "test_acc": 0.1}]}])
    assert a[0]["pct_remaining"] == 50.0 and a[0]["early_stop_test_acc"] == pytest.approx(98.0)
    assert a[0]["history"][0]["test_acc"] == pytest.approx(10.0) and a[0]["kind"] == "ticket"
    b = normalize_records([{"pct_remaining": 50.0, "early_stop_test_acc": 98.0}])
    assert b[0]["early_stop_test_acc"] == 98.0
    with pytest.raises(KeyError, match="pct_remaining"):
        normalize_records([{"kind": "ticket"}])


def test_summarize_groups_seeds(recs):
    s = summarize(recs, "early_stop_test_acc", kinds=("reinit",))
    assert len(s) == 7 and all(o["n"] == 3 and o["kind"] == "reinit" for o in s)
    assert s[0]["pct_remaining"] == 100.0 and s[-1]["pct_remaining"] < s[0]["pct_remaining"]
    assert all(o["min"] <= o["mean"] <= o["max"] for o in s)


def test_summary_table_text(recs):
    rows = summary_table(recs)
    assert len(rows) == 7 and "ticket acc@es %" in rows[0] and "reinit es iter" in rows[0]
    txt = format_table(rows)
    assert "% remaining" in txt.splitlines()[0] and "±" in txt
    assert format_table([]) == "(no rows)"


@pytest.mark.parametrize("metric", ["early_stop_test_acc", "early_stop_iter", "final_test_acc"])
def test_plot_vs_remaining(recs, metric):
    ax = plot_vs_remaining(recs, metric, kinds=("ticket", "reinit", "one_shot", "missing_kind"), show_seeds=True)
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] > ax.get_xlim()[1]
    assert len(ax.get_lines()) == 3
    plt.close("all")


def test_plot_vs_remaining_bad_spread(recs):
    with pytest.raises(ValueError, match="spread='iqr' is not allowed"):
        plot_vs_remaining(recs, spread="iqr")


def test_plot_lottery_and_save(recs, tmp_path):
    fig = plot_lottery(recs, title="t")
    assert len(fig.axes) == 2
    p = save_figure(fig, tmp_path / "a" / "fig.png")
    assert p.exists() and p.stat().st_size > 5000


def test_learning_curves_and_levels(recs):
    lv = nearest_levels(recs, (100, 51.3, 21.1, 3.6))
    assert lv[0] == 100.0 and len(lv) == len(set(lv))
    ax = plot_learning_curves(recs, (100, 51.3, 21.1))
    assert len(ax.get_lines()) == 3
    plt.close("all")


def test_layer_density(recs):
    ax = plot_layer_density(recs)
    assert len(ax.get_lines()) == 4  # 3 layers + overall
    with pytest.raises(ValueError, match="layer_density"):
        plot_layer_density([{"kind": "ticket", "density": 1.0}])
    plt.close("all")


@pytest.mark.parametrize("args,kw,expected", [
    (None, {}, "not run"),
    ([], {}, "not run"),
    ([float("nan")] * 3, {}, "not run"),
    ([1.0, 2.0], {}, "not reproduced at this scale"),
    ([1.0, 2.0, 3.0], {}, "holds"),
    ([1.0, 2.0, 3.0], {"figure": None}, "not reproduced at this scale"),
    ([1.0, 2.0, 3.0], {"measurable": False}, "not reproduced at this scale"),
    (None, {"measurable": False}, "not run"),
    ([-1.0, -2.0, -3.0], {"tier": "ci"}, "not reproduced at this scale"),
    ([-1.0, -2.0, -3.0], {"tier": "quick"}, "not reproduced at this scale"),
    ([-1.0, -2.0, -3.0], {"tier": "full"}, "does not hold"),
    ([-1.0, -2.0, -3.0], {"tier": "quick", "needs": "quick"}, "does not hold"),
    ([-0.1, 0.0, 0.05], {"tol": 0.1}, "holds"),
    ([0.2, 0.3, 0.25], {"direction": "<", "threshold": 0.5}, "holds"),
    ([0.6, 0.7, 0.65], {"direction": "<", "threshold": 0.5, "tier": "full"}, "does not hold"),
    ([0.1, -0.1, 0.0], {"direction": "~", "tol": 0.2}, "holds"),
    ([1.1, 0.9, 1.0], {"direction": "~", "tol": 0.2, "tier": "full"}, "does not hold"),
])
def test_verdict_rule(args, kw, expected):
    assert verdict(args, **kw) == expected
    assert expected in VERDICTS


def test_verdict_bad_input():
    with pytest.raises(ValueError, match="direction='>=' is not allowed"):
        verdict([1, 2, 3], ">=")
    with pytest.raises(ValueError, match="tier='huge' is not allowed"):
        verdict([1, 2, 3], tier="huge")
    with pytest.raises(ValueError, match="tol=-1 is not allowed"):
        verdict([1, 2, 3], tol=-1)


def test_claim_table():
    rows = [claim_row("c1", "m", [1.0, 1.2, 1.1], ">", 1.0, tier="quick", figure="Fig 1"),
            claim_row("c2", "m", None, figure="Fig 2"),
            claim_row("c3", "m", [0.1], figure="Fig 3")]
    df = claim_table(rows)
    assert list(df.verdict) == ["holds", "not run", "not reproduced at this scale"]
    assert list(df.seeds) == [3, 0, 1] and df.observed[0] == "1.10 ± 0.10"
    md = claim_table(rows, markdown=True)
    assert md.startswith("| claim |") and md.count("\n") == 4
    with pytest.raises(ValueError, match="verdict='maybe'"):
        claim_table([{"verdict": "maybe"}])
