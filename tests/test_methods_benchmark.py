"""The merge-methods benchmark runs end to end (tiny geometry) and mergekit's output equals the plain merge's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_mergekit_matches_the_plain_merge(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.merge_methods", "--quick", "--methods", "regmean", "--root", str(tmp_path),
           "--repeats", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "methods_results.json").read_text())
    assert [(r["method"], r["variant"]) for r in results] == [("regmean", "plain"), ("regmean", "plugin")]
    assert results[1]["max_abs_diff"] < 1e-5
    assert all(r["wall_s"] > 0 and r["peak_anon_mb"] > 0 for r in results)
    assert "regmean: plugin/plain wall" in proc.stdout
