"""Bad-input corpus: every case gets one clear line naming the problem in the user's words, a non-zero exit
(CLI: ``error: ...``, exit 2) or the documented exception (API), no traceback, and nothing left behind.

CLI cases run in-process through :func:`mirrorflow.cli.main` (the same code path as the console script);
a few run through the real front door (``python -m mirrorflow``) to check the exit codes end to end.
"""

import hashlib
import json
import math
import subprocess
import sys

import pytest
import torch

from mirrorflow.cli import main
from mirrorflow.errors import MirrorflowError

# ----------------------------------------------------------------------------------- CLI cases
MS = ["run", "matrix-sensing"]
DG = ["run", "diagonal"]
SC = ["run", "sparse-coding"]
SW = ["sweep", "matrix-sensing"]

CLI_CASES = [
    # matrix sensing: keys, types, ranges
    (MS + ["bogus=1"], "unknown config key 'bogus'"),
    (MS + ["n=abc"], "n: expected an integer"),
    (MS + ["n=0"], "n must be positive"),
    (MS + ["n=-3"], "n must be positive"),
    (MS + ["r=0"], "r must be in 1..n"),
    (MS + ["r=100"], "r must be in 1..n"),
    (MS + ["m=-1"], "m must be non-negative"),
    (MS + ["param=foo"], "param must be one of"),
    (MS + ["init_scale=0"], "init_scale must be positive"),
    (MS + ["init_scale=nan"], "init_scale must be positive"),
    (MS + ["init_scale=-1"], "init_scale must be positive"),
    (MS + ["lr=0"], "lr must be positive"),
    (MS + ["lr=-1e-3"], "lr must be positive"),
    (MS + ["lr=nan"], "lr must be positive"),
    (MS + ["lr=inf"], "lr must be positive"),
    (MS + ["steps=0"], "steps must be positive"),
    (MS + ["steps=2.5"], "steps: expected an integer"),
    (MS + ["steps=abc"], "steps: expected an integer"),
    (MS + ["wd=-0.1"], "wd must be non-negative"),
    (MS + ["wd=nan"], "wd must be non-negative"),
    (MS + ["wd=inf"], "wd must be non-negative"),
    (MS + ["decay=foo"], "decay must be one of"),
    (MS + ["loss_threshold=0"], "loss_threshold must be positive"),
    (MS + ["log_every=0"], "log_every must be positive"),
    (MS + ["dtype=float16"], "dtype must be one of"),
    (MS + ["schedule=sometimes"], "schedule must be one of"),
    (MS + ["n"], "expected key=value"),
    (MS + ["=5"], "expected key=value"),
    # errors name the key the user typed (off_at, steps), not the schedule's own argument names
    (MS + ["schedule=turn_off", "off_at=-1"], "off_at must be a step in 1..3999 or a fraction of the run"),
    (MS + ["schedule=turn_off", "off_at=nan"], "off_at must be a step in 1..3999"),
    (MS + ["schedule=turn_off", "off_at=5000", "steps=100"], "off_at must be a step in 1..99"),
    (
        MS + ["schedule=linear", "off_at=5000", "steps=100"],
        "off_at must be a step in 1..100 or a fraction of the run in (0, 1]",
    ),
    (
        MS + ["schedule=cosine", "off_at=500", "steps=100"],
        "off_at must be a step in 1..100 or a fraction of the run in (0, 1]",
    ),
    (MS + ["schedule=turn_off", "off_at=0.001", "steps=100"], "off_at=0.001 is step 0 of 100 steps"),
    # integer range and sizes that cannot fit (memory estimated before allocating)
    (MS + ["seed=1e30"], "seed: '1e30' is out of range"),
    (MS + ["n=1e30"], "out of range"),
    (MS + ["n=100000"], "of memory"),
    (MS + ["n=2000", "r=1"], "of memory"),
    (MS + ["steps=1e12"], "of memory"),
    # --out
    (MS + ["--out", ""], "--out: give a directory"),
    (MS + ["--out", "afile"], "--out afile: is a file"),
    (MS + ["--out", "afile/sub"], "afile is a file, not a directory"),
    (MS + ["--out", "other"], "holds a finished run of another config (experiment: diagonal → matrix-sensing"),
    (MS + ["n=9", "--out", "same"], "n: 8 → 9"),
    (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
    (["reproduce", "matrix-sensing", "wd=0"], "wd must be positive for reproduce"),
    (["reproduce", "matrix-sensing", "r=0"], "r must be in"),
    (["reproduce", "matrix-sensing", "bogus=1"], "unknown config key 'bogus'"),
    (["reproduce", "matrix-sensing", "--out", "afile"], "--out afile: is a file"),
    (["reproduce", "matrix-sensing", "--out", ""], "--out: give a directory"),
    # diagonal
    (DG + ["model=foo"], "model must be one of"),
    (DG + ["n_samples=0"], "n_samples must be positive"),
    (DG + ["dim=10"], "dim must exceed n_samples"),
    (DG + ["sparsity=0"], "sparsity must be in 1..dim"),
    (DG + ["init_scale=-1"], "init_scale must be positive"),
    (DG + ["lr=-1"], "lr must be positive"),
    (DG + ["weight_decays=-1"], "weight_decays must be non-negative"),
    (DG + ["weight_decays=abc"], "weight_decays: expected a number"),
    (DG + ["weight_decays="], "weight_decays must list at least one value"),
    (DG + ["steps_on=-1"], "steps_on must be an integer ≥ 0, got -1"),
    (DG + ["steps_off=-1"], "steps_off must be an integer ≥ 0, got -1"),
    (DG + ["steps=100", "off_at=0"], "off_at=0.0 is step 0 of 100 steps: it must fall in 1..100"),
    (DG + ["steps=100", "off_at=-0.5"], "off_at must be a step in 1..100"),
    (DG + ["k=0"], "k must be at least 1"),
    (DG + ["power_penalty=foo"], "power_penalty must be one of"),
    (DG + ["threads=100000"], "threads: at most the"),
    (DG + ["threads=-1"], "threads must be 0 (torch's default) or 1.."),
    (DG + ["log_every=0"], "log_every must be positive"),
    (DG + ["seed=1e30"], "seed: '1e30' is out of range"),
    (DG + ["dtype=int8"], "dtype must be one of"),
    (DG + ["dim=1e10"], "of memory"),
    # sparse coding
    (SC + ["param=foo"], "param must be one of"),
    (SC + ["ks=0"], "ks must be integers"),
    (SC + ["alphas=-1"], "alphas must be non-negative"),
    (SC + ["n_atoms=0"], "n_atoms must be positive"),
    (SC + ["batch_size=0"], "batch_size must be in 1..n_images"),
    (SC + ["iterations=0"], "iterations must be positive"),
    (SC + ["image_size=0"], "image_size must be one of"),
    (SC + ["threads=100000"], "threads: at most the"),
    (SC + ["lr_scale=-1"], "lr_scale must be positive"),
    (SC + ["n_images=0"], "n_images must be in"),
    # transformer experiments (validation only; nothing is loaded)
    (["run", "lora", "bogus=1"], "unknown config key 'bogus'"),
    (["run", "attention", "bogus=1"], "unknown config key 'bogus'"),
    (["run", "attention", "parts=xyz"], "parts must be among"),
    (["run", "lora", "threads=100000"], "threads: at most the"),
    (["run", "lora", "steps=-1"], "steps must be at least 2"),
    # sweeps
    (SW + ["--workers", "0"], "workers must be at least 1"),
    (SW + ["--batch-size", "0"], "batch_size must be at least 1"),
    (SW + ["--backend", "foo"], "backend must be one of local, ray"),
    (SW + ["--address", "x:1"], "--address needs --backend ray"),
    (SW + ["nosuch.yaml"], "sweep spec 'nosuch.yaml' not found"),
    (SW + ["a.yaml", "b.yaml"], "give at most one spec file"),
    (SW + ["notutf8.yaml"], "notutf8.yaml: not UTF-8 text"),
    (SW + ["badyaml.yaml"], "badyaml.yaml line 3: invalid YAML"),
    (SW + ["list.yaml"], "list.yaml: expected a mapping"),
    (SW + ["seeds=0"], "seeds=0 is a count of seeds and must be 1..100000"),
    (SW + ["seeds=abc"], "seeds must be integers or ranges A..B, comma-separated (e.g. seeds=0,1,2 or seeds=0..4)"),
    (SW + ["wd="], "wd: no value given"),
    (SW + ["bogus=1,2"], "unknown config key 'bogus'"),
    (SW + ["n=0,5"], "grid point {n=0}: n must be positive"),
    (SW + ["n=100000,8"], "of memory"),
    (SW + ["--out", ""], "--out: give a directory"),
    (SW + ["--out", "afile"], "--out afile: is a file"),
    (SW + ["n=4", "r=2", "--out", "damaged"], "damaged/sweep.yaml: 'runs' must be a list"),
    (SW + ["n=4", "r=2", "--out", "badstore"], "badstore/sweep.yaml: not valid YAML"),
    (SW + ["n=4", "r=2", "--out", "foreign"], "holds a sweep of experiment 'diagonal'"),
    # report: store files are validated and named
    (["report", "nodir"], "report: 'nodir' is not a directory"),
    (["report", "afile"], "report: 'afile' is not a directory"),
    (["report", "empty"], "no finished runs"),
    (["report", "rep_list"], "rep_list/r1/summary.json: expected a JSON object"),
    (["report", "rep_notutf8"], "rep_notutf8/r1/summary.json: not UTF-8 text"),
    (["report", "rep_badjson"], "rep_badjson/r1/summary.json: not valid JSON"),
    (["report", "rep_badcfg"], "rep_badcfg/r1/config.yaml: not valid YAML"),
    (["report", "rep_status"], "'status' must be a string"),
    (["report", "badstore"], "badstore/sweep.yaml: not valid YAML"),
    # legendre
    (["legendre", "foo"], "unknown reparameterization 'foo'"),
    (["legendre", "mw", "--a", "5"], "--a: a = -∫λ must be ≤ 0"),
    (["legendre", "mw", "--a", "-1,nan"], "--a: a = -∫λ must be ≤ 0"),
    (["legendre", "mw", "--a", "abc"], "--a: expected comma-separated numbers"),
    (["legendre", "mw", "--a", ""], "--a: give at least one value"),
    (["legendre", "mw", "--scale", "nan"], "--scale must be positive"),
    (["legendre", "mw", "--scale", "-1"], "--scale must be positive"),
    (["legendre", "mw", "--data-scale", "-1"], "--data-scale must be positive"),
    (["legendre", "mw", "--x0", "inf"], "--x0 must be finite"),
    (["legendre", "power", "--k", "0"], "k must be ≥ 1"),
    (["legendre", "mw", "--xmin", "2", "--xmax", "1", "--out", "f.png"], "--xmin and --xmax"),
    # usage errors of the command line itself
    (["frobnicate"], "No such command 'frobnicate'"),
    (MS + ["--workers", "2"], "No such option: --workers"),
    (SW + ["--workers", "abc"], "Invalid value for '--workers'"),
    (["run"], "Missing argument 'experiment'"),
    (["report"], "Missing argument 'directory'"),
    (["legendre", "mw", "--scale", "big"], "Invalid value for '--scale'"),
]


def _store_fixtures(root):
    """Files the store cases refer to (created before the snapshot, so they are not 'leftovers')."""

    def put(rel, data):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    put("afile", "hi\n")
    put("a.yaml", "grid: {}\n")
    put("b.yaml", "grid: {}\n")
    put("notutf8.yaml", b"\xff\xfe")
    put("badyaml.yaml", "grid:\n  n: [1,\n")
    put("list.yaml", "- 1\n- 2\n")
    put("other/config.yaml", "experiment: diagonal\nn: 3\n")
    put("other/summary.json", '{"status": "finished"}\n')
    from mirrorflow.config import build, config_dict
    from mirrorflow.experiments import load

    same = {"experiment": "matrix-sensing", **config_dict(build(load("matrix-sensing").Config, {"n": 8}))}
    put("same/config.yaml", json.dumps(same))
    put("same/summary.json", '{"status": "finished"}\n')
    put("damaged/sweep.yaml", "runs: 5\n")
    put("badstore/sweep.yaml", "experiment: [unclosed\n")
    put("foreign/sweep.yaml", "experiment: diagonal\nruns: []\n")
    (root / "empty").mkdir()
    put("rep_list/r1/summary.json", "[1, 2]\n")
    put("rep_notutf8/r1/summary.json", b"\xff\xfe{")
    put("rep_badjson/r1/summary.json", '{"a": 1,')
    put("rep_badcfg/r1/summary.json", '{"status": "finished", "x": 1}')
    put("rep_badcfg/r1/config.yaml", ": : bad\n  - x")
    put("rep_status/r1/summary.json", '{"status": 3, "x": 1}')
    # issue 21
    put("phase_other/config.yaml", "experiment: matrix-sensing\nx: wd:0.001:1:2:log\ny: init_scale:0.01:0.1:2:lin\n")
    put("phase_other/summary.json", '{"experiment": "matrix-sensing", "cells_per_schedule": 4}\n')
    put("rep_trunc/r1/config.yaml", "experiment: probe\nx: 1\n")
    put("rep_trunc/r1/metrics.csv", "step,loss\n0,")
    put("rep_trunc/r1/summary.json", '{"status": "finished", "x": 1.5, "files": {"metrics.csv": 999}}')
    put("rep_cut/r1/config.yaml", "experiment: probe\nx: 1\n")  # a run of an older version: no sizes recorded
    put("rep_cut/r1/metrics.csv", "step,loss\n0,1.0\n20")
    put("rep_cut/r1/summary.json", '{"status": "finished", "x": 1.5}')
    put("s_ok/r1/config.yaml", "experiment: probe\nx: 1\n")
    put("s_ok/r1/summary.json", '{"status": "finished", "x": 1.5}')
    import struct

    put("crafted.gguf", b"GGUF" + struct.pack("<IQQ", 3, 1, 5) + b"\x05\x00")  # a header cut short
    bomb = "base:\n  n: &a [" + ",".join(["1"] * 9) + "]\n"
    for i, key in enumerate(("r", "m", "seed", "lr", "wd", "off")):
        prev = "abcdefg"[i]
        bomb += f"  {key}: &{'abcdefg'[i + 1]} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    put("bomb.yaml", bomb)  # 9^7 ≈ 4.8 million values once the aliases are expanded
    from mirrorflow.engine.grid import resolve

    (rid,) = {p.run_id for p in resolve("matrix-sensing", load("matrix-sensing"), None, ["n=4", "r=2"])[1]}
    put(f"fileinrun/{rid}", "not a run directory\n")


def _snapshot(root):
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _store_fixtures(tmp_path)
    return tmp_path


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    _, err = capsys.readouterr()
    return e.value.code, err


# issue 21: stale results, contradictions, counts/rates/threads at the door, presets, dry-run parity, messages
PH = ["phase", "matrix-sensing", "y=init_scale:0.01:0.1:2", "n=6", "r=1", "steps=20"]
PHX = PH + ["x=wd:1e-2:1:2:log"]
LR = ["run", "lora"]
BIG = "x" * 100_000

CLI_CASES_21 = [
    # duplicate keys: refused, naming both values
    (MS + ["wd=0.1", "wd=0.2"], "wd: given twice (wd=0.1 and wd=0.2)"),
    (MS + ["n=4", "n=5"], "n: given twice"),
    (MS + ["n=4", "n=4"], "n: given twice"),
    (DG + ["dim=50", "dim=60"], "dim: given twice"),
    (SC + ["iterations=2", "iterations=3"], "iterations: given twice"),
    (LR + ["rank=2", "rank=4"], "rank: given twice"),
    (SW + ["wd=0.1", "wd=0.2,0.3"], "wd: given twice"),
    (PHX + ["x=lr:0.1:0.2:2"], "x: given twice"),
    (PHX + ["steps=30"], "steps: given twice"),
    (["reproduce", "diagonal", "seeds=0", "seeds=1"], "seeds: given twice"),
    # one tokenizer (config.tokenize) for every command: the same wording, naming the tokens as typed
    (MS + ["init-scale=0.1", "init_scale=0.2"], "init_scale: given twice (init-scale=0.1 and init_scale=0.2)"),
    (SW + ["=3"], "expected key=value, got '=3'"),
    (PHX + ["n"], "expected key=value, got 'n'"),
    (["reproduce", "diagonal", "models"], "expected key=value, got 'models'"),
    # one seed reader (config.parse_seeds) for run, reproduce, sweep and phase
    (["reproduce", "diagonal", "seeds=0..x"], "seeds must be integers or ranges A..B, comma-separated"),
    (["reproduce", "diagonal", "seeds=3..1"], "seeds must be integers or ranges A..B"),
    (["reproduce", "matrix-sensing", "seeds=0..2,1"], "seeds must list distinct integers, got '0..2,1'"),
    (SC + ["seeds=0,x"], "seeds must be integers or ranges A..B"),
    (PHX + ["seeds=0..1,1"], "seeds must list distinct integers"),
    (SW + ["seeds=0..200000"], "seeds: at most 100000 seeds"),
    # contradictory keys: a value the config ignores is refused, naming it and what ignores it
    (MS + ["schedule=none", "wd=0.5"], "wd=0.5 has no effect with schedule=none"),
    (MS + ["schedule=none", "off_at=0.3"], "off_at=0.3 has no effect with schedule=none"),
    (MS + ["schedule=constant", "off_at=0.3"], "off_at=0.3 has no effect with schedule=constant"),
    (MS + ["off_at=0.3"], "off_at=0.3 has no effect with schedule=constant"),
    (MS + ["schedule=none", "wd=0.5", "--dry-run"], "wd=0.5 has no effect with schedule=none"),
    (SW + ["schedule=none", "wd=0.5"], "wd=0.5 has no effect with schedule=none"),
    (SW + ["schedule=none", "wd=0.5", "seeds=0..1"], "wd=0.5 has no effect with schedule=none"),
    (SW + ["schedule=none", "wd=0.5", "n=4,6", "r=1"], "(at every point of the grid)"),
    (SW + ["schedule=none", "wd=0.1,0.5"], "wd=0.1 has no effect with schedule=none"),
    (SW + ["schedule=none,constant", "off_at=0.3"], "off_at=0.3 has no effect with schedule=none"),
    (["reproduce", "matrix-sensing", "schedule=turn_off"], "schedule: reproduce sets the schedule"),
    (["reproduce", "matrix-sensing", "off=0.3"], "off: reproduce sets the schedule"),
    (["reproduce", "matrix-sensing", "off_at=0.3"], "off_at: reproduce sets the schedule"),
    (["reproduce", "sparse-coding", "preset=authors", "log_alphas=0.1"], "log_alphas: preset=authors runs no log"),
    # rates: finite, in range, and a finite accumulated regularization a = -lr·steps·λ
    (MS + ["wd=1e308"], "wd=1e+308 makes the accumulated regularization a = -lr·steps·wd infinite"),
    (MS + ["wd=1e306"], "makes the accumulated regularization"),
    (MS + ["wd=1e308", "--dry-run"], "makes the accumulated regularization"),
    (MS + ["wd=-inf"], "wd must be non-negative"),
    (DG + ["weight_decays=1e308"], "weight_decays=1e+308 makes the accumulated regularization"),
    (DG + ["weight_decays=0.1,inf"], "weight_decays must be non-negative"),
    (LR + ["alpha=inf"], "alpha must be positive and finite, got inf"),
    (LR + ["alpha=nan"], "alpha must be positive and finite"),
    (LR + ["alpha=0"], "alpha must be positive"),
    (LR + ["alpha=-2"], "alpha must be positive"),
    (LR + ["weight_decays=inf"], "weight_decays must be non-negative and finite"),
    (LR + ["weight_decays=nan"], "weight_decays must be non-negative and finite"),
    # counts: integers in range, never an OverflowError
    (PH + ["x=wd:1e-2:1:inf:log"], "x: COUNT must be an integer 2..65536, got 'inf'"),
    (PH + ["x=wd:1e-2:1:1e400:log"], "x: COUNT must be an integer 2..65536, got '1e400'"),
    (PH + ["x=wd:1e-2:1:-inf:log"], "x: COUNT must be an integer"),
    (PH + ["x=wd:1e-2:1:nan:log"], "x: COUNT must be an integer"),
    (PH + ["x=wd:1e-2:1:2.5:log"], "x: COUNT must be an integer"),
    (PH + ["x=wd:1e-2:1:abc:log"], "x: COUNT must be an integer"),
    (PH + ["x=wd:1e-2:1:1:log"], "x: COUNT must be an integer 2..65536, got 1"),
    (PH + ["x=wd:1e-2:1:-5:log"], "x: COUNT must be an integer 2..65536, got -5"),
    (PH + ["x=wd:1e-2:1:1e9:log"], "x: COUNT must be an integer 2..65536"),
    (PH + ["x=wd:1e-2:1:1e30:log"], "x: COUNT must be an integer 2..65536"),
    (PH + ["x=wd:1e-2:1:512:log", "y=init_scale:0.01:0.1:512"], "given twice"),
    (["phase", "matrix-sensing", "x=wd:1e-2:1:512:log", "y=init_scale:0.01:0.1:512"], "too many cells"),
    (["phase", "matrix-sensing", "x=wd:1e-2:1:2:log", "y=init_scale:0.01:0.1:inf"], "y: COUNT must be an integer"),
    (LR + ["val_windows=0"], "val_windows must be an integer ≥ 1, got 0"),
    (LR + ["val_windows=-3"], "val_windows must be an integer ≥ 1, got -3"),
    (LR + ["block_size=1"], "block_size must be an integer ≥ 2, got 1"),
    (LR + ["block_size=0"], "block_size must be an integer ≥ 2"),
    (LR + ["block_size=1", "--dry-run"], "block_size must be an integer ≥ 2, got 1"),  # dry run = real run
    (LR + ["val_windows=0", "--dry-run"], "val_windows must be an integer ≥ 1"),
    (["reproduce", "lora", "block_size=1", "--dry-run"], "block_size must be an integer ≥ 2"),
    (SW + ["seeds=inf"], "seeds must be integers or ranges A..B, comma-separated"),
    (SW + ["seeds=1e400"], "seeds must be integers or ranges A..B, comma-separated"),
    # thread counts: one home (0 = torch's default where an experiment allows it, never negative or > cores)
    (PHX + ["threads=0"], "threads must be an integer ≥ 1, got 0"),
    (PHX + ["threads=-3"], "threads must be an integer ≥ 1, got -3"),
    (PHX + ["threads=abc"], "threads must be an integer ≥ 1, got 'abc'"),
    (PHX + ["threads=inf"], "threads must be an integer ≥ 1, got 'inf'"),
    (PHX + ["threads=100000"], "threads: at most the"),
    (PHX + ["threads=0", "--dry-run"], "threads must be an integer ≥ 1"),
    (SC + ["threads=-3"], "threads must be 0 (torch's default) or 1.."),
    (LR + ["threads=-3"], "threads must be 0 (torch's default) or 1.."),
    (["run", "attention", "threads=-3"], "threads must be 0 (torch's default) or 1.."),
    (["run", "attention", "threads=100000"], "threads: at most the"),
    # sizes: the memory estimate, not the allocator
    (LR + ["rank=1000000000"], "of memory"),
    (LR + ["rank=1e9"], "of memory"),
    (LR + ["rank=1000000000", "--dry-run"], "of memory"),  # a plan for this machine: the real run's check
    (["sweep", "lora", "rank=1e9,2"], "of memory"),
    # stale results: a finished run of another config is refused (phase as run)
    (PHX + ["--out", "phase_other"], "phase_other holds a finished run of another config (x: wd:0.001:1:2:log"),
    (MS + ["n=9", "--out", "same", "--dry-run"], "same holds a finished run of another config (n: 8 → 9"),
    (PHX + ["--out", "phase_other", "--dry-run"], "phase_other holds a finished run of another config"),
    (["report", "rep_trunc"], "rep_trunc/r1/metrics.csv: 12 bytes, 999 were written (truncated or changed)"),
    (["report", "rep_cut"], "rep_cut/r1/metrics.csv row 2: 1 fields for 2 columns (the file was cut short?)"),
    (SW + ["n=4", "r=2", "--out", "fileinrun"], "is a file, not a run directory"),
    (SW + ["n=4", "r=2", "--out", "foreign", "--dry-run"], "holds a sweep of experiment 'diagonal'"),
    (SW + ["n=4", "r=2", "--out", "damaged", "--dry-run"], "damaged/sweep.yaml: 'runs' must be a list"),
    (PHX + ["--out", "afile"], "--out afile: is a file"),
    (PHX + ["--out", "afile/sub"], "afile is a file, not a directory"),
    (PHX + ["--out", ""], "--out: give a directory"),
    (["report", "s_ok", "--out", "afile"], "--out afile: is a file"),
    # models: a damaged GGUF file is named, never a struct.error
    (
        LR + ["model=crafted.gguf", "steps=4", "off_at=2", "seeds=0", "weight_decays=0.1"],
        "cannot load model 'crafted.gguf' from crafted.gguf: the file is truncated or damaged",
    ),
    # messages: what is echoed is bounded
    (MS + ["n=" + BIG], "n: expected an integer"),
    (MS + [BIG + "=1"], "unknown config key"),
    (MS + [BIG], "expected key=value"),
    (SW + ["bomb.yaml"], "bomb.yaml: expands to more than 100000 values"),
]


@pytest.mark.parametrize(
    "args, needle", CLI_CASES + CLI_CASES_21, ids=[" ".join(a)[:60] for a, _ in CLI_CASES + CLI_CASES_21]
)
@pytest.mark.slow
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(workdir, capsys, args, needle):
    before = _snapshot(workdir)
    if "--out" not in args and args[0] in ("run", "reproduce", "sweep", "phase") and len(args) > 1:
        args = [*args, "--out", "out"]
    code, err = _cli(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert len(lines[0]) <= 400, f"an error line of {len(lines[0])} characters"  # echoes are bounded
    assert _snapshot(workdir) == before, "a rejected input left files behind"


def test_force_redoes_a_different_finished_run(workdir, capsys):
    """--force replaces the other run: the new config and summary are written, the old ones are gone."""
    main(["run", "matrix-sensing", "n=6", "r=1", "steps=40", "--out", "other", "--force"])
    capsys.readouterr()
    import yaml

    cfg = yaml.safe_load((workdir / "other" / "config.yaml").read_text())
    assert cfg["experiment"] == "matrix-sensing" and cfg["n"] == 6
    assert json.loads((workdir / "other" / "summary.json").read_text())["status"] == "finished"


def test_ignored_options_are_normalised_before_hashing():
    """schedule=none ignores wd and off_at, constant ignores off_at: same config, same run id (config.py docstring)
    where the caller allows such values (a sweep crossing schedule with wd); otherwise they are refused."""
    from mirrorflow.config import build, config_dict
    from mirrorflow.experiments import load
    from mirrorflow.store import run_id

    C = load("matrix-sensing").Config
    rid = lambda **kw: run_id(config_dict(build(C, kw, allow_ignored=True)))  # noqa: E731
    assert rid(schedule="none", wd=0.5) == rid(schedule="none") == rid(schedule="none", wd=0.1, off_at=0.3)
    assert rid(schedule="constant", off_at=0.3) == rid(schedule="constant")
    assert rid(schedule="constant", wd=0.5) != rid(schedule="constant")
    assert rid(schedule="turn_off", off_at=0.3) != rid(schedule="turn_off")
    with pytest.raises(ValueError, match=r"^wd=0.5 has no effect with schedule=none"):
        build(C, {"schedule": "none", "wd": 0.5})


def test_a_sweep_may_cross_a_schedule_with_the_values_it_ignores():
    """schedule=none,turn_off × wd=0.5: the none point ignores wd (one run), the turn_off point uses it; only a
    value ignored at every point of the grid is a contradiction (the cases above)."""
    from mirrorflow.engine.grid import resolve
    from mirrorflow.experiments import load

    _, points = resolve("matrix-sensing", load("matrix-sensing"), None, ["schedule=none,turn_off", "wd=0.5,0.7"])
    assert sorted((p.config.schedule, p.config.wd) for p in points) == [
        ("none", 0.01),
        ("turn_off", 0.5),
        ("turn_off", 0.7),
    ]


def test_report_never_counts_an_invalid_summary_as_finished(workdir):
    from mirrorflow.report.aggregate import collect

    good = workdir / "mixed" / "r_good"
    good.mkdir(parents=True)
    (good / "summary.json").write_text('{"status": "finished", "x": 1.5}')
    (good / "config.yaml").write_text("experiment: probe\nx: 1\n")
    bad = workdir / "mixed" / "r_bad"
    bad.mkdir()
    (bad / "summary.json").write_text("[1, 2]")
    sweep = collect(workdir / "mixed")
    assert [r.run_id for r in sweep.runs] == ["r_good"]
    assert "r_bad/summary.json: expected a JSON object" in sweep.failed["r_bad"]


# ------------------------------------------------------------------------------- front door
@pytest.mark.parametrize(
    "args, code, needle",
    [
        ([], 2, None),  # no arguments: the help, exit 2
        (["frobnicate"], 2, "No such command"),
        (["run", "matrix-sensing", "seed=1e30"], 2, "seed: '1e30' is out of range"),
        (["legendre", "mw", "--a", "5"], 2, "a = -∫λ must be ≤ 0"),
    ],
)
@pytest.mark.slow
def test_front_door_exit_codes(tmp_path, args, code, needle):
    p = subprocess.run([sys.executable, "-m", "mirrorflow", *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    if needle is None:
        assert "Usage" in p.stdout
    else:
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- API cases
def _opt(n_groups=1, wd=0.1):
    params = [torch.nn.Parameter(torch.ones(2)) for _ in range(n_groups)]
    return torch.optim.SGD([{"params": [p], "weight_decay": wd} for p in params], lr=0.1)


def _sched(**kw):
    from mirrorflow.schedules import constant
    from mirrorflow.training.scheduler import WeightDecayScheduler

    return WeightDecayScheduler(_opt(), constant(0.1), **kw)


def _load_wds(state):
    s = _sched()
    good = s.state_dict()
    if callable(state):
        state = state(good)
    s.load_state_dict(state)


def _lr_sched_state():
    opt = _opt()
    return torch.optim.lr_scheduler.StepLR(opt, 1).state_dict()


def _auto(**kw):
    from mirrorflow.training.auto_off import AutoTurnOff

    return AutoTurnOff(0.1, **kw)


def _mw_problem():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(3, 6, generator=g, dtype=torch.float64)
    return Z, Z @ torch.tensor([1.0, -0.5, 0, 0, 0, 0], dtype=torch.float64)


def _predict(a=-1.0, y=None, Z=None):
    from mirrorflow.geometry import get, predict_limit

    Z0, y0 = _mw_problem()
    mw = get("mw", 6)
    return predict_limit(mw, mw.init(scale=1.0), a, Z0 if Z is None else Z, y0 if y is None else y)


def _geom_init(name, **kw):
    from mirrorflow.geometry import get

    return get(name, 3).init(**kw)


def _spectral_batch():
    from mirrorflow.training.spectral import spectral_metrics

    return spectral_metrics(torch.tensor([[3.0, 1.0], [2.0, 2.0]]))


def _find(model):
    from mirrorflow.training.factors import find_factor_pairs

    return find_factor_pairs(model)


def _build(name, **kw):
    from mirrorflow.config import build
    from mirrorflow.experiments import load

    return build(load(name).Config, kw)


def _check_mem(n):
    from mirrorflow.app.resources import check_resources
    from mirrorflow.experiments import load

    mod = load("matrix-sensing")
    return check_resources(mod, _build("matrix-sensing", n=n), available=10**9)


API_CASES = [
    (
        "WeightDecayScheduler(opt, 0.1)",
        lambda: __import__("mirrorflow.training.scheduler", fromlist=["x"]).WeightDecayScheduler(_opt(), 0.1),
        TypeError,
        "schedule must be a callable",
    ),
    (
        "WeightDecayScheduler(opt, [0.1])",
        lambda: __import__("mirrorflow.training.scheduler", fromlist=["x"]).WeightDecayScheduler(_opt(), [0.1]),
        TypeError,
        "schedule must be a callable",
    ),
    ("groups=[0.7]", lambda: _sched(groups=[0.7]), TypeError, "groups: expected param group indices"),
    ("groups=[True]", lambda: _sched(groups=[True]), TypeError, "groups: expected param group indices"),
    ("groups=[5]", lambda: _sched(groups=[5]), ValueError, "index 5 out of range"),
    ("groups=['nope']", lambda: _sched(groups=["nope"]), ValueError, "no param group named 'nope'"),
    ("load_state_dict({})", lambda: _load_wds({}), ValueError, "missing"),
    ("load_state_dict(None)", lambda: _load_wds(None), TypeError, "state_dict must be a mapping"),
    (
        "load_state_dict(StepLR state)",
        lambda: _load_wds(_lr_sched_state()),
        ValueError,
        "not a WeightDecayScheduler state",
    ),
    ("a_per_group='abc'", lambda: _load_wds(lambda s: {**s, "a_per_group": "abc"}), TypeError, "a_per_group"),
    ("a_per_group=[1.0]", lambda: _load_wds(lambda s: {**s, "a_per_group": [1.0]}), ValueError, "must be ≤ 0"),
    ("a_per_group=[nan]", lambda: _load_wds(lambda s: {**s, "a_per_group": [math.nan]}), ValueError, "finite"),
    ("_last_wd=[-5]", lambda: _load_wds(lambda s: {**s, "_last_wd": [-5.0]}), ValueError, "_last_wd"),
    ("_last_wd=[1,2]", lambda: _load_wds(lambda s: {**s, "_last_wd": [1.0, 2.0]}), ValueError, "2 entries for 1"),
    ("last_epoch='x'", lambda: _load_wds(lambda s: {**s, "last_epoch": "x"}), TypeError, "last_epoch"),
    (
        "AutoTurnOff(lambda t: -1)",
        lambda: __import__("mirrorflow.training.auto_off", fromlist=["x"]).AutoTurnOff(lambda t: -1.0)(0),
        ValueError,
        "λ must be finite and ≥ 0",
    ),
    (
        "AutoTurnOff(-1)",
        lambda: __import__("mirrorflow.training.auto_off", fromlist=["x"]).AutoTurnOff(-1.0),
        ValueError,
        "non-negative",
    ),
    ("AutoTurnOff(mode=x)", lambda: _auto(mode="x"), ValueError, "mode must be one of"),
    ("AutoTurnOff(window=0)", lambda: _auto(window=0), ValueError, "window must be a positive integer"),
    (
        "AutoTurnOff.load_state_dict(None)",
        lambda: _auto().load_state_dict(None),
        TypeError,
        "state_dict must be a mapping",
    ),
    (
        "AutoTurnOff.load_state_dict(triggered_at=-3)",
        lambda: _auto().load_state_dict({"triggered_at": -3}),
        ValueError,
        "triggered_at",
    ),
    ("AutoTurnOff.load_state_dict(recent='x')", lambda: _auto().load_state_dict({"recent": "x"}), TypeError, "recent"),
    ("find_factor_pairs('model')", lambda: _find("model"), TypeError, "model must be a torch.nn.Module"),
    ("spectral_metrics(batch)", _spectral_batch, ValueError, "batched_spectral_metrics"),
    (
        "spectral_metrics([])",
        lambda: __import__("mirrorflow.training.spectral", fromlist=["x"]).spectral_metrics(torch.tensor([])),
        ValueError,
        "no singular values",
    ),
    (
        "spectral_metrics(list)",
        lambda: __import__("mirrorflow.training.spectral", fromlist=["x"]).spectral_metrics([1.0, 2.0]),
        TypeError,
        "expected a tensor",
    ),
    ("predict_limit(a=+3)", lambda: _predict(a=3.0), ValueError, "a must be finite and ≤ 0"),
    ("predict_limit(a=nan)", lambda: _predict(a=math.nan), ValueError, "a must be finite"),
    (
        "predict_limit(y=nan)",
        lambda: _predict(y=torch.full((3,), math.nan, dtype=torch.float64)),
        ValueError,
        "y must be finite",
    ),
    (
        "predict_limit(Z=inf)",
        lambda: _predict(Z=torch.full((3, 6), math.inf, dtype=torch.float64)),
        ValueError,
        "Z must be finite",
    ),
    ("init(scale=-1) mw", lambda: _geom_init("mw", scale=-1.0), ValueError, "scale must be positive"),
    ("init(scale=nan) mw", lambda: _geom_init("mw", scale=math.nan), ValueError, "scale must be positive"),
    ("init(scale=-1) power", lambda: _geom_init("power", scale=-1.0), ValueError, "scale must be positive"),
    ("init(scale=0) log", lambda: _geom_init("log", scale=0.0), ValueError, "scale must be positive"),
    ("build seed=1e30", lambda: _build("matrix-sensing", seed=1e30), ValueError, "out of range"),
    ("build seed=2**70 (int)", lambda: _build("matrix-sensing", seed=2**70), ValueError, "out of range"),
    ("build threads=10**6", lambda: _build("diagonal", threads=10**6), ValueError, "threads: at most"),
    ("build unknown key", lambda: _build("diagonal", nope=1), ValueError, "unknown config key 'nope'"),
    ("check_resources n=20000", lambda: _check_mem(20000), ValueError, "of memory, 954 MiB is available"),
    (
        "ray check_reachable refused",
        lambda: __import__("mirrorflow.engine.ray_backend", fromlist=["x"]).check_reachable("127.0.0.1:1", timeout=2.0),
        MirrorflowError,
        "cannot reach Ray at 127.0.0.1:1",
    ),
    (
        "ray check_reachable no port",
        lambda: __import__("mirrorflow.engine.ray_backend", fromlist=["x"]).check_reachable("headnode"),
        ValueError,
        "--address must be HOST:PORT",
    ),
]


def _cfg(name, *args, **kw):
    """``mirrorflow.config.<name>(*args, **kw)`` when called (the validation homes of issue 21)."""
    import mirrorflow.config as C

    return lambda: getattr(C, name)(*args, **kw)


def _legendre(name, a, **kw):
    from mirrorflow.geometry import get

    rep = get(name, 3)
    return rep.legendre(rep.init(scale=0.5, **kw), a)


def _dist_env(**env):
    """``dist_env("cpu")`` under the environment variables ``env`` (restored afterwards)."""
    import os

    from mirrorflow.experiments.transformer_kit.distributed import dist_env

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return dist_env("cpu")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _gguf(tmp_bytes):
    import tempfile

    from mirrorflow.experiments.transformer_kit.models import load_config

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/cut.gguf"
        with open(path, "wb") as fh:
            fh.write(tmp_bytes)
        return load_config(path)


def _two_locks():
    import tempfile

    from mirrorflow.store import StoreLock

    with tempfile.TemporaryDirectory() as d, StoreLock(d), StoreLock(d):
        pass


API_CASES_21 = [
    ("check_count(inf)", _cfg("check_count", "k", math.inf), ValueError, "k must be an integer ≥ 1, got inf"),
    ("check_count('1e400')", _cfg("check_count", "k", "1e400"), ValueError, "k must be an integer"),
    ("check_count(nan)", _cfg("check_count", "k", math.nan), ValueError, "k must be an integer"),
    ("check_count(True)", _cfg("check_count", "k", True), ValueError, "k must be an integer"),
    ("check_count(2.7)", _cfg("check_count", "k", 2.7), ValueError, "k must be an integer"),
    ("check_count(0)", _cfg("check_count", "k", 0), ValueError, "k must be an integer ≥ 1, got 0"),
    ("check_count(5, high=3)", _cfg("check_count", "k", 5, high=3), ValueError, "k must be an integer 1..3, got 5"),
    ("check_rate(nan)", _cfg("check_rate", "wd", math.nan), ValueError, "wd must be non-negative and finite"),
    ("check_rate(-1)", _cfg("check_rate", "wd", -1.0), ValueError, "wd must be non-negative and finite, got -1.0"),
    ("check_rate(0, positive)", _cfg("check_rate", "lr", 0.0, positive=True), ValueError, "lr must be positive"),
    (
        "check_rate(1e308, horizon=10)",
        _cfg("check_rate", "wd", 1e308, horizon=10.0),
        ValueError,
        "wd=1e+308 makes the accumulated regularization a = -lr·steps·wd infinite",
    ),
    ("check_threads(-1)", _cfg("check_threads", "threads", -1), ValueError, "threads must be 0 (torch's default)"),
    (
        "check_threads(0, zero_ok=False)",
        _cfg("check_threads", "threads", 0, zero_ok=False),
        ValueError,
        "threads must be 1..",
    ),
    ("check_threads(2.5)", _cfg("check_threads", "threads", 2.5), ValueError, "got 2.5"),
    ("check_threads(10**6)", _cfg("check_threads", "threads", 10**6), ValueError, "threads: at most the"),
    (
        "parse_overrides duplicate",
        _cfg("parse_overrides", ["wd=0.1", "wd=0.2"]),
        ValueError,
        "wd: given twice (wd=0.1 and wd=0.2)",
    ),
    (
        "build schedule=none wd=0.5",
        lambda: _build("matrix-sensing", schedule="none", wd=0.5),
        ValueError,
        "wd=0.5 has no effect with schedule=none",
    ),
    (
        "build schedule=constant off_at=0.3",
        lambda: _build("matrix-sensing", schedule="constant", off_at=0.3),
        ValueError,
        "off_at=0.3 has no effect with schedule=constant",
    ),
    ("build wd=1e308", lambda: _build("matrix-sensing", wd=1e308), ValueError, "accumulated regularization"),
    ("build lora alpha=inf", lambda: _build("lora", alpha=math.inf), ValueError, "alpha must be positive and finite"),
    (
        "build lora val_windows=0",
        lambda: _build("lora", val_windows=0),
        ValueError,
        "val_windows must be an integer ≥ 1",
    ),
    ("build lora block_size=1", lambda: _build("lora", block_size=1), ValueError, "block_size must be an integer ≥ 2"),
    ("build threads=-3", lambda: _build("diagonal", threads=-3), ValueError, "threads must be 0 (torch's default)"),
    (
        "lora rank 1e9 memory",
        lambda: __import__("mirrorflow.app.resources", fromlist=["x"]).check_resources(
            __import__("mirrorflow.experiments.lora", fromlist=["x"]), _build("lora", rank=10**9), available=10**9
        ),
        ValueError,
        "of memory",
    ),
    (
        "mw.legendre(a=0.5)",
        lambda: _legendre("mw", 0.5),
        ValueError,
        "a must be finite and ≤ 0 (a = −∫λ, λ ≥ 0), got 0.5",
    ),
    ("mw-coupled.legendre(a=1)", lambda: _legendre("mw-coupled", 1.0), ValueError, "a must be finite and ≤ 0"),
    ("uut.legendre(a=0.1)", lambda: _legendre("uut", 0.1), ValueError, "a must be finite and ≤ 0"),
    ("power.legendre(a=2)", lambda: _legendre("power", 2.0), ValueError, "a must be finite and ≤ 0"),
    ("log.legendre(a=0.5)", lambda: _legendre("log", 0.5), ValueError, "a must be finite and ≤ 0"),
    ("mw.legendre(a=nan)", lambda: _legendre("mw", math.nan), ValueError, "a must be finite"),
    ("mw.legendre(a=-inf)", lambda: _legendre("mw", -math.inf), ValueError, "a must be finite"),
    (
        "geometry.legendre('mw', a=0.5)",
        lambda: __import__("mirrorflow.geometry", fromlist=["x"]).legendre(
            "mw", torch.ones(6, dtype=torch.float64) * 0.5, 0.5, n=3
        ),
        ValueError,
        "a must be finite and ≤ 0",
    ),
    (
        "WORLD_SIZE=abc",
        lambda: _dist_env(WORLD_SIZE="abc"),
        ValueError,
        "environment variable WORLD_SIZE must be an integer ≥ 1, got 'abc'",
    ),
    ("WORLD_SIZE=0", lambda: _dist_env(WORLD_SIZE="0"), ValueError, "environment variable WORLD_SIZE must be"),
    (
        "RANK=5 WORLD_SIZE=1",
        lambda: _dist_env(WORLD_SIZE="1", RANK="5"),
        ValueError,
        "environment variable RANK must be an integer 0..0, got 5",
    ),
    ("LOCAL_RANK=-1", lambda: _dist_env(LOCAL_RANK="-1"), ValueError, "environment variable LOCAL_RANK must be"),
    (
        "truncated GGUF header",
        lambda: _gguf(b"GGUF" + bytes([3, 0, 0, 0, 1])),
        MirrorflowError,
        "the file is truncated or damaged",
    ),
    ("two StoreLocks on one directory", _two_locks, MirrorflowError, "another mirrorflow command is writing"),
]


@pytest.mark.parametrize(
    "call, exc, needle", [c[1:] for c in API_CASES + API_CASES_21], ids=[c[0] for c in API_CASES + API_CASES_21]
)
def test_api_bad_input_raises_one_clear_line(call, exc, needle):
    with pytest.raises(exc) as e:
        call()
    msg = str(e.value)
    assert needle in msg and len(msg.strip().splitlines()) == 1, msg


def test_absurd_step_size_is_recorded_as_diverged_while_its_batch_mate_finishes():
    """lr=1000 with exact decay: the gradient step moves U by more than U itself (it would collapse W to 0
    without a trace), so the run is recorded as diverged at that step; lr=0.25 in the same batch finishes."""
    from mirrorflow.config import build
    from mirrorflow.experiments import matrix_sensing as ms

    cfgs = [build(ms.Config, {"n": 8, "r": 2, "steps": 150, "lr": lr}) for lr in (1000, 0.25)]
    bad, good = (ms.summarize(c, r) for c, r in zip(cfgs, ms.run_many(cfgs)))
    assert bad["status"] == "diverged" and 0 <= bad["diverged_at"] < 150 and bad["a_final"] != bad["a_final"]
    assert good["status"] == "finished" and good["diverged_at"] is None
    assert good["a_final"] == pytest.approx(-0.25 * 0.01 * 150)


class _Accumulating:
    """Two configurations; x grows by 10× per step in row 0 only when ``grow``; ``acc`` (an accumulator) is
    set to inf in row 1 at step 2."""

    n_configs = 2

    def __init__(self, divergence_keys):
        self.divergence_keys = divergence_keys

    def init_state(self):
        return {"x": torch.ones(2, 3, dtype=torch.float64), "acc": torch.zeros(2, 4, dtype=torch.float64)}

    def step(self, state, lam, lr, t):
        x = state["x"] * torch.tensor([[1e80], [1.0]], dtype=torch.float64)
        acc = state["acc"] + 1
        if t == 2:
            acc[1] = float("inf")
        return {"x": x, "acc": acc}

    def metrics(self, state):
        return {"x": state["x"][:, 0]}


def test_divergence_keys_decide_divergence_and_name_missing_entries():
    """Only the watched entries decide divergence and are frozen; an unwatched accumulator passes through."""
    from mirrorflow.engine.batched import run_batched

    lam = torch.zeros(2, 5, dtype=torch.float64)
    tr = run_batched(_Accumulating(("x",)), lam, 0.1, log_every=1)
    assert tr.diverged_at.tolist() == [1, -1]  # step 1 makes 1e160 > √(max float64) ≈ 1.3e154
    assert tr.final_state["x"][0, 0] == pytest.approx(1e80) and math.isinf(tr.final_state["acc"][1, 0])
    every = run_batched(_Accumulating(None), lam, 0.1, log_every=1)
    assert every.diverged_at.tolist() == [1, 2]  # every entry watched: the accumulator's inf counts
    with pytest.raises(ValueError, match="divergence_keys"):
        run_batched(_Accumulating(("x", "B")), lam, 0.1)


def test_cases_count():
    """The corpus is at least 100 cases across CLI and API (issue 11), and issue 21 added at least 100 more
    (with tests/test_store_faults.py: locks, a full disk, stale results)."""
    assert len(CLI_CASES) + len(API_CASES) + 4 >= 100
    assert len(CLI_CASES_21) + len(API_CASES_21) >= 100
