"""What ``persalign serve`` checks before any model loads, and the socket it binds first.

    key = api_key_from("--api-key", flag_value, "PERSALIGN_API_KEY")   # None: no key option given
    check_files(policy="bundled:x", reward=Path("runs/lore"), state=Path("runs/lore/serving"))
    check_store("postgresql://user@db/persalign")   # reachable, before the models load
    sock = bind_socket("127.0.0.1", 8000)          # ConfigError (exit 2) when it cannot bind
    log.warning(openness("0.0.0.0", 8000, key))    # who can reach an open server

Every check raises :class:`~persalign.errors.ConfigError` (one line naming the option, exit 2),
so a bad port, host, key, folder or limit never costs a model load. The socket is bound (not
yet listening: connections are refused until the server is ready) before the models load and
handed to uvicorn, so "address already in use" is known at once and no other process can take
the port while the models load.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from persalign.errors import ConfigError
from persalign.models.loading import resolve_model_path
from persalign.serve.store import engine_for

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
ALL_HOSTS = {"0.0.0.0", "::", ""}


def api_key_from(option: str, given: str | None, env: str) -> str | None:
    """The key from ``option`` or, when the flag is absent, the environment variable ``env``.

    None only when neither is set at all; an empty or blank value of either (an unset shell
    variable expanded, ``--api-key ''``) is a ConfigError, never "no key"."""
    source, value = option, given
    if value is None and env in os.environ:
        source, value = f"${env}", os.environ[env]
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(
            f"{source} is empty or blank: give a key, or leave the option out to serve without one"
        )
    if value != value.strip() or any(ord(c) < 33 or ord(c) > 126 for c in value):
        raise ConfigError(f"{source}: a key is printable ASCII without spaces")
    return value


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is in 1-65535")


def check_host(host: str, port: int) -> list[tuple]:
    """The addresses ``host`` resolves to (ConfigError when it resolves to none)."""
    try:
        return socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host!r}: not an address of this machine ({exc})") from None


def check_files(policy: str, reward: Path | None, state: Path | None) -> None:
    """The policy spec resolves, the reward folder is whole, the state folder is writable."""
    try:
        resolve_model_path(policy, kind="causal-lm")
    except ConfigError as exc:
        raise ConfigError(f"--policy: {exc}") from None
    if reward is not None:
        if not reward.is_dir():
            raise ConfigError(f"--reward {reward}: not a reward-model folder")
        for name in ("config.json", "weights.safetensors"):
            if not (reward / name).is_file():
                raise ConfigError(f"--reward {reward}: missing {name} (not a whole model folder)")
    if state is not None:
        if state.exists() and not state.is_dir():
            raise ConfigError(f"--state {state}: a file, not a folder")
        probe = state
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(f"--state {state}: cannot write there ({probe})")


def check_store(url: str) -> None:
    """``--store`` names a database SQLAlchemy reaches (postgresql:// or sqlite://)."""
    if not url.startswith(("postgresql", "postgres://", "sqlite")):
        raise ConfigError(f"--store {url.split('@')[-1]}: use postgresql://... or sqlite:///...")
    try:
        engine = engine_for(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        where = url.split("@")[-1]  # never log a password
        raise ConfigError(f"--store {where}: cannot connect ({str(exc).splitlines()[0]})") from None


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet); ConfigError when it cannot bind."""
    check_port(port)
    family, kind, proto, _, address = check_host(host, port)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot bind ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def openness(host: str, port: int, key: str | None) -> str:
    """The start-up line that says who can use the server."""
    where = (
        "this machine only"
        if host in LOCAL_HOSTS
        else "every network interface of this machine"
        if host in ALL_HOSTS
        else f"whoever can reach {host}"
    )
    if key is None:
        return (
            f"the server is OPEN (no --api-key or PERSALIGN_API_KEY): anyone who reaches "
            f"{host}:{port} ({where}) can use it"
        )
    return f"requests need the API key; listening on {host}:{port} ({where})"
