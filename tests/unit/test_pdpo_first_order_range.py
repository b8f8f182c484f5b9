"""P-DPO's first-order adaptation is a documented deviation (docs/fidelity.md row 10): the paper's
configs pin the exact path, and leaving the validated lr x steps-per-pass range logs a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from persalign.rewards.methods import _pdpo_adapt
from persalign.rewards.methods._pdpo_adapt import VALIDATED_LR_X_STEPS, check_first_order_range

ROOT = Path(__file__).resolve().parents[2]


def test_paper_configs_pin_the_exact_path():
    pinned = 0
    for path in sorted((ROOT / "configs" / "paper").glob("*.yaml")):
        methods = yaml.safe_load(path.read_text("utf-8")).get("methods") or {}
        if "p-dpo" in methods:
            assert (methods["p-dpo"] or {}).get("adapt_steps_per_pass") == 1, path.name
            pinned += 1
    assert pinned >= 2  # pref_lamp.yaml and tldr.yaml run P-DPO


def test_outside_the_validated_range_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(_pdpo_adapt, "_warned", set())
    assert VALIDATED_LR_X_STEPS == 5e-4
    with caplog.at_level(logging.WARNING, logger=_pdpo_adapt.__name__):
        assert check_first_order_range(5e-5, 10)  # the validated point: silent
        assert check_first_order_range(1e-2, 1)  # the exact path: any lr
        assert caplog.records == []
        assert not check_first_order_range(1e-4, 10)
        assert not check_first_order_range(1e-4, 10)  # once per (lr, steps)
        assert not check_first_order_range(5e-5, 20)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "adapt lr 0.0001 x adapt_steps_per_pass 10 = 0.001 is outside" in messages[0]
