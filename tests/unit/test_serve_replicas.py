"""Replicas sharing users through a real PostgreSQL (started by the test with pgserver): two
``persalign serve`` processes, the admin key, DELETE, Idempotency-Key; /health as liveness.

As root (CI), pgserver runs PostgreSQL as its own ``pgserver`` system user; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import time
import types

import httpx
import pytest

from persalign.serve.app import create_app
from persalign.serve.prometheus import ServeMetrics
from persalign.serve.schemas import ServeLimits
from tests.unit.test_serve_server import PREFS, Server, completion, error_of, models  # noqa: F401
from tests.unit.test_serve_users import start_postgres

KEY, ADMIN = "test-key-123", "admin-key-456"


@pytest.fixture(scope="module")
def replicas(models, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    policy, reward, state = models
    server, fresh = start_postgres(tmp_path_factory.mktemp("pg-replicas"))
    url = fresh()
    extra = ["--store", url, "--admin-key", ADMIN]
    a = Server(policy, reward, state.parent / "state-a", key=KEY, extra=extra)
    try:
        b = Server(policy, reward, state.parent / "state-b", key=KEY, extra=extra)
    except BaseException:
        a.kill()
        raise
    yield a, b
    a.kill()
    b.kill()
    server.cleanup()


def admin(headers=None) -> dict:
    return {"Authorization": f"Bearer {ADMIN}", **(headers or {})}


def test_user_routes_need_the_admin_key(replicas):
    a, _ = replicas
    for method, path in [
        ("POST", "/v1/users/ann/preferences"),
        ("GET", "/v1/users/ann"),
        ("DELETE", "/v1/users/ann"),
    ]:
        with_api_key = a.client.request(method, path, json=PREFS)
        assert with_api_key.status_code == 403 and "admin key" in error_of(with_api_key), path
        bare = httpx.request(method, a.url + path, json=PREFS, timeout=30)
        assert bare.status_code == 401, path
    assert a.client.post("/v1/completions", json=completion(user="u1")).status_code == 200
    # the admin key opens every route; probes need none
    assert a.client.get("/v1/models", headers=admin()).status_code == 200
    assert httpx.get(a.url + "/health", timeout=30).status_code == 200


def test_a_user_onboarded_on_a_is_served_personalized_by_b_within_a_second(replicas):
    a, b = replicas
    before = b.client.post("/v1/completions", json=completion(user="shared-1")).json()
    assert before["persalign"]["user_status"] == "default"
    headers = admin({"Idempotency-Key": "set-1"})
    first = a.client.post("/v1/users/shared-1/preferences", json=PREFS, headers=headers)
    acknowledged = time.monotonic()
    assert first.status_code == 200, first.text
    statuses = []  # B's answers until it serves the user's own vector, or one second is up
    while not statuses or (statuses[-1] != "own" and time.monotonic() - acknowledged < 1.0):
        reply = b.client.post("/v1/completions", json=completion(user="shared-1", max_tokens=2))
        statuses.append(reply.json()["persalign"]["user_status"])
    assert time.monotonic() - acknowledged < 1.0, statuses
    assert statuses[-1] == "own", statuses
    retried = a.client.post("/v1/users/shared-1/preferences", json=PREFS, headers=headers)
    assert retried.json()["preference_sets"] == 1  # the retry counted once
    on_b = b.client.get("/v1/users/shared-1", headers=admin()).json()
    assert on_b["preference_sets"] == 1 and on_b["vector"] == first.json()["vector"]


def test_a_delete_on_one_replica_is_seen_by_the_other(replicas):
    a, b = replicas
    done = b.client.post("/v1/users/gone-1/preferences", json=PREFS, headers=admin())
    assert done.status_code == 200
    assert a.client.get("/v1/users/gone-1", headers=admin()).json()["status"] == "onboarded"
    deleted = a.client.delete("/v1/users/gone-1", headers=admin())
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    time.sleep(0.3)  # past B's sync interval for this user
    reply = b.client.post("/v1/completions", json=completion(user="gone-1", max_tokens=2))
    assert reply.json()["persalign"]["user_status"] == "default"
    assert b.client.get("/v1/users/gone-1", headers=admin()).json()["status"] == "unknown"
    missing = b.client.delete("/v1/users/gone-1", headers=admin())
    assert missing.status_code == 404 and error_of(missing)


def test_health_is_503_when_the_decoding_loop_stalls():
    """Liveness: the loop passes at least every 0.5 s when idle; a stuck step fails it."""
    state = {"beat_age": 0.0}
    scheduler = types.SimpleNamespace(live=0, queued=0, running=True)
    scheduler.stalled = lambda limit: state["beat_age"] if state["beat_age"] > limit else None
    service = types.SimpleNamespace(
        limits=ServeLimits(health_timeout=5), metrics=ServeMetrics(), scheduler=scheduler
    )
    app = create_app(service, api_key="k")

    async def probe():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await client.get("/health")

    assert asyncio.run(probe()).status_code == 200
    state["beat_age"] = 12.0
    stalled = asyncio.run(probe())
    assert stalled.status_code == 503 and "12 s" in error_of(stalled)
    state["beat_age"], scheduler.running = 0.0, False
    assert asyncio.run(probe()).status_code == 503
