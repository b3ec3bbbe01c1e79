"""JWT authentication of CDS clients (cds_service.auth): every rule accepted and refused with real signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import orjson
import pytest
import respx
from conftest import free_port
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cds_service.app import create_app
from cds_service.auth import FhirBase, IssuerConfigError, parse_trusted_issuers
from cds_service.auth.jwks import JwksCache, KeyRefused, build_key
from cds_service.config import Settings
from tests.auth_support import (
    BASE,
    FHIR,
    ISS,
    JWKS_URL,
    OTHER_JWKS_URL,
    SELECT_ID,
    SELECT_URL,
    Keys,
    hook_body,
    trusted,
)

DISCOVERY_URL = f"{BASE}/cds-services"
FEEDBACK_URL = f"{SELECT_URL}/feedback"
FEEDBACK = {"feedback": [{"card": "5b4e0f4c-3a5a-4d5e-8b2a-1f0c2d3e4f50", "outcome": "accepted",
                          "outcomeTimestamp": "2026-01-01T10:00:00Z",
                          "acceptedSuggestions": [{"id": "0b7d4b2e-1111-4c4c-9d9d-222233334444"}]}]}


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture
def jwks_mock(keys):
    with respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        mock.get(OTHER_JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": [keys.jwk("rsa")]}))
        yield mock


SINGLE = {ISS: {"jwks_url": JWKS_URL, "fhir_servers": [FHIR]}}  # one JWKS URL: every lookup goes there


def make_client(tmp_path, **overrides) -> TestClient:
    values = dict(data_dir=tmp_path / "data", trusted_issuers=trusted(), redis_url=None, database_url=None,
                  log_json=True)
    values.update(overrides)
    return TestClient(create_app(Settings(**values)))


@pytest.fixture
def client(tmp_path, jwks_mock):
    with make_client(tmp_path) as c:
        yield c


def call(client, token=None, body=None, url=f"/cds-services/{SELECT_ID}"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(url, json=body or hook_body(), headers=headers)


# --------------------------------------------------------------------------- accepted tokens
@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_real_es384_and_rs384_tokens_are_accepted(client, keys, alg):
    resp = call(client, keys.token(alg=alg))
    assert resp.status_code == 200, resp.text
    assert "cards" in resp.json()


def test_sandbox_shaped_token_with_allowed_jku_and_no_sub_is_accepted(client, keys, jwks_mock):
    token = keys.token(jku=JWKS_URL)  # sandbox: ES384, typ JWT, kid, jku; claims without sub or tenant
    assert call(client, token).status_code == 200


def test_jku_selects_the_jwks_it_names(client, keys, jwks_mock):
    assert call(client, keys.token(alg="RS384", jku=OTHER_JWKS_URL)).status_code == 200
    assert jwks_mock.routes[1].call_count == 1
    assert jwks_mock.routes[0].call_count == 0  # the other allowed JWKS was not consulted


def test_aud_may_be_an_array_that_contains_the_endpoint(client, keys):
    assert call(client, keys.token(aud=["https://other.example/x", SELECT_URL])).status_code == 200


def test_aud_comparison_ignores_host_case_and_default_port(client, keys):
    aud = SELECT_URL.replace("http://testserver", "HTTP://TestServer:80")
    assert call(client, keys.token(aud=aud)).status_code == 200


def test_iat_half_a_second_ahead_is_accepted_thanks_to_leeway(client, keys):
    # The sandbox rounds iat with Math.round, so it can be up to 0.5 s in the future.
    now = time.time()
    assert call(client, keys.token(now=now, iat=round(now + 0.5), exp=round(now + 300.5))).status_code == 200


def test_without_leeway_a_future_iat_is_refused(tmp_path, jwks_mock, keys):
    with make_client(tmp_path, jwt_leeway_seconds=0) as c:
        now = time.time()
        assert call(c, keys.token(now=now, iat=int(now) + 2)).status_code == 401


def test_expired_within_leeway_is_accepted(client, keys):
    now = time.time()
    assert call(client, keys.token(iat=int(now) - 310, exp=int(now) - 10)).status_code == 200


def test_nbf_in_the_past_is_accepted(client, keys):
    now = int(time.time())
    assert call(client, keys.token(nbf=now - 300)).status_code == 200  # Epic: nbf about 5 min before iat


# --------------------------------------------------------------------------- refused tokens
def _hmac_token(header: dict, payload: dict, secret: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha384).digest()
    return f"{signing_input}.{b64(sig)}"


def _claims(aud=SELECT_URL, **extra):
    now = int(time.time())
    return {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": f"j-{time.time_ns()}", **extra}


def _now() -> int:
    return int(time.time())


# name -> (what the logged reason says, how to make the token)
REFUSALS = {
    "wrong aud": ("aud does not name", lambda k: k.token(aud=f"{BASE}/cds-services/another-service")),
    "aud array without us": ("aud does not name", lambda k: k.token(aud=["https://a.example/x", "https://b.example"])),
    "aud for discovery": ("aud does not name", lambda k: k.token(aud=DISCOVERY_URL)),
    "expired": ("expired", lambda k: k.token(iat=_now() - 400, exp=_now() - 60)),
    "iat beyond leeway": ("iat is in the future", lambda k: k.token(iat=_now() + 120, exp=_now() + 400)),
    "nbf in the future": ("nbf", lambda k: k.token(nbf=_now() + 120)),
    "missing kid": ("kid is missing", lambda k: k.token(kid=None)),
    "missing jti": ("missing claim(s) jti", lambda k: k.token(drop=("jti",))),
    "missing exp": ("missing claim(s) exp", lambda k: k.token(drop=("exp",))),
    "missing iat": ("missing claim(s) iat", lambda k: k.token(drop=("iat",))),
    "missing aud": ("missing claim(s) aud", lambda k: k.token(drop=("aud",))),
    "wrong issuer": ("not trusted", lambda k: k.token(iss="https://evil.example/fhir")),
    "typ not JWT": ("is not JWT", lambda k: k.token(headers={"typ": "at+jwt"})),
    "crit header": ("crit", lambda k: k.token(headers={"crit": ["exp"], "exp": 1})),
    "RS256": ("'RS256' is not accepted", lambda k: k.token(alg="RS256", kid=k.rsa_kid)),
    "PS384": ("'PS384' is not accepted", lambda k: k.token(alg="PS384", kid=k.rsa_kid)),
    "ES384 header on the RSA key": ("needs an EC P-384 key", lambda k: k.token(alg="ES384", kid=k.rsa_kid)),
    "signed by a stranger's key with our kid": ("signature does not verify", lambda k: Keys().token(kid=k.ec_kid)),
    "lifetime of a day": ("lifetime", lambda k: k.token(exp=_now() + 86400)),
    "alg none": ("'none' is not accepted", lambda k: jwt_none(_claims(), kid=k.ec_kid)),
    # Algorithm confusion: the public key used as an HMAC secret must never verify.
    "HS384 with the RSA public key PEM as secret": ("'HS384' is not accepted", lambda k: _hmac_token(
        {"alg": "HS384", "typ": "JWT", "kid": k.rsa_kid}, _claims(), k.public_pem("rsa"))),
    "HS384 with the EC public key PEM as secret": ("'HS384' is not accepted", lambda k: _hmac_token(
        {"alg": "HS384", "typ": "JWT", "kid": k.ec_kid}, _claims(), k.public_pem("ec"))),
    "RS384 header, HMAC signature with the PEM": ("signature does not verify", lambda k: _hmac_token(
        {"alg": "RS384", "typ": "JWT", "kid": k.rsa_kid}, _claims(), k.public_pem("rsa"))),
    "jti not a string": ("jti must be", lambda k: k.token(jti=12345)),
    "exp not a number": ("must be numbers", lambda k: k.token(exp="tomorrow")),
    "garbage": ("malformed", lambda k: "not.a.jwt"),
    # The token is decoded once, strictly: what is verified is exactly what is read.
    "payload outside the base64url alphabet": ("malformed", lambda k: _respell(
        k.token(), 1, lambda s: s[:4] + "!" + s[4:])),
    "payload in standard base64 (+ and /)": ("malformed", lambda k: _respell(
        k.token(), 1, lambda s: s.replace("-", "+").replace("_", "/") if ("-" in s or "_" in s) else s + "+")),
    "signature with non-zero unused bits": ("malformed", lambda k: _respell(k.token(), 2, _flip_last_bits)),
    "ES384 signature cut short": ("signature does not verify", lambda k: _respell(k.token(), 2, lambda s: s[:-8])),
    "exp a boolean": ("must be numbers", lambda k: k.token(exp=True)),
    "unencoded payload (b64 false)": ("malformed", lambda k: k.token(headers={"b64": False})),
}


def _respell(token: str, index: int, change) -> str:
    parts = token.split(".")
    parts[index] = change(parts[index])
    return ".".join(parts)


def _flip_last_bits(segment: str) -> str:
    """The same bytes spelled non-canonically: an ES384 signature (96 bytes) is 128 characters, so append
    two bytes' worth whose unused low bits are set."""
    return segment + "AB"


