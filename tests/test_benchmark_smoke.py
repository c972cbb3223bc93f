"""A quick run of `python -m benchmarks` on a tiny model, so that the benchmark cannot rot.
Timings are never asserted: only that every section is there with positive numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Every test here reads one benchmark run, which takes most of a minute on 2 cores.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def numbers(node: object) -> list[float]:
    """Every number in a JSON tree."""
    if isinstance(node, dict):
        return [x for value in node.values() for x in numbers(value)]
    if isinstance(node, list):
        return [x for value in node for x in numbers(value)]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return []
    return [node]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "decode step" in done.stdout
    return json.loads(out.read_text())


def test_every_section_is_reported(results):
    for section in ("machine", "model", "decode", "prefill", "memory", "ui"):
        assert section in results
    assert results["machine"]["threads"] >= 1
    assert len(results["prefill"]) == 3
    assert len(results["ui"]["render_ms"]) == 6


@pytest.mark.parametrize("section", ["decode", "prefill", "memory", "ui"])
def test_every_figure_is_positive(results, section):
    figures = numbers(results[section])
    assert figures
    assert all(x > 0 for x in figures)


def test_the_why_section_runs_with_or_without_transformer_lens(results):
    """Against TransformerLens where it is installed (the bench extra); without it (the
    test extra) ours alone, with its figures None."""
    why = results["why"]
    installed = results["machine"]["transformer_lens"] is not None
    assert (why["peer"] is not None) == installed
    for name in ("dla", "knock_out_vs_lens", "head_effects", "saliency"):
        assert why[name]["ours_ms"] > 0
        assert (why[name]["ratio"] is not None) == installed
        assert (why[name]["lens_ms"] is not None) == installed
    assert why["knock_out_vs_prefill"]["ratio"] > 0
    # No bound against ours_ms: in the quick plan the first row is one cold call of ~1 ms.
    assert why["head_effects"]["first_row_s"] > 0


def test_the_patching_section_runs_with_or_without_transformer_lens(results):
    patching = results["patching"]
    installed = results["machine"]["transformer_lens"] is not None
    assert (patching["peer"] is not None) == installed
    for name in ("resid_pre", "heads", "estimate"):
        assert patching[name]["ours_ms"] > 0
        assert (patching[name]["ratio"] is not None) == installed
    assert patching["resid_pre"]["cells"] == results["model"]["n_layer"] * patching["tokens"]
    assert patching["first_row_s"] > 0
