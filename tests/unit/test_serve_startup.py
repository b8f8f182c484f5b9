"""``persalign serve`` checks every option, file, folder and the port before any model loads.

``build_service`` is replaced by a stub that records it was reached: a bad option must exit 2
with one line on stderr before the stub runs; a good one reaches it (and the port is bound).
"""

from __future__ import annotations

import socket

import pytest

import persalign.cli.serve as serve_cli
from persalign.cli import main
from persalign.decoding.icl import IclDecoder
from persalign.decoding.zero_shot import ZeroShotDecoder
from persalign.serve.service import servable_decoders
from persalign.serve.startup import api_key_from, bind_socket, openness


class Loaded(Exception):
    """Raised by the stub build_service: the models would load now."""


@pytest.fixture
def stub(monkeypatch, tmp_path, tiny_lm):
    """(argv start, calls): a policy folder, a reward folder that looks whole, a stub loader."""
    calls: list[dict] = []

    def build_service(*args, **kwargs):
        calls.append(kwargs)
        raise Loaded

    monkeypatch.setattr(serve_cli, "build_service", build_service)
    monkeypatch.delenv("PERSALIGN_API_KEY", raising=False)
    reward = tmp_path / "rm"
    reward.mkdir()
    (reward / "config.json").write_text("{}")
    (reward / "weights.safetensors").write_bytes(b"")
    argv = ["serve", "--policy", tiny_lm, "--reward", str(reward), "--device", "cpu"]
    return argv, calls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_an_empty_or_blank_api_key_is_refused(stub, capsys, key):
    argv, calls = stub
    assert "--api-key" in refused([*argv, "--api-key", key, "--port", str(free_port())], capsys)
    assert not calls


@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_api_key_variable_is_refused(stub, capsys, monkeypatch, key):
    argv, calls = stub
    monkeypatch.setenv("PERSALIGN_API_KEY", key)
    assert "PERSALIGN_API_KEY" in refused([*argv, "--port", str(free_port())], capsys)
    assert not calls


def test_no_key_option_at_all_serves_open_and_says_so(stub, capsys):
    argv, calls = stub
    port = free_port()
    with pytest.raises(Loaded):
        main([*argv, "--port", str(port), "--host", "0.0.0.0", "--dtype", "bfloat16"])
    assert calls[0]["dtype"] == "bfloat16"  # both models load in it
    said = " ".join(capsys.readouterr().err.split())  # the log, unwrapped
    assert "server is OPEN" in said and f"0.0.0.0:{port}" in said
    assert "every network interface" in said


def test_key_rules():
    assert api_key_from("--api-key", None, "PERSALIGN_NO_SUCH_VAR") is None
    assert api_key_from("--api-key", "k-1", "PERSALIGN_NO_SUCH_VAR") == "k-1"
    with pytest.raises(Exception, match="printable"):
        api_key_from("--api-key", "a b", "PERSALIGN_NO_SUCH_VAR")
    assert "this machine only" in openness("127.0.0.1", 8000, None)
    assert "OPEN" not in openness("127.0.0.1", 8000, "k")


BAD = [
    (["--port", "70000"], "--port"),
    (["--port", "0"], "--port"),
    (["--host", "no-such-host.invalid"], "--host"),
    (["--policy", "/no/such/folder"], "--policy"),
    (["--max-batch", "0"], "max_batch"),
    (["--max-queue", "-1"], "max_queue"),
    (["--queue-timeout", "0"], "queue_timeout"),
    (["--decoder", "icl"], "--decoder"),
    (["--decoder", "nope"], "--decoder"),
    (["--lam", "200"], "--lam"),
    (["--default-max-tokens", "600"], "--default-max-tokens"),
    (["--shots", "-1"], "--shots"),
    (["--retrieval", "tfidf"], "--retrieval"),
    (["--device", "tpu"], "device"),
    (["--dtype", "float8"], "dtype"),
    (["--unknown-user", "maybe"], "unknown_user"),
]


@pytest.mark.parametrize(("extra", "named"), BAD)
def test_bad_options_fail_before_any_model_loads(stub, capsys, extra, named):
    argv, calls = stub
    assert named in refused([*argv, "--port", str(free_port()), *extra], capsys)
    assert not calls


def test_bad_files_and_folders_fail_before_any_model_loads(stub, capsys, tmp_path):
    argv, calls = stub
    port = ["--port", str(free_port())]
    (tmp_path / "rm" / "weights.safetensors").unlink()
    assert "weights.safetensors" in refused([*argv, *port], capsys)
    (tmp_path / "rm" / "weights.safetensors").write_bytes(b"")
    (tmp_path / "afile").write_text("x")
    assert "--state" in refused([*argv, *port, "--state-dir", str(tmp_path / "afile")], capsys)
    assert "--reward" in refused([*argv[:3], "--reward", str(tmp_path / "none"), *port], capsys)
    assert not calls


def test_a_port_in_use_is_one_line_and_exit_2_before_loading(stub, capsys):
    argv, calls = stub
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        message = refused([*argv, "--port", str(port)], capsys)
    assert "cannot bind" in message and str(port) in message
    assert not calls


def test_the_port_is_bound_while_the_models_load(stub, monkeypatch):
    argv, _ = stub
    port = free_port()

    def build_service(*args, **kwargs):
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", port))  # nobody can take it while the models load
        raise Loaded

    monkeypatch.setattr(serve_cli, "build_service", build_service)
    with pytest.raises(Loaded):
        main([*argv, "--port", str(port)])
    bind_socket("127.0.0.1", port).close()  # released after a failed start


def test_servable_decoders_come_from_the_decoder_classes(monkeypatch):
    assert set(servable_decoders(with_reward=True)) == {"args", "zero-shot", "icl-rag"}
    assert set(servable_decoders(with_reward=False)) == {"zero-shot", "icl-rag"}
    monkeypatch.setattr(ZeroShotDecoder, "servable", False)
    monkeypatch.setattr(IclDecoder, "servable", True)
    assert set(servable_decoders(with_reward=False)) == {"icl", "icl-rag"}