def jwt_none(payload: dict, kid: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(orjson.dumps({'alg': 'none', 'typ': 'JWT', 'kid': kid}))}.{b64(orjson.dumps(payload))}."


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_tokens_get_a_bare_401(client, keys, capsys, case):
    reason, make = REFUSALS[case]
    capsys.readouterr()
    resp = call(client, make(keys))
    assert resp.status_code == 401, case
    logged = [json.loads(line)["reason"] for line in capsys.readouterr().err.splitlines() if '"auth_refused"' in line]
    assert len(logged) == 1 and reason in logged[0], logged  # refused for the reason under test
    assert resp.headers["www-authenticate"].startswith("Bearer")
    body = resp.json()
    # The reason is logged, never sent: the body is the same generic OperationOutcome for every case.
    assert body == {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "login", "diagnostics": "Authentication required."}]}


def test_refusal_reason_is_logged(client, keys, capfd):
    call(client, keys.token(alg="RS256", kid=keys.rsa_kid))
    err = capfd.readouterr().err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    refused = [e for e in events if e.get("event") == "auth_refused"]
    assert refused and "RS256" in refused[-1]["reason"]


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "Bearer " + "a" * 20000])
def test_missing_or_malformed_authorization_is_401(client, header):
    headers = {"Authorization": header} if header else {}
    resp = client.post(f"/cds-services/{SELECT_ID}", json=hook_body(), headers=headers)
    assert resp.status_code == 401


