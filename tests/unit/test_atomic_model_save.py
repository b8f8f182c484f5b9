"""A reward-model folder is the previous model or the new one, never a mix that loads.

``persalign train`` trains into a temporary folder renamed into place when whole; the library's
``rm.save`` writes the weights, then the config that records their sha256, so a save cut between
the two is refused on load instead of pairing new weights with an old config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from persalign.cli import main
from persalign.errors import DataError
from persalign.rewards import load
from persalign.rewards.engine import saving as reward_io

from .rewards_synthetic import write_two_group_benchmark
from .test_cli import run

# The child runs `persalign train`, but stops for good inside the save: once the weights are
# written and before the config is, it touches READY and sleeps until the test kills it (-9).
CHILD = """
import pathlib, sys, time
from persalign.rewards.engine import saving as io
ready = pathlib.Path(sys.argv[1])
def stuck(*args, **kwargs):
    ready.touch()
    time.sleep(120)
io.write_json = stuck
from persalign.cli import main
main(sys.argv[2:])
"""


def train_argv(bench: Path, backbone: str, out: Path, seed: int) -> list[str]:
    return [
        *("train", "--benchmark", str(bench), "--method", "global-rm", "--backbone", backbone),
        *("--out", str(out), "--max-steps", "2", "--seed", str(seed)),
        *("--set", "device=cpu", "--set", "batch_size=4"),
    ]


@pytest.fixture(scope="module")
def trained(tiny_lm: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(benchmark, a model trained on it by `persalign train`), shared; tests copy the model."""
    root = tmp_path_factory.mktemp("atomic-save")
    bench = write_two_group_benchmark(root / "bench")
    code = 0
    try:
        main(train_argv(bench, tiny_lm, root / "model", seed=0))
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 0
    return bench, root / "model"


def kill_when_ready(code: str, args: list[str], ready: Path) -> None:
    """Run ``python -c code READY *args``, SIGKILL it once it has touched READY (bounded: 240 s
    at most, and the child is always reaped)."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(ready), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), child.stderr.read().decode() if child.poll() is not None else ""
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_kill_9_during_the_save_of_persalign_train_leaves_the_previous_model(
    trained: tuple[Path, Path], tiny_lm: str, tmp_path: Path, capsys
) -> None:
    bench, model = trained[0], tmp_path / "model"
    shutil.copytree(trained[1], model)
    before = files(model)
    evaluate = ["evaluate", "rm", "--model", str(model), "--benchmark", str(bench), "--json"]
    code, out, err = run(evaluate, capsys)
    assert code == 0, err
    accuracy = json.loads(out)
    (model / "rm_accuracy.json").unlink()  # evaluate wrote it; compare the model's own files

    ready = tmp_path / "ready"
    kill_when_ready(CHILD, [*train_argv(bench, tiny_lm, model, seed=1)], ready)

    assert files(model) == before  # the old model, byte for byte (the old code: new weights)
    code, out, err = run(evaluate, capsys)
    assert code == 0, err
    assert json.loads(out)["per_user"] == accuracy["per_user"]
    stale = list(tmp_path.glob(".model.tmp-*"))  # the killed build's half, beside: never loads
    assert len(stale) == 1 and (stale[0] / reward_io.WEIGHTS_FILE).is_file()
    with pytest.raises(DataError, match=r"missing config\.json"):
        load(stale[0])
    code, _, err = run(train_argv(bench, tiny_lm, model, seed=1), capsys)  # a rerun cleans it
    assert code == 0, err
    assert not list(tmp_path.glob(".model.tmp-*")) and files(model) != before


def test_a_save_cut_between_weights_and_config_is_refused(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained[1], model)
    rm = load(model)
    config_before = (model / reward_io.CONFIG_FILE).read_bytes()
    trained = set(reward_io.trained_state(rm))
    for name, tensor in rm.state_dict().items():  # another model of the same shape
        if name in trained and tensor.is_floating_point():
            tensor.add_(1.0)

    def cut(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies here: weights renamed, config not

    monkeypatch.setattr(reward_io, "write_json", cut)
    with pytest.raises(KeyboardInterrupt):
        rm.save(str(model))
    monkeypatch.undo()
    assert (model / reward_io.CONFIG_FILE).read_bytes() == config_before
    with pytest.raises(DataError, match=r"weights\.safetensors: sha256 differs"):
        load(model)
    (model / reward_io.WEIGHTS_FILE).unlink()
    with pytest.raises(DataError, match=r"missing weights\.safetensors"):
        load(model)
