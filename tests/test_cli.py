"""Tests for the `lth-nb` console script (lth_nb.cli): fast --help, argparse errors, presets, outputs, a tiny real run."""
import json, os, subprocess, sys, time
from pathlib import Path

import pytest

from lth_nb.cli import main, build_parser, resolve_tier, UsageError, COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None, timeout=120):
    "Run `lth-nb ARGS` in a fresh interpreter (as the console script does)."
    code = "import sys; from lth_nb.cli import main; sys.exit(main())"
    e = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", **(env or {}))
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=e, cwd=ROOT)


def test_help_is_fast_and_light():
    t = time.time()
    r = _cli("--help")
    assert r.returncode == 0 and "imp" in r.stdout and "presets" in r.stdout
    assert time.time() - t < 10
    code = ("import sys; from lth_nb.cli import build_parser; build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'matplotlib', 'pandas', 'seaborn') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_subcommands_registered():
    assert {"imp", "presets"} <= set(COMMANDS)
    assert "imp" in build_parser().format_help()


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: lth-nb" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (["imp"], "the following arguments are required: --preset"),
    (["imp", "--preset", "lenet300_mnist", "--seeds", "0"], "--seeds=0 is not allowed: expected a positive integer"),
    (["imp", "--preset", "lenet300_mnist", "--seeds", "x"], "--seeds='x' is not allowed"),
    (["imp", "--preset", "lenet300_mnist", "--rounds", "-1"], "--rounds=-1 is not allowed"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_argparse_errors_exit_2(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["imp", "--preset", "lenet300_mnist", "--tier", "huge"], "--tier='huge' is not allowed: expected one of ['ci', 'quick', 'full']"),
    (["imp", "--preset", "lenet300_mnist", "--tier", "ci", "--quick"], "not allowed with --quick"),
    (["imp", "--preset", "no_such_preset", "--tier", "ci"], "--preset='no_such_preset' is not allowed: expected one of ["),
])
def test_usage_errors_exit_2(argv, msg, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert msg in err, err
    assert not (tmp_path / "o").exists()  # nothing written before the input was checked


def test_unknown_preset_names_allowed_ones(capsys, tmp_path):
    assert main(["imp", "--preset", "lenet5_mnistx", "--out", str(tmp_path)]) == 2
    assert "lenet300_mnist" in capsys.readouterr().err


def test_resolve_tier():
    assert resolve_tier(None, True) == "quick" and resolve_tier("ci", False) == "ci" and resolve_tier(None, False) == "full"
    with pytest.raises(UsageError):
        resolve_tier("fast", False)


def test_presets_lists_lenet(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "lenet300_mnist" in out and "quick" in out
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["preset"] == "lenet300_mnist" for r in rows)


def test_fake_run_writes_outputs(tmp_path, capsys):
    out = tmp_path / "fake"
    assert main(["imp", "--preset", "lenet300_mnist", "--tier", "ci", "--fake", "--seeds", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "% remaining" in printed and "ticket" in printed and "reinit" in printed
    assert {p.name for p in out.iterdir()} >= {"records.json", "summary.md", "lottery.png"}
    rec = json.loads((out / "records.json").read_text())
    assert rec["preset"] == "lenet300_mnist" and rec["tier"] == "ci" and len(rec["records"]) > 0


def test_tiny_real_run(tmp_path, data_root, capsys, monkeypatch):
    "End to end on real MNIST: 1 seed, 1 pruning round, 30 iterations; a second call finds everything in the store."
    monkeypatch.setenv("LTH_NB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["imp", "--preset", "lenet300_mnist", "--tier", "ci", "--seeds", "1", "--rounds", "1", "--iterations", "30",
            "--out", str(out), "--store", str(tmp_path / "store"), "--data", str(data_root), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "% remaining" in printed and "100.0" in printed and "80.0" in printed
    rec = json.loads((out / "records.json").read_text())
    assert {(x["kind"], x["round"]) for x in rec["records"]} == {("ticket", 0), ("ticket", 1), ("reinit", 1)}
    assert rec["runs"] and rec["runs"][0].startswith("imp/") and rec["provenance"]
    assert (out / "lottery.png").stat().st_size > 5000
    stored = sorted(p.name for p in (tmp_path / "store" / "imp").glob("*/*.json"))
    assert main(argv) == 0  # everything is stored: nothing retrains, same records
    assert json.loads((out / "records.json").read_text())["records"] == rec["records"]
    assert sorted(p.name for p in (tmp_path / "store" / "imp").glob("*/*.json")) == stored


def test_bench_subcommand_runs(tmp_path, capsys):
    "`lth-nb bench` hands its options to lth_nb.bench_suite.main and writes the JSON it asks for."
    out = tmp_path / 'bench.json'
    skip = 'masked,batched,batched_per_member_lr,data,sparse,openlth,imp_batched,imp_batched_lr_sweep'
    assert main(['bench', '--quick', '--skip', skip, '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    assert res['compact'] and all('ratio_median' in r for r in res['compact'])
    assert 'compact/dense' in capsys.readouterr().out


def test_missing_data_is_a_clean_error(tmp_path, capsys, monkeypatch):
    "Offline with no data files: exit code 2 and the data module's message (where the files go, how to provide them)."
    monkeypatch.setenv('LTH_NB_DATA', str(tmp_path / 'nodata'))
    code = main(['imp', '--preset', 'lenet300_mnist', '--tier', 'ci', '--seeds', '1', '--store', str(tmp_path / 's'),
                 '--out', str(tmp_path / 'o'), '--no-progress'])
    err = capsys.readouterr().err
    assert code == 2 and 'files not found' in err and 'LTH_NB_DATA' in err, err


def test_batched_run_with_progress_bar(tmp_path, capsys):
    "--batched with the progress bar on: one bar over all member-iterations; the seed-by-seed run then finds all stored."
    argv = ["imp", "--preset", "lenet300_mnist", "--tier", "ci", "--seeds", "2", "--rounds", "1", "--iterations", "20",
            "--synthetic", "--store", str(tmp_path / "store")]
    assert main(argv + ["--batched", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "120 iterations still to run" in err and "round 1: 2 ticket, 2 reinit" in err and "120/120" in err
    assert main(argv + ["--out", str(tmp_path / "s")]) == 0
    assert "0 iterations still to run" in capsys.readouterr().err
    b, s = (json.loads((tmp_path / o / "records.json").read_text()) for o in ("b", "s"))
    assert b["records"] == s["records"] and b["batched"] and not s["batched"]
