"""The one registry (vae_sweep/registry.py) and what reads it: units written once, statuses as plain strings."""

from __future__ import annotations

import json
import subprocess

from helpers import REPO
from vae_sweep.registry import COUNTED, METRICS, NATS, OBJECTIVES, Status, units_block


def test_every_unit_is_written_once_in_the_code():
    """`git grep` finds each unit's spelling, as a string in code, only in metrics.py (docstrings may name it)."""
    for text in ('"nats per example', '"nats"', '"nats/example"', '"per pixel"', '"per_pixel"', '"count"'):
        found = subprocess.run(
            ["git", "grep", "-l", "-F", text, "--", "vae_sweep/*.py", "scripts", "benchmarks"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.split()
        assert found == ["vae_sweep/registry.py"], (text, found)


def test_columns_labels_and_units_block_come_from_one_entry():
    d = METRICS["distortion"]
    assert (d.column, d.label, d.unit) == ("distortion_nats", "distortion [nats/example]", NATS)
    assert METRICS["mse"].column == "mse_per_pixel" and METRICS["active_units"].column == "active_units"
    block = units_block()
    assert set(block) == set(METRICS) and block["rate"].startswith("nats per example: KL")
    scores = {"beta_vae", "factor_vae", "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap"}
    assert set(OBJECTIVES) == {"distortion", "rate", "neg_elbo", "iwae_nll", "mse", "curve_hypervolume"} | scores
    assert [m for m in OBJECTIVES if not METRICS[m].needs_rate] == [
        "distortion",
        "mse",
        *sorted(scores, key=list(OBJECTIVES).index),
    ]


def test_statuses_are_plain_strings_in_json_and_text():
    assert json.dumps({"status": Status.DIVERGED}) == '{"status": "diverged"}'
    assert f"{Status.COMPLETED}" == str(Status.COMPLETED) == "completed" and Status("failed") is Status.FAILED
    assert Status.INTERRUPTED in COUNTED  # stopped by a signal or Ctrl-C, and continued by a sweep: no failure
    assert [s.value for s in COUNTED] == [
        "completed",
        "diverged",
        "failed",
        "pruned",
        "interrupted",
        "running",
        "missing",
    ]
