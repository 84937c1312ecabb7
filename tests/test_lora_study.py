"""The LoRA study's analysis (mirrorflow.experiments.lora.studies, run by scripts/lora_study.py): diverged arms
imputed as the design says, paired differences with Bonferroni intervals, verdicts, and the pilot's
learning-rate rule."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from mirrorflow.experiments.lora import studies as S
from mirrorflow.report.stats import PairedDifference, claim_verdict, paired_difference

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "lora_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("lora_study", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CURVES = {
    "constant": "0:nan;12:1.4;24:1.3;36:1.25;48:1.2;60:1.15",
    "off": "0:nan;12:1.4;24:1.3;36:1.28;48:1.21;60:1.1",
    "auto": "0:nan;12:1.4;24:1.3;36:1.3;48:1.3;60:1.3",
    "lambda0": "0:nan;12:1.5;24:1.45;36:1.4;48:1.35;60:1.3",
}


def _row(arm, value, seed, loss, diverged="", off_at="", sub0=4.1, subf=None):
    return {
        "optimizer": "sgd",
        "lr": "0.01",
        "weight_decay": str(value),
        "seed": str(seed),
        "arm": arm,
        "val_loss": str(loss),
        "val_loss_0": str(sub0),
        "diverged_at": str(diverged),
        "off_at": str(off_at),
        "a_switch": "-0.024",
        "rho_switch": "1.3",
        "rho_final": "1.2",
        "val_loss_subset_final": str(loss if subf is None else subf),
        "rho_curve": CURVES[arm],
    }


def test_claim_verdict_reads_the_interval():
    d = lambda m, h: PairedDifference(m, h, 0.01, 12, 0, 0, None)  # noqa: E731
    assert claim_verdict(d(-0.03, 0.01), -1, 0.01) == "reproduced"
    assert claim_verdict(d(0.02, 0.01), -1, 0.01) == "refuted"  # lies above −0.01: the gain is ruled out
    assert claim_verdict(d(-0.004, 0.005), -1, 0.01) == "refuted"  # [−0.009, 0.001] excludes −0.01
    assert claim_verdict(d(-0.01, 0.02), -1, 0.01) == "inconclusive"
    assert claim_verdict(d(+1.2, 0.5), +1, 1.7) == "reproduced"
    assert claim_verdict(PairedDifference(-1.0, math.nan, math.nan, 1, 1, 0, None), -1, 0.01) == "inconclusive"
    with pytest.raises(ValueError, match="direction must be -1 or \\+1"):
        claim_verdict(d(0, 1), 0, 0.01)


@pytest.mark.slow
def test_verdict_table_imputes_diverged_arms_and_corrects_for_the_settings(study):
    rows = []
    kept = [4.03, 4.02, 4.05, 4.04]
    off = [4.00, 3.99, 4.01, float("nan")]  # seed 3's turned-off arm diverged at step 50
    for s, (k, o) in enumerate(zip(kept, off)):
        rows += [
            _row("constant", 0.1, s, k),
            _row("off", 0.1, s, o, diverged=50 if s == 3 else ""),
            _row("auto", 0.1, s, k - 0.01, off_at=36),
            _row("lambda0", 0.0, s, 4.06),
        ]
    text = S.verdict_tables({"sgd": rows}, min_seeds=2)
    imputed = [o if math.isfinite(o) else math.log(49152) for o in off]
    d = paired_difference(kept, imputed, 0.01, 1 - 0.05 / 4)
    assert f"| {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}] | 3/1 |" in text
    assert d.mean > 1.0 and claim_verdict(d, -1, 0.01) == "inconclusive"
    assert "| 1 | 4.0000 | 10.8023† |" not in text  # the per-seed line carries the imputed value
    assert f"| sgd | 0.1 | 3 | 4.0400 | {math.log(49152):.4f}† |" in text
    assert "| 0 / 1 / 0 / 0 |" in text  # unstable counts per arm: only the diverged one
    # the automatic arm against the fixed switch, paired on the same seeds (the imputed value included)
    a = paired_difference(imputed, [k - 0.01 for k in kept], 0.01, 1 - 0.05 / 4)
    assert a.mean < -1.0 and f"| 36, 36, 36, 36 | {a.mean:+.4f} [{a.low:+.4f}, {a.high:+.4f}] |" in text
    assert "98.75 %" in text
    # ρ: off − kept is +0.03 at 36, +0.01 at 48, −0.05 at 60 → crosses at 60; it never meets λ = 0's curve
    assert "| sgd | 0.1 | 1.300 | 1.150 / 1.100 / 1.300 / 1.300 | 60 | none | none |" in text
    # the same seeds without the divergence: reproduced
    ok = [r for r in rows if not (r["arm"] == "off" and r["seed"] == "3")] + [_row("off", 0.1, 3, 4.02)]
    assert "| reproduced |" in S.verdict_tables({"sgd": ok}, min_seeds=2)
    assert "| interim (4/12 seeds) |" in S.verdict_tables({"sgd": ok})


def test_pilot_rule_takes_the_largest_learning_rate_whose_runs_are_all_stable(study):
    def runs(lr, bad=()):
        return [
            {
                "optimizer": "sgd",
                "lr": str(lr),
                "weight_decay": str(v),
                "seed": str(s),
                "stable": "0" if (v, s) in bad else "1",
            }
            for v in (*S.WEIGHT_DECAYS["sgd"], 0.0)
            for s in S.PILOT_SEEDS
        ]

    top, mid, low = S.LR_GRID["sgd"]
    assert S.pilot_choice([], "sgd") == (None, f"pending at lr {top:g}")
    assert S.pilot_choice(runs(top), "sgd") == (top, "chosen")
    one_bad = runs(top, bad={(0.0, S.PILOT_SEEDS[1])})
    assert S.pilot_choice(one_bad, "sgd") == (None, f"pending at lr {mid:g}")
    assert S.pilot_choice(one_bad + runs(mid), "sgd") == (mid, "chosen")
    all_bad = [dict(r, stable="0") for r in runs(top) + runs(mid) + runs(low)]
    assert S.pilot_choice(all_bad, "sgd") == (None, "no stable learning rate in the grid")


def test_stability_rule(study):
    rows = [{"step": 0, "val_loss": 4.10}, {"step": 12, "val_loss": 4.05}, {"step": 24, "val_loss": 4.19}]
    assert S.stability(rows, [4.2] * 60, None) == (True, "")
    bad = rows + [{"step": 36, "val_loss": 4.25}]
    ok, why = S.stability(bad, [4.2] * 60, None)
    assert not ok and "4.250 at step 36 > 4.100 + 0.1" in why
    ok, why = S.stability(rows, [4.0] * 12 + [4.2] * 48, None)
    assert not ok and "last 12 steps 4.200 > first 12 4.000" in why
    ok, why = S.stability(rows, [4.0] * 30, 30)
    assert not ok and "non-finite training loss at step 30" in why


def test_docs_block_is_interim_until_every_seed_has_finished(study, tmp_path, monkeypatch):
    rows = [_row(a, v, 100, 4.0) for a, v in (("constant", 0.1), ("off", 0.1), ("auto", 0.1), ("lambda0", 0.0))]
    block = S.docs_block({"sgd": rows})
    assert block.startswith(S.DOCS_START) and block.endswith(S.DOCS_END)
    assert "interim, not a verdict** (seeds finished: SGD 100; of 100–111)" in block
    full = [dict(r, seed=str(s)) for s in S.SEEDS for r in rows]
    assert "all seeds of the design" in S.docs_block({"sgd": full})
    # table --docs rewrites only the generated block of the file
    (tmp_path / "lora_study").mkdir()
    study.append_rows(tmp_path / "lora_study" / "sgd.csv", S.ARM_FIELDS, rows)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "lora_study")
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{S.DOCS_START}\nold\n{S.DOCS_END}\nafter\n")
    study.table(type("A", (), {"optimizers": ["sgd"], "docs": str(doc)})())
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n") and "old" not in text
    assert "| sgd | 0.1 | 100 | 4.0000 | 4.0000 | 4.0000 | 4.0000 | +0.0000 | never |" in text
