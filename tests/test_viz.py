"""Tests for lth_nb.viz (plots build from fake records, tables) and lth_nb.claims (the claim-table verdict rule)."""
import math, subprocess, sys

import pytest

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lth_nb.viz import (fake_records, normalize_records, summarize, summary_table, format_table, plot_vs_remaining,
                        plot_lottery, plot_learning_curves, plot_layer_density, nearest_levels, save_figure)
from lth_nb.claims import verdict, claim_row, claim_table, sem, VERDICTS


@pytest.fixture(scope="module")
def recs():
    return fake_records(seeds=3, rounds=6, kinds=("ticket", "reinit", "one_shot"))


@pytest.mark.parametrize("mod", ["viz", "claims"])
def test_import_is_light(mod):
    code = f"import sys, lth_nb.{mod}; bad = [m for m in ('matplotlib', 'seaborn', 'pandas', 'torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
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


NR = "not reproduced at this scale"
SE3 = 1 / 3 ** 0.5            # SE of [m - 1, m, m + 1] (sd 1, n 3)


@pytest.mark.parametrize("args,kw,expected", [
    # no values / too few / no figure / not measurable
    (None, {}, "not run"),
    ([], {}, "not run"),
    ([float("nan")] * 3, {}, "not run"),
    ([None, None], {}, "not run"),
    ([float("inf"), float("-inf")] * 2, {}, "not run"),      # infinite values are not measurements
    ([1.0, 2.0, float("inf")], {}, NR),                       # inf dropped: 2 < min_seeds
    ([1.0, 2.0, 3.0, float("-inf")], {}, "holds"),
    ([1.0, 2.0], {}, NR),
    ([1.0, 2.0, float("nan")], {}, NR),                     # NaN dropped: 2 < min_seeds
    ([1.0, 2.0, None, 3.0], {}, "holds"),                   # None dropped: 3 values
    ([1.0, 2.0, 3.0], {}, "holds"),
    ([1.0, 2.0, 3.0], {"figure": None}, NR),
    ([1.0, 2.0, 3.0], {"measurable": False}, NR),
    (None, {"measurable": False}, "not run"),
    ([1.0, 2.0, 3.0, 4.0], {"min_seeds": 5}, NR),
    ([1.0, 2.0, 3.0, 4.0, 5.0], {"min_seeds": 5}, "holds"),  # n == min_seeds
    ([0.3], {"min_seeds": 1}, "holds"),                       # single value: SE taken as 0
    # '>' clear cases, each tier
    ([-1.0, -2.0, -3.0], {"tier": "ci"}, NR),
    ([-1.0, -2.0, -3.0], {"tier": "quick"}, NR),
    ([-1.0, -2.0, -3.0], {"tier": "full"}, "does not hold"),
    ([-1.0, -2.0, -3.0], {"tier": "quick", "needs": "quick"}, "does not hold"),
    ([-1.0, -2.0, -3.0], {"tier": "ci", "needs": "ci"}, "does not hold"),
    ([-0.1, 0.0, 0.05], {"tol": 0.1}, "holds"),
    # '>' noisy: the case, +0.07 +- 0.40 over 3 seeds (SE 0.23)
    ([-0.33, 0.07, 0.47], {}, NR),
    ([-0.33, 0.07, 0.47], {"tier": "full"}, NR),
    ([-0.33, 0.07, 0.47], {"se_mult": 0}, "holds"),          # the old rule
    ([-0.47, -0.07, 0.33], {"tier": "full"}, NR),            # mirrored: wrong side, within one SE
    ([-0.47, -0.07, 0.33], {"tier": "full", "se_mult": 0}, "does not hold"),
    # '>' at exactly one SE (margin == SE) and just inside
    ([SE3 - 1, SE3, SE3 + 1], {}, "holds"),
    ([0.99 * SE3 - 1, 0.99 * SE3, 0.99 * SE3 + 1], {}, NR),
    ([-SE3 - 1, -SE3, -SE3 + 1], {"tier": "full"}, "does not hold"),
    ([-0.99 * SE3 - 1, -0.99 * SE3, -0.99 * SE3 + 1], {"tier": "full"}, NR),
    # se_mult scales the margin
    ([1.0, 2.0, 3.0], {"threshold": 1.5, "se_mult": 1}, NR),  # margin 0.5 < SE 0.577
    ([1.0, 2.0, 3.0], {"threshold": 1.4, "se_mult": 1}, "holds"),  # margin 0.6
    ([1.0, 2.0, 3.0], {"threshold": 1.4, "se_mult": 2}, NR),
    ([1.0, 2.0, 3.0], {"threshold": 0.8, "se_mult": 2}, "holds"),  # margin 1.2 >= 1.155
    # tol counts in the claim's favour for both outcomes
    ([0.4, 0.5, 0.6], {"threshold": 0.5, "tol": 0.2}, "holds"),  # margin 0.2 >= SE 0.058
    ([0.4, 0.5, 0.6], {"threshold": 0.5}, NR),                     # margin 0 with spread
    ([0.1, 0.2, 0.3], {"threshold": 0.5, "tol": 0.2, "tier": "full"}, "does not hold"),  # -0.1 <= -SE
    ([0.1, 0.2, 0.3], {"threshold": 0.5, "tol": 0.25, "tier": "full"}, NR),              # -0.05 within SE
    # zero spread: the plain comparison
    ([0.5, 0.5, 0.5], {}, "holds"),
    ([0.0, 0.0, 0.0], {"tier": "full"}, "does not hold"),      # margin 0 is not > 0
    ([0.0, 0.0, 0.0], {"tol": 1e-9}, "holds"),
    ([-0.5, -0.5, -0.5], {"tier": "quick"}, NR),
    # '<'
    ([0.2, 0.3, 0.25], {"direction": "<", "threshold": 0.5}, "holds"),
    ([0.6, 0.7, 0.65], {"direction": "<", "threshold": 0.5, "tier": "full"}, "does not hold"),
    ([0.6, 0.7, 0.65], {"direction": "<", "threshold": 0.5, "tier": "quick"}, NR),
    ([0.0, 1.0, -0.7], {"direction": "<", "threshold": 0.0}, NR),  # mean +0.1, SE 0.5
    ([0.4, 0.5, 0.6], {"direction": "<", "threshold": 0.5, "tol": 0.1}, "holds"),  # margin 0.1 >= 0.058
    ([0.4, 0.5, 0.6], {"direction": "<", "threshold": 0.5, "tol": 0.01, "tier": "full"}, NR),
    ([-0.03, -0.02, -0.04], {"direction": "<", "threshold": 0.0}, "holds"),
    # '~': interval mean +- SE inside threshold +- tol / entirely outside / straddling
    ([0.1, -0.1, 0.0], {"direction": "~", "tol": 0.2}, "holds"),
    ([1.1, 0.9, 1.0], {"direction": "~", "tol": 0.2, "tier": "full"}, "does not hold"),
    ([1.1, 0.9, 1.0], {"direction": "~", "tol": 0.2, "tier": "quick"}, NR),
    ([0.30, 0.42, 0.54], {"direction": "~", "tol": 0.3, "tier": "full"}, "does not hold"),  # [0.35, 0.49] outside
    ([0.30, 0.42, 0.54], {"direction": "~", "tol": 0.4, "tier": "full"}, NR),               # straddles 0.4
    ([0.30, 0.42, 0.54], {"direction": "~", "tol": 0.5}, "holds"),                          # inside [-0.5, 0.5]
    ([-0.54, -0.42, -0.30], {"direction": "~", "tol": 0.3, "tier": "full"}, "does not hold"),  # below
    ([-1.0, 0.0, 1.0], {"direction": "~", "tol": 0.5}, NR),    # mean on target, interval too wide
    ([-1.0, 0.0, 1.0], {"direction": "~", "tol": 0.5, "se_mult": 0}, "holds"),
    ([2.51, 2.51, 2.51], {"direction": "~", "threshold": 2.51, "tol": 0.0}, "holds"),  # zero spread, zero tol
    ([2.6, 2.6, 2.6], {"direction": "~", "threshold": 2.51, "tol": 0.0, "tier": "full"}, "does not hold"),
    ([SE3 - 1, SE3, SE3 + 1], {"direction": "~", "tol": 2 * SE3}, "holds"),  # interval edge == tol
])
def test_verdict_rule(args, kw, expected):
    assert verdict(args, **kw) == expected
    assert expected in VERDICTS


