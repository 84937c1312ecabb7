"""The LoRA study of docs/transformers.md ("The LoRA study: design stated before the runs").

    python scripts/lora_study.py pilot [--workers 2]        # the blind learning-rate pilot (constant arms only)
    python scripts/lora_study.py run [--seeds 100..111] [--optimizers sgd,adamw] [--workers 2]
    python scripts/lora_study.py table [--docs docs/transformers.md]   # the verdict tables, from results/ alone

* ``pilot`` runs, per optimizer and from the largest learning rate of its grid down, the constant arm of every
  λ of the design and λ = 0 on the pilot seeds, judges each run by the stability rule of the design, and stops
  at the first learning rate whose runs are all stable. Each finished run is appended to
  ``results/lora_study/pilot.csv`` at once (a re-run skips the runs found there).
* ``run`` trains, per seed and optimizer, the groups of the design (constant / turned off at 24 / automatic
  for both λ, and λ = 0) with ``mirrorflow.experiments.lora`` into ``runs/lora-study/<optimizer>/groups``
  (reused when finished) and appends one row per arm to ``results/lora_study/<optimizer>.csv``. The
  learning rate is the one the pilot chose (read from ``pilot.csv``).
* ``table`` prints the per-setting tables and verdicts (paired difference turned off − kept, with diverged
  arms imputed as the design says, Bonferroni over the settings).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from pathlib import Path

from mirrorflow.experiments.lora.studies import (
    ARM_FIELDS,
    DOCS_END,
    DOCS_START,
    PILOT_FIELDS,
    PILOT_SEEDS,
    SEEDS,
    WEIGHT_DECAYS,
    arm_rows,
    docs_block,
    pilot_choice,
    pilot_job,
    pilot_key,
    study_values,
    verdict_tables,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "lora_study"
RUNS = ROOT / "runs" / "lora-study"


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` (header first when the file is new); flushed and fsynced before returning."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
        f.flush()
        os.fsync(f.fileno())


def pilot(args) -> None:
    from mirrorflow.engine.pool import run_pool

    path = RESULTS / "pilot.csv"

    def record(_item, r: dict) -> None:  # each finished run is on disk before the next one is waited for
        append_rows(path, PILOT_FIELDS, [r])
        print(
            f"pilot {r['optimizer']} lr={r['lr']:g} λ={r['weight_decay']:g} seed={r['seed']}: "
            f"{'stable' if r['stable'] else 'UNSTABLE ' + r['reason']} "
            f"(val {r['val_loss_0']} → max {r['val_loss_max']}, {r['seconds']} s)",
            flush=True,
        )

    while True:
        rows = read_rows(path)
        done = {pilot_key(r) for r in rows}
        todo = []
        for opt in args.optimizers:
            lr, status = pilot_choice(rows, opt)
            if not status.startswith("pending"):
                print(f"{opt}: {status}" + (f" lr = {lr:g}" if lr else ""), flush=True)
                continue
            level = float(status.split()[-1])
            todo += [
                (opt, level, v, s)
                for v in (*WEIGHT_DECAYS[opt], 0.0)
                for s in PILOT_SEEDS
                if (opt, level, v, s) not in done
            ]
        if not todo:
            return
        run_pool(pilot_job, todo, args.workers, on_result=record)


# ------------------------------------------------------------------------------------------------ run
def chosen_lr(optimizer: str) -> float:
    lr, status = pilot_choice(read_rows(RESULTS / "pilot.csv"), optimizer)
    if lr is None:
        sys.exit(
            f"error: the pilot has not chosen a learning rate for {optimizer} ({status}); "
            "run `python scripts/lora_study.py pilot` first"
        )
    return lr


def run(args) -> None:
    from mirrorflow.config import build
    from mirrorflow.experiments import lora

    for seed in args.seeds:
        for opt in args.optimizers:
            path = RESULTS / f"{opt}.csv"
            if any(int(r["seed"]) == seed for r in read_rows(path)):
                continue
            lr = chosen_lr(opt)
            values = study_values(opt, lr, seed, args.workers)
            cfg = build(lora.Config, {k: str(v) for k, v in values.items()})
            t0 = time.perf_counter()
            grid, _ = lora.run_grid(cfg, RUNS / opt)
            rows = arm_rows(opt, lr, seed, grid)
            append_rows(path, ARM_FIELDS, rows)
            print(f"{opt} seed {seed}: {len(rows)} arms in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)


def table(args) -> None:
    rows = {opt: read_rows(RESULTS / f"{opt}.csv") for opt in args.optimizers}
    if not args.docs:
        print(verdict_tables(rows))
        return
    path = Path(args.docs)
    text = path.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        sys.exit(f"error: --docs {path}: no block between {DOCS_START} and {DOCS_END}")
    i, j = text.index(DOCS_START), text.index(DOCS_END) + len(DOCS_END)
    path.write_text(text[:i] + docs_block(rows) + text[j:])
    print(f"updated {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("pilot", "run", "table"))
    ap.add_argument("--optimizers", default="sgd,adamw")
    ap.add_argument("--seeds", default=f"{SEEDS[0]}..{SEEDS[-1]}", help="e.g. 100..111 or 100,101 (100-111 too)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--docs", default="", help="table: write the tables into this file's generated block instead")
    args = ap.parse_args()
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    bad = [o for o in args.optimizers if o not in WEIGHT_DECAYS]
    if bad:
        sys.exit(f"error: --optimizers: unknown {bad[0]!r} (sgd, adamw)")
    from mirrorflow.config import parse_seeds
    from mirrorflow.errors import ConfigError

    try:  # the seeds= reader of the mirrorflow commands; the older range form 100-111 is still read
        args.seeds = list(parse_seeds(re.sub(r"^\s*(\d+)-(\d+)\s*$", r"\1..\2", args.seeds), "--seeds"))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    {"pilot": pilot, "run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
