"""The timeline launch beyond the happy path: secrets never logged, several instances sharing Redis, a
confidential client (private_key_jwt), the pending-launch store, and CDS_SMART_CLIENTS checked at start-up."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest
from fastapi.testclient import TestClient

from cds_service.app import create_app
from cds_service.config import ConfigurationError, Settings
from cds_service.smart.clients import SmartConfigError, parse_smart_clients
from cds_service.smart.pending import MemoryPendingLaunches, RedisPendingLaunches
from cds_service.smart.session import LaunchSecrets, seal, store_key, unseal
from tests.smart_ehr import SmartEHR
from tests.smart_support import EHR_HOST, free_port, loopback_alias_works, serving
from tests.test_smart_launch import CALLBACK, LONG, SERVICE, authorize, run_launch, smart_settings, start

needs_alias = pytest.mark.skipif(not loopback_alias_works(), reason=f"cannot bind {EHR_HOST}")
REDIS_URL = os.environ.get("CDS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def ehr():
    port = free_port(EHR_HOST)
    ehr = SmartEHR(f"http://{EHR_HOST}:{port}", clients={"ns-timeline": {"redirect_uris": [CALLBACK]}})
    with serving(ehr.app(), EHR_HOST, port):
        yield ehr


# ------------------------------------------------------------------------------------------------ logs
@needs_alias
def test_tokens_codes_states_launch_ids_and_patients_never_reach_the_logs(tmp_path, ehr, capfd):
    settings = smart_settings(tmp_path, ehr, log_level="DEBUG")
    cookies: list[str] = []
    with TestClient(create_app(settings), base_url=SERVICE, follow_redirects=False) as c:
        ok = run_launch(c, ehr)
        assert ok.status_code == 200
        first = start(c, ehr)
        cookies.append(first.headers["set-cookie"].split(";")[0].split("=", 1)[1])
        back = authorize(first.headers["location"])
        c.cookies = httpx.Cookies()
        assert c.get(back).status_code == 400  # another browser
        assert c.get(back).status_code == 400  # replayed
        assert c.get("/smart/callback", params={"state": "forged-state-value-1234567890", "code": "c0de"}).status_code \
            == 400
        ehr.pkce_methods = ["plain"]
        try:
            assert start(c, ehr).status_code == 502
        finally:
            ehr.pkce_methods = ["S256"]
        assert start(c, ehr, iss="https://evil.example/fhir").status_code == 403
    out, err = capfd.readouterr()
    logs = out + err
    assert "timeline_shown" in logs and "smart_launch_refused" in logs  # the capture holds the service's lines
    secrets = [*ehr.tokens, *ehr.used_codes, *ehr.launches, *cookies,
               *(r["state"] for r in ehr.authorize_requests), *(r["code_challenge"] for r in ehr.authorize_requests),
               *(r.get("code_verifier", "") for r in ehr.token_requests), "forged-state-value-1234567890"]
    secrets = [s for s in secrets if s]
    assert len(secrets) > 10
    for secret in secrets:
        assert secret not in logs
    for patient in (LONG, "pt-101", "Lindqvist", "1958-11-19"):
        assert patient not in logs


# ------------------------------------------------------------------------------------------------ Redis
def _redis_or_skip():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"no Redis at {REDIS_URL} ({type(exc).__name__})")


@pytest.mark.redis
@needs_alias
def test_two_instances_sharing_redis_finish_each_others_launches_once(tmp_path, ehr):
    _redis_or_skip()
    a = create_app(smart_settings(tmp_path / "a", ehr, redis_url=REDIS_URL))
    b = create_app(smart_settings(tmp_path / "b", ehr, redis_url=REDIS_URL))
    with TestClient(a, base_url=SERVICE, follow_redirects=False) as one, \
            TestClient(b, base_url=SERVICE, follow_redirects=False) as two:
        first = start(one, ehr)
        back = authorize(first.headers["location"])
        two.cookies = one.cookies  # the same browser, its next request answered by the other instance
        assert two.get(back).status_code == 200
        assert one.get(back).status_code == 400  # taken once, for every instance


@pytest.mark.redis
async def test_redis_store_is_single_use_and_expires():
    _redis_or_skip()
    from redis.asyncio import Redis

    store = RedisPendingLaunches(Redis.from_url(REDIS_URL), owns_client=True)
    key = store_key(LaunchSecrets.new().state)
    try:
        await store.put(key, b"sealed", 1)
        assert await store.take(key) == b"sealed"
        assert await store.take(key) is None
        await store.put(key, b"sealed", 1)
        await asyncio.sleep(2.2)
        assert await store.take(key) is None
    finally:
        await store.close()


async def test_a_redis_that_is_down_fails_the_launch_clearly():
    from redis.asyncio import Redis

    from cds_service.smart.pending import PendingUnavailable

    port = free_port("127.0.0.1")  # nothing listens there
    store = RedisPendingLaunches(Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5),
                                 owns_client=True)
    with pytest.raises(PendingUnavailable):
        await store.put("k", b"v", 10)
    await store.close()


# ------------------------------------------------------------------------------------------------ memory store
async def test_memory_store_is_single_use_expires_and_stays_bounded():
    now = [1000.0]
    store = MemoryPendingLaunches(max_entries=3, clock=lambda: now[0])
    await store.put("a", b"1", 60)
    assert await store.take("a") == b"1" and await store.take("a") is None
    await store.put("b", b"2", 60)
    now[0] += 61
    assert await store.take("b") is None  # expired
    for key in "cdefg":
        await store.put(key, b"x", 60)
    assert len(store) == 3 and await store.take("c") is None and await store.take("g") == b"x"


def test_sealed_launch_opens_only_with_its_browser_secret():
    s = LaunchSecrets.new()
    key = store_key(s.state)
    blob = seal(s.browser_secret, key, {"verifier": s.verifier})
    assert s.verifier.encode() not in blob and s.state.encode() not in blob
    assert unseal(s.browser_secret, key, blob) == {"verifier": s.verifier}
    assert unseal(LaunchSecrets.new().browser_secret, key, blob) is None
    assert unseal(s.browser_secret, store_key("other"), blob) is None  # bound to its own state
    assert 43 <= len(s.verifier) <= 128


# ------------------------------------------------------------------------------------------------ confidential client
@needs_alias
def test_a_confidential_client_signs_its_token_request(tmp_path, ehr):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "smart.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    clients = {ehr.fhir: {"client_id": "ns-timeline-conf", "private_key_file": str(pem), "kid": "k1"}}
    settings = smart_settings(tmp_path, ehr, smart_clients=clients)
    with TestClient(create_app(settings), base_url=SERVICE, follow_redirects=False) as c:
        jwks = c.get("/smart/jwks.json").json()
        assert jwks["keys"][0]["kid"] == "k1" and "d" not in jwks["keys"][0]  # public part only
        ehr.clients["ns-timeline-conf"] = {"redirect_uris": [CALLBACK], "jwks": jwks}
        page = run_launch(c, ehr)
    assert page.status_code == 200
    sent = ehr.token_requests[-1]
    assert "client_assertion" in sent and "client_id" not in sent
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# ------------------------------------------------------------------------------------------------ configuration
TRUSTED = {"https://ehr.example.org/api/FHIR/R4": {"jwks_url": "https://ehr.example.org/jwks",
                                                   "fhir_servers": ["https://ehr.example.org/api/FHIR/R4"]}}


def test_with_authentication_on_only_trusted_issuers_and_their_fhir_servers():
    clients = parse_smart_clients({"https://ehr.example.org/api/FHIR/R4": {"client_id": "abc"}}, TRUSTED)
    client = clients["https://ehr.example.org/api/FHIR/R4"]
    assert client.match_length("https://ehr.example.org/api/FHIR/R4") and \
        not client.match_length("https://ehr.example.org/api/FHIR/R5")
    with pytest.raises(SmartConfigError, match="not a trusted issuer"):
        parse_smart_clients({"https://other.example.org/fhir": {"client_id": "abc"}}, TRUSTED)
    with pytest.raises(SmartConfigError, match="within the trusted issuer"):
        parse_smart_clients({"https://ehr.example.org/api/FHIR/R4": {
            "client_id": "abc", "fhir_servers": ["https://elsewhere.example.org/fhir"]}}, TRUSTED)


@pytest.mark.parametrize("value, says", [
    ({"client_id": ""}, "client_id"),
    ({"client_id": "a", "frame_ancestors": ["https://ehr.example.org/path"]}, "not an origin"),
    ({"client_id": "a", "frame_ancestors": "https://ehr.example.org"}, "a list of origins"),
    ({"client_id": "a", "scope": "patient/*.rs"}, "including 'launch'"),
    ({"client_id": "a", "private_key_file": "/nonexistent.pem", "kid": "k"}, "PEM private key"),
    ({"client_id": "a", "fhir_server": ["x"]}, "unknown key"),
])
def test_client_mistakes_name_the_key(value, says):
    with pytest.raises(SmartConfigError, match=says):
        parse_smart_clients({"https://ehr.example.org/fhir": value})


def test_a_mistake_stops_start_up_with_one_line(tmp_path, monkeypatch):
    from cds_service.config import load_configuration

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDS_TRUSTED_ISSUERS", json.dumps(TRUSTED))
    monkeypatch.setenv("CDS_SMART_CLIENTS", json.dumps({"https://other.example.org/fhir": {"client_id": "a"}}))
    with pytest.raises(ConfigurationError) as info:
        load_configuration()
    assert any("CDS_SMART_CLIENTS['https://other.example.org/fhir']" in line and "trusted issuer" in line
               for line in info.value.lines)
    monkeypatch.setenv("CDS_SMART_CLIENTS", "{not json")
    with pytest.raises(ConfigurationError) as info:
        load_configuration()
    assert any(line.startswith("Configuration error in CDS_SMART_CLIENTS") for line in info.value.lines)


def test_settings_accept_a_development_client():
    s = Settings(smart_clients={"http://127.0.0.2:9000/fhir": {"client_id": "ns-timeline"}}, trusted_issuers={})
    assert s.smart_clients