def test_verdict_se_rule_is_symmetric():
    "Mirroring the values about the threshold swaps 'holds' and 'does not hold' ('>' vs '<', at a refuting tier)."
    for vals in ([0.2, 0.5, 0.9], [-0.33, 0.07, 0.47], [1.0, 1.0, 1.0], [0.1, 0.3, 0.2, 0.4]):
        mirrored = [-v for v in vals]
        assert verdict(vals, ">", 0.0, tier="full") == verdict(mirrored, "<", 0.0, tier="full")


def test_verdict_more_seeds_narrow_the_interval():
    "The same mean and sd become 'holds' once n is large enough for the SE to fall below the margin."
    few = [-0.33, 0.07, 0.47]             # mean 0.07, sd 0.40
    many = few * 12                        # 36 values: sd 0.33, SE 0.055 < 0.07
    assert verdict(few) == NR and verdict(many) == "holds"


def test_sem():
    assert sem([1.0, 2.0, 3.0]) == pytest.approx(SE3)
    assert sem([5.0, 5.0, 5.0]) == 0.0
    assert sem([2.0]) == 0.0
    assert math.isnan(sem([])) and math.isnan(sem([float("nan")]))
    assert sem([1.0, float("nan"), 3.0]) == pytest.approx(1.0)   # NaN dropped: sd 1.414 / sqrt 2
    assert sem([1.0, float("inf"), 3.0]) == pytest.approx(1.0)   # inf dropped too