def test_replayed_jti_is_refused(client, keys):
    token = keys.token()
    assert call(client, token).status_code == 200
    assert call(client, token).status_code == 401
    # A new token (new jti) is fine.
    assert call(client, keys.token()).status_code == 200


def test_a_refused_token_does_not_burn_its_jti(client, keys):
    jti = "reused-after-refusal"
    assert call(client, keys.token(aud=DISCOVERY_URL, jti=jti)).status_code == 401
    assert call(client, keys.token(jti=jti)).status_code == 200


def test_same_jti_from_another_issuer_is_not_a_replay(tmp_path, keys):
    other = "https://other-ehr.example.org/fhir"
    issuers = {**trusted(), other: {"jwks": keys.jwks(), "fhir_servers": []}}
    with respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
        with make_client(tmp_path, trusted_issuers=issuers) as c:
            assert call(c, keys.token(jti="shared")).status_code == 200
            assert call(c, keys.token(jti="shared", iss=other)).status_code == 200


def test_foreign_jku_is_refused_and_never_fetched(client, keys):
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as mock:
        evil = mock.get("https://evil.example/jwks.json").mock(return_value=httpx.Response(200, json=keys.jwks()))
        resp = call(client, keys.token(jku="https://evil.example/jwks.json"))
    assert resp.status_code == 401
    assert evil.call_count == 0


def test_unknown_issuer_causes_no_jwks_fetch(client, keys, jwks_mock):
    assert call(client, keys.token(iss="https://evil.example")).status_code == 401
    assert jwks_mock.calls.call_count == 0


def test_jwks_is_cached_between_requests(client, keys, jwks_mock):
    for _ in range(3):
        assert call(client, keys.token()).status_code == 200
    assert jwks_mock.routes[0].call_count == 1


def test_unknown_kid_refetches_the_jwks_once_then_rate_limits(tmp_path, keys):
    new = Keys()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(JWKS_URL)
        route.side_effect = [httpx.Response(200, json=keys.jwks()),
                             httpx.Response(200, json={"keys": [keys.jwk("ec"), new.jwk("ec")]}),
                             httpx.Response(200, json=keys.jwks())]
        with make_client(tmp_path, trusted_issuers=SINGLE) as c:
            clock = [0.0]
            c.app.state.authenticator.jwks._clock = lambda: clock[0]
            assert call(c, keys.token()).status_code == 200
            assert route.call_count == 1
            # Key rotation, a minute later: a kid we have not seen makes us fetch the JWKS again.
            clock[0] += 60
            assert call(c, new.token()).status_code == 200
            assert route.call_count == 2
            # Random kids do not make us fetch again within the 30 s rate-limit window...
            clock[0] += 10
            for i in range(5):
                assert call(c, keys.token(kid=f"random-{i}")).status_code == 401
            assert route.call_count == 2
            # ...and only once per window after it.
            clock[0] += 30
            for i in range(5):
                assert call(c, keys.token(kid=f"random-again-{i}")).status_code == 401
            assert route.call_count == 3


