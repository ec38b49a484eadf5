"""The merge-speed benchmark runs end to end (tiny geometry) and its plugin output equals stock mergekit's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_plugin_matches_stock(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.merge_speed", "--sizes", "tiny", "--methods", "ties"]
    cmd += ["--sweep", "2,3", "--no-detector", "--root", str(tmp_path), "--repeats", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    by_variant = {(r["variant"], r["ingredients"]): r for r in results}
    assert {v for v, _ in by_variant} == {"stock", "plugin", "plain", "plugin-index", "plugin-sweep"}
    assert by_variant[("plugin", 3)]["identical"] == "yes"
    assert all(r["wall_s"] > 0 and r["peak_anon_mb"] > 0 for r in results)
    assert "stock/plugin wall" in proc.stdout and "anon at 3 / at 2 ingredients" in proc.stdout
