"""Test support for authentication: real ES384/RS384 keys, a JWKS, signed tokens, an app that trusts them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://ehr.example.org/api/FHIR/R4"
JWKS_URL = "https://ehr.example.org/jwks.json"
OTHER_JWKS_URL = "https://ehr.example.org/jwks-2.json"
FHIR = "https://ehr.example.org/api/FHIR/R4"
BASE = "http://testserver"
SELECT_ID = "neurosarcoidosis-order-select"
SELECT_URL = f"{BASE}/cds-services/{SELECT_ID}"


class Keys:
    """One EC P-384 and one RSA-2048 key pair, with their public JWKS."""

    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP384R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_kid = "ec-" + uuid.uuid4().hex[:8]
        self.rsa_kid = "rsa-" + uuid.uuid4().hex[:8]

    def jwk(self, which: str) -> dict[str, Any]:
        if which == "ec":
            data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
            data.update(kid=self.ec_kid, use="sig", alg="ES384")
        else:
            data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
            data.update(kid=self.rsa_kid, use="sig", alg="RS384")
        return data

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk("ec"), self.jwk("rsa")]}

    def public_pem(self, which: str = "rsa") -> bytes:
        key = self.rsa if which == "rsa" else self.ec
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, aud: Any = SELECT_URL, *, alg: str = "ES384", iss: str = ISS, kid: Any = "default",
              jku: str | None = None, now: float | None = None, drop: tuple[str, ...] = (),
              headers: dict[str, Any] | None = None, key: Any = None, **claims: Any) -> str:
        now = time.time() if now is None else now
        payload = {"iss": iss, "aud": aud, "iat": int(now), "exp": int(now) + 300, "jti": str(uuid.uuid4())}
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        header: dict[str, Any] = {"typ": "JWT"}
        if kid == "default":
            kid = self.rsa_kid if alg.startswith(("RS", "PS")) else self.ec_kid
        if kid is not None:
            header["kid"] = kid
        if jku is not None:
            header["jku"] = jku
        header.update(headers or {})
        if key is None:
            key = self.rsa if alg.startswith(("RS", "PS")) else self.ec
        return jwt.encode(payload, key, algorithm=alg, headers=header)


def trusted(jwks_url: str = JWKS_URL, **extra: Any) -> dict[str, Any]:
    """CDS_TRUSTED_ISSUERS for the test issuer."""
    return {ISS: {"jwks_url": jwks_url, "jwks_urls": [OTHER_JWKS_URL], "fhir_servers": [FHIR], **extra}}


def hook_body(patient: str = "pat-7f3a9", *, prefetch: bool = True, fhir_server: str | None = None,
              access_token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "order-select",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "patientId": patient,
            "userId": "Practitioner/prac-1",
            "selections": ["MedicationRequest/mr-1"],
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {
                "resourceType": "MedicationRequest", "id": "mr-1", "status": "draft", "intent": "order",
                "subject": {"reference": f"Patient/{patient}"},
                "medicationCodeableConcept": {"text": "Methotrexate 15 mg weekly", "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "105585"}]}}}]},
        },
    }
    if prefetch:
        body["prefetch"] = {"patient": {"resourceType": "Patient", "id": patient, "gender": "female",
                                        "birthDate": "1970-01-01"},
                            "conditions": None, "medicationStatements": None, "medicationRequests": None,
                            "observations": None}
    if fhir_server:
        body["fhirServer"] = fhir_server
    if access_token:
        body["fhirAuthorization"] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-client"}
    return body