async def test_jwks_refetch_is_rate_limited_per_url_and_resumes_after_the_window():
    keys, now = Keys(), [1000.0]
    issuer = parse_trusted_issuers(SINGLE)[ISS]
    async with httpx.AsyncClient() as http:
        with respx.mock() as mock:
            route = mock.get(JWKS_URL).mock(return_value=httpx.Response(200, json=keys.jwks()))
            cache = JwksCache(lambda: http, clock=lambda: now[0])
            assert await cache.key(issuer, keys.ec_kid, "ES384", None) is not None
            assert await cache.key(issuer, "unknown", "ES384", None) is None
            assert route.call_count == 1  # first fetch counts against the window
            now[0] += 31
            assert await cache.key(issuer, "unknown", "ES384", None) is None
            assert route.call_count == 2
            assert await cache.key(issuer, "unknown", "ES384", JWKS_URL) is None
            assert route.call_count == 2


async def test_stale_jwks_keeps_working_when_the_endpoint_fails():
    keys, wall = Keys(), [10_000.0]
    issuer = parse_trusted_issuers(SINGLE)[ISS]
    async with httpx.AsyncClient() as http:
        with respx.mock() as mock:
            route = mock.get(JWKS_URL)
            route.side_effect = [httpx.Response(200, json=keys.jwks()), httpx.Response(503)]
            cache = JwksCache(lambda: http, clock=lambda: wall[0], wall_clock=lambda: wall[0])
            assert await cache.key(issuer, keys.ec_kid, "ES384", None) is not None
            wall[0] += 7200  # past max_age: refresh is attempted, fails, old key still used
            assert await cache.key(issuer, keys.ec_kid, "ES384", None) is not None
            assert route.call_count == 2


def test_jwks_endpoint_down_is_503_without_detail(tmp_path, keys):
    with respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(side_effect=httpx.ConnectTimeout("down"))
        with make_client(tmp_path, trusted_issuers=SINGLE) as c:
            resp = call(c, keys.token())
    assert resp.status_code == 503
    assert "JWKS" not in resp.text


def test_jwks_redirect_is_not_followed(tmp_path, keys):
    with respx.mock(assert_all_called=False) as mock:
        mock.get(JWKS_URL).mock(return_value=httpx.Response(302, headers={"Location": "https://evil.example/k"}))
        evil = mock.get("https://evil.example/k").mock(return_value=httpx.Response(200, json=keys.jwks()))
        with make_client(tmp_path, trusted_issuers=SINGLE) as c:
            assert call(c, keys.token()).status_code == 503
    assert evil.call_count == 0


def test_pinned_jwks_file_is_used_without_any_fetch(tmp_path, keys):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    issuers = {ISS: {"jwks_url": JWKS_URL, "jwks_file": str(path)}}
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(JWKS_URL)
        with make_client(tmp_path, trusted_issuers=issuers) as c:
            assert call(c, keys.token(jku=JWKS_URL)).status_code == 200
    assert route.call_count == 0


def test_replay_cache_down_fails_closed_with_503(tmp_path, jwks_mock, keys, capsys):
    from cds_service.replay.base import ReplayCache, ReplayCacheUnavailable

    class Down(ReplayCache):
        async def seen(self, jti, issuer, ttl_seconds):
            raise ReplayCacheUnavailable("ConnectionError")

    with make_client(tmp_path) as c:
        c.app.state.authenticator.replay = Down()
        assert call(c, keys.token()).status_code == 503
    assert "replay cache unavailable" in capsys.readouterr().err  # the operator learns why


# --------------------------------------------------------------------------- which endpoints need auth
def test_discovery_requires_a_token_for_the_discovery_url(client, keys):
    assert client.get("/cds-services").status_code == 401
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {keys.token()}"}).status_code == 401
    ok = client.get("/cds-services", headers={"Authorization": f"Bearer {keys.token(aud=DISCOVERY_URL)}"})
    assert ok.status_code == 200
    assert ok.json()["services"]