def test_verdict_bad_input():
    with pytest.raises(ValueError, match="direction='>=' is not allowed"):
        verdict([1, 2, 3], ">=")
    with pytest.raises(ValueError, match="tier='huge' is not allowed"):
        verdict([1, 2, 3], tier="huge")
    with pytest.raises(ValueError, match="needs='huge' is not allowed"):
        verdict([1, 2, 3], needs="huge")
    with pytest.raises(ValueError, match="tol=-1 is not allowed"):
        verdict([1, 2, 3], tol=-1)
    with pytest.raises(ValueError, match="se_mult=-0.5 is not allowed"):
        verdict([1, 2, 3], se_mult=-0.5)
    with pytest.raises(ValueError, match="min_seeds=0 is not allowed"):
        verdict([1, 2, 3], min_seeds=0)


def test_verdict_positional_signature_unchanged():
    "Old positional calls (values, direction, threshold, tol, tier, needs, figure, min_seeds, measurable) still work."
    assert verdict([1.0, 2.0, 3.0], ">", 0.0, 0.0, "quick", "full", "Fig", 3, True) == "holds"
    assert verdict([1.0, 2.0, 3.0], ">", 0.0, 0.0, "quick", "full", "Fig", 4, True) == NR


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


def test_claim_row_shows_mean_sd_n_and_uses_se():
    r = claim_row("rewinding > ticket", "acc diff", [-0.33, 0.07, 0.47], ">", 0.0, tier="full", figure="Fig")
    assert r["observed"] == "0.07 ± 0.40" and r["seeds"] == 3 and r["verdict"] == NR
    assert claim_row("c", "m", [-0.33, 0.07, 0.47], ">", 0.0, figure="Fig", se_mult=0)["verdict"] == "holds"
    assert claim_row("c", "m", [1.0, 2.0, 3.0], ">", 0.0, figure="Fig", min_seeds=4)["verdict"] == NR
    r = claim_row("c", "m", [0.5, float("nan"), 0.7, 0.6], ">", 0.0, figure="Fig", digits=3)
    assert r["seeds"] == 3 and r["observed"] == "0.600 ± 0.100" and r["verdict"] == "holds"
    r = claim_row("c", "m", [0.5, float("inf"), 0.7, 0.6], ">", 0.0, figure="Fig", digits=3)
    assert r["seeds"] == 3 and r["observed"] == "0.600 ± 0.100" and r["verdict"] == "holds"
    r = claim_row("c", "m", [0.42], figure="Fig")
    assert r["observed"] == "0.42" and r["seeds"] == 1 and r["verdict"] == NR
    assert claim_row("c", "m", [0.30, 0.42, 0.54], "~", 0.0, tol=0.3, tier="full", figure="F")["rule"] == "0 ± 0.3"


def test_controls_per_seed_are_averaged_before_the_spread():
    "Three reinits per ticket (the full LTH tier): n counts seeds and each seed contributes the mean of its controls."
    from lth_nb.claims import values_at
    recs = [dict(kind='reinit', seed=s, density=0.5, early_stop_test_acc=v)
            for s, vals in ((0, (0.90, 0.92, 0.94)), (1, (0.80, 0.80, 0.80))) for v in vals]
    (row,) = summarize(recs)
    assert row['n'] == 2 and row['seeds'] == [0, 1]
    assert row['mean'] == pytest.approx(86.0) and row['min'] == pytest.approx(80.0) and row['max'] == pytest.approx(92.0)
    got, lv = values_at(recs, 'early_stop_test_acc', kind='reinit', pct=50)
    assert lv == 50 and got == pytest.approx({0: 92.0, 1: 80.0})