def test_feedback_requires_a_token_for_the_feedback_url(client, keys):
    assert client.post(f"/cds-services/{SELECT_ID}/feedback", json=FEEDBACK).status_code == 401
    wrong = {"Authorization": f"Bearer {keys.token(aud=SELECT_URL)}"}
    assert client.post(f"/cds-services/{SELECT_ID}/feedback", json=FEEDBACK, headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {keys.token(aud=FEEDBACK_URL)}"}
    resp = client.post(f"/cds-services/{SELECT_ID}/feedback", json=FEEDBACK, headers=right)
    assert resp.status_code == 200, resp.text


def test_unknown_service_is_401_before_404(client, keys):
    assert call(client, None, url="/cds-services/nope").status_code == 401
    token = keys.token(aud=f"{BASE}/cds-services/nope")
    assert call(client, token, url="/cds-services/nope").status_code == 404


def test_cors_preflight_needs_no_token(client):
    resp = client.options(f"/cds-services/{SELECT_ID}", headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.status_code == 200
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()


def test_401_carries_cors_headers_so_the_browser_can_read_it(client):
    resp = client.post(f"/cds-services/{SELECT_ID}", json=hook_body(), headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert resp.status_code == 401
    assert resp.headers.get("access-control-allow-origin")


def test_health_is_open(client):
    assert client.get("/health").status_code == 200


def test_public_base_url_sets_the_expected_aud(tmp_path, jwks_mock, keys):
    public = "https://cds.example.org/neuro"
    with make_client(tmp_path, public_base_url=public + "/") as c:
        assert call(c, keys.token(aud=f"{public}/cds-services/{SELECT_ID}")).status_code == 200
        assert call(c, keys.token(aud=SELECT_URL)).status_code == 401  # the Host header no longer counts


def test_no_issuers_means_no_authentication(tmp_path):
    with make_client(tmp_path, trusted_issuers={}) as c:
        assert c.app.state.authenticator is None
        assert call(c, None).status_code == 200


# --------------------------------------------------------------------------- FHIR-server allow-list
def test_fhir_server_not_on_the_allow_list_is_412_and_never_contacted(client, keys):
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as mock:
        evil = mock.route(host="evil.example").mock(return_value=httpx.Response(200, json={}))
        body = hook_body(prefetch=False, fhir_server="https://evil.example/fhir", access_token="at-123")
        resp = call(client, keys.token(), body)
    assert resp.status_code == 412
    assert "allow-list" in resp.json()["issue"][0]["diagnostics"]
    assert evil.call_count == 0


def test_fhir_server_on_the_allow_list_is_used(client, keys):
    with respx.mock(assert_all_called=False) as mock:
        fhir = mock.route(host="ehr.example.org", path__startswith="/api/FHIR/R4/").mock(
            side_effect=lambda req: httpx.Response(200, json=(
                {"resourceType": "Patient", "id": "pat-7f3a9"} if "/Patient/" in req.url.path
                else {"resourceType": "Bundle", "type": "searchset", "entry": []})))
        body = hook_body(prefetch=False, fhir_server=FHIR + "/", access_token="at-123")
        resp = call(client, keys.token(), body)
    assert resp.status_code == 200, resp.text
    assert fhir.call_count >= 1  # one per missing prefetch key
    assert all(c.request.headers["authorization"] == "Bearer at-123" for c in fhir.calls)


@pytest.mark.parametrize("url,allowed", [
    (FHIR, True),
    (FHIR + "/", True),
    ("HTTPS://EHR.example.org:443/api/FHIR/R4", True),
    (FHIR + "/tenant-a", True),
    ("https://ehr.example.org/api/FHIR/R4evil", False),
    ("https://ehr.example.org/api/FHIR", False),
    ("https://ehr.example.org/api/FHIR/R4/../../admin", False),
    ("https://ehr.example.org/api/FHIR/R4/%2e%2e/x", False),
    ("http://ehr.example.org/api/FHIR/R4", False),
    ("https://ehr.example.org:8443/api/FHIR/R4", False),
    ("https://ehr.example.org.evil.example/api/FHIR/R4", False),
    ("https://user:pw@ehr.example.org/api/FHIR/R4", False),
    ("https://evil.example#@ehr.example.org/api/FHIR/R4", False),
    ("https://ehr.example.org/api/FHIR/R4?x=1", False),
    ("ftp://ehr.example.org/api/FHIR/R4", False),
    ("not a url", False),
])
def test_fhir_allow_list_compares_normalised_scheme_host_port_and_path_prefix(url, allowed):
    assert parse_trusted_issuers(trusted())[ISS].fhir_allowed(url) is allowed


def test_fhir_servers_default_to_the_issuer_and_empty_list_allows_none():
    issuers = parse_trusted_issuers({ISS: JWKS_URL, "https://sandbox.cds-hooks.org": {
        "jwks_url": "https://sandbox.cds-hooks.org/.well-known/jwks.json", "fhir_servers": []}})
    assert issuers[ISS].fhir_allowed(FHIR + "/")  # Epic: iss is the organisation's FHIR base
    assert not issuers["https://sandbox.cds-hooks.org"].fhir_allowed("https://launch.smarthealthit.org/v/r4/fhir")


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("raw,message", [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ({ISS: "http://ehr.example.org/jwks"}, "must use https"),
    ({ISS: "ftp://ehr.example.org/jwks"}, "must use https"),
    ({ISS: "jwks.json"}, "not an absolute URL"),
    ({ISS: {"jwks_url": JWKS_URL, "fhir_server": [FHIR]}}, "unknown key"),
    ({ISS: {"jwks_url": JWKS_URL, "fhir_servers": FHIR}}, "must be a list"),
    ({ISS: {"jwks_url": JWKS_URL, "fhir_servers": ["https://u:p@ehr/fhir"]}}, "not a plain http(s)"),
    ({ISS: {"fhir_servers": [FHIR]}}, "needs 'jwks_url'"),
    ({ISS: {"jwks_file": "/nonexistent/jwks.json"}}, "cannot read a JWKS"),
    ({ISS: {"jwks": {"keys": []}}}, "non-empty 'keys'"),
    ({ISS: 42}, "must be a JWKS URL string or an object"),
])
def test_bad_issuer_configuration_is_a_clear_error(raw, message):
    with pytest.raises(IssuerConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_trusted_issuers(raw)


def test_loopback_http_jwks_is_allowed_for_local_testing():
    for url in ("http://127.0.0.1:8080/jwks.json", "http://localhost/jwks.json", "http://[::1]/jwks.json"):
        assert parse_trusted_issuers({ISS: url})[ISS].jwks_urls == (url,)


def test_settings_reject_bad_issuers_from_the_environment(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("CDS_TRUSTED_ISSUERS", json.dumps({ISS: "http://ehr.example.org/jwks"}))
    with pytest.raises(ValidationError, match="must use https"):
        Settings()
    monkeypatch.setenv("CDS_TRUSTED_ISSUERS", json.dumps(trusted()))
    assert Settings().auth_enabled


def test_build_key_refuses_keys_that_do_not_fit_the_algorithm(keys):
    with pytest.raises(KeyRefused):
        build_key(keys.jwk("rsa"), "ES384")
    with pytest.raises(KeyRefused):
        build_key(keys.jwk("ec"), "RS384")
    with pytest.raises(KeyRefused):
        build_key({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, "RS384")
    with pytest.raises(KeyRefused):
        build_key(keys.jwk("ec"), "HS384")
    small = Keys.__new__(Keys)
    from cryptography.hazmat.primitives.asymmetric import ec as _ec
    from cryptography.hazmat.primitives.asymmetric import rsa as _rsa

    small.rsa = _rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small.ec = _ec.generate_private_key(_ec.SECP256R1())
    small.rsa_kid, small.ec_kid = "small", "p256"
    with pytest.raises(KeyRefused, match="2048"):
        build_key({**small.jwk("rsa"), "alg": "RS384"}, "RS384")
    with pytest.raises(KeyRefused, match="P-384"):
        build_key({**small.jwk("ec"), "alg": "ES384"}, "ES384")
    assert build_key(keys.jwk("ec"), "ES384").algorithm_name == "ES384"


def test_fhir_base_parse_refuses_ambiguous_urls():
    assert FhirBase.parse("https://a.example/x/./y") is None
    assert FhirBase.parse("https://a.example/x%2Fy") is None
    assert FhirBase.parse("https://a.example:99999/") is None
    assert FhirBase.parse("https://a.example//fhir/").segments == ("fhir",)


# --------------------------------------------------------------------------- cds-service serve without issuers
@pytest.fixture
def serve(monkeypatch):
    import uvicorn

    from cds_service import cli
    from cds_service.config import get_settings

    runs: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: runs.append(kw))
    for var in ("CDS_TRUSTED_ISSUERS", "CDS_ALLOW_INSECURE", "CDS_HOST", "CDS_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CDS_PORT", str(free_port()))  # serve checks that its port is free before starting
    get_settings.cache_clear()

    def invoke(*args: str, env: dict[str, str] | None = None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        return CliRunner().invoke(cli.app, ["serve", *args])

    yield invoke, runs
    get_settings.cache_clear()


def test_serve_refuses_public_bind_without_issuers(serve):
    invoke, runs = serve
    result = invoke("--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "Refusing to listen on 0.0.0.0 without authentication" in result.output
    assert runs == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_public_bind_without_issuers_needs_explicit_insecure(serve, how):
    invoke, runs = serve
    result = invoke("--host", "0.0.0.0", "--insecure") if how == "flag" else \
        invoke("--host", "0.0.0.0", env={"CDS_ALLOW_INSECURE": "1"})
    assert result.exit_code == 0, result.output
    assert "authentication is OFF" in result.output
    assert runs and runs[0]["host"] == "0.0.0.0"


def test_serve_on_loopback_without_issuers_runs_with_a_warning(serve):
    invoke, runs = serve
    result = invoke()
    assert result.exit_code == 0
    assert "authentication is OFF" in result.output
    assert runs[0]["host"] == "127.0.0.1"


def test_serve_with_issuers_binds_publicly_without_warning(serve):
    invoke, runs = serve
    result = invoke("--host", "0.0.0.0", env={"CDS_TRUSTED_ISSUERS": json.dumps(trusted())})
    assert result.exit_code == 0, result.output
    assert "authentication is OFF" not in result.output
    assert runs[0]["host"] == "0.0.0.0"


def test_serve_with_malformed_issuers_stops_with_a_clear_message(serve):
    invoke, runs = serve
    result = invoke(env={"CDS_TRUSTED_ISSUERS": "{oops"})
    assert result.exit_code == 2
    assert "CDS_TRUSTED_ISSUERS" in result.output and "not valid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert runs == []


def test_serve_warns_when_workers_would_not_share_the_replay_cache(serve, monkeypatch):
    invoke, runs = serve
    monkeypatch.delenv("CDS_REDIS_URL", raising=False)
    result = invoke("--workers", "2", env={"CDS_TRUSTED_ISSUERS": json.dumps(trusted())})
    assert result.exit_code == 0
    assert "replay cache" in result.output and runs[0]["workers"] == 2


def test_auth_failures_are_counted_by_a_bounded_reason(client, keys):
    """Metric labels never carry caller-chosen text (kid, iss): only a fixed category."""
    import re

    def count(reason: str) -> float:  # the registry is process-wide: compare before and after
        m = re.search(rf'cds_auth_failures_total{{reason="{reason}"}} ([0-9.]+)', client.get("/metrics").text)
        return float(m.group(1)) if m else 0.0

    before = count("untrusted-issuer"), count("wrong-audience")
    assert call(client, keys.token(iss="https://attacker.example/" + "x" * 50)).status_code == 401
    assert call(client, keys.token(aud="https://elsewhere.example/cds-services/x")).status_code == 401
    assert (count("untrusted-issuer"), count("wrong-audience")) == (before[0] + 1, before[1] + 1)
    assert "attacker.example" not in client.get("/metrics").text


def test_token_segments_are_read_only_in_their_one_canonical_spelling():
    from cds_service.auth.verify import _b64decode

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for n in range(0, 12):
        data = bytes(range(200, 200 + n))
        spelled = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        assert _b64decode(spelled) == data
        assert _b64decode(base64.urlsafe_b64encode(data).decode()) == data  # padded, as some issuers send
        for last in alphabet if spelled else ():
            variant = spelled[:-1] + last
            same_bytes_canonical = base64.urlsafe_b64encode(
                base64.urlsafe_b64decode(variant + "=" * (-len(variant) % 4))).rstrip(b"=").decode()
            if variant == same_bytes_canonical:
                assert _b64decode(variant) is not None
            else:  # the same bytes spelled with unused bits set: refused
                with pytest.raises(ValueError):
                    _b64decode(variant)
    for bad in ("ab+c", "ab/c", "abc!", "a", "abcde", "ab=c", "abc==="):
        with pytest.raises(ValueError):
            _b64decode(bad)
