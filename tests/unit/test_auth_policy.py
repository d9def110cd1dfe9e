"""The pure parts of authentication: scope table, challenges, bearer parsing, bind safety,
security settings, JWK Sets. Tables, one row per case."""

from __future__ import annotations

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tessera_common.settings import Settings
from tessera_gateway.access import (
    AUTHENTICATED,
    PUBLIC,
    Access,
    AuthError,
    Scope,
    bearer_token,
    challenge,
    check_bind_safety,
    granted_scopes,
    required_access,
)
from tessera_gateway.auth import check_security_settings
from tessera_gateway.tokens import (
    JwksError,
    SigningKey,
    TokenConfigError,
    TokenPolicy,
    parse_jwks,
    scope_names,
)

B = "/dicom-web"
READ, WRITE, DELETE, ADMIN = (Access(scope=s) for s in Scope)

ACCESS_TABLE = [
    ("probe-healthz", "GET", "/healthz", PUBLIC),
    ("probe-readyz", "GET", "/readyz", PUBLIC),
    ("metrics-public", "GET", "/metrics", PUBLIC),
    ("preflight", "OPTIONS", "/{tail}", PUBLIC),
    ("preflight-on-study", "OPTIONS", B + "/studies", PUBLIC),
    ("unmatched", "GET", None, AUTHENTICATED),
    ("qido-studies", "GET", B + "/studies", READ),
    ("qido-head", "HEAD", B + "/studies", READ),
    ("wado-instance", "GET", B + "/studies/{study}/series/{series}/instances/{instance}", READ),
    (
        "frames",
        "GET",
        B + "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        READ,
    ),
    ("wado-uri", "GET", B + "/wado", READ),
    ("stow", "POST", B + "/studies", WRITE),
    ("stow-study", "POST", B + "/studies/{study}", WRITE),
    ("post-elsewhere-is-admin", "POST", B + "/studies/{study}/series", ADMIN),
    ("delete-study", "DELETE", B + "/studies/{study}", DELETE),
    (
        "delete-instance",
        "DELETE",
        B + "/studies/{study}/series/{series}/instances/{instance}",
        DELETE,
    ),
    ("put-is-admin", "PUT", B + "/studies/{study}", ADMIN),
    ("admin-under-base", "GET", B + "/admin/reindex", ADMIN),
    ("admin-outside-base", "POST", "/admin/verify", ADMIN),
    ("unknown-outside-base", "GET", "/other", ADMIN),
]


@pytest.mark.parametrize(
    ("method", "route", "expected"),
    [row[1:] for row in ACCESS_TABLE],
    ids=[r[0] for r in ACCESS_TABLE],
)
def test_required_access(method: str, route: str | None, expected: Access) -> None:
    assert required_access(method, route, base_path=B + "/") == expected


def test_metrics_can_be_protected() -> None:
    assert required_access("GET", "/metrics", base_path=B, protect_metrics=True) == ADMIN


SCOPE_CLAIMS = [
    ("space-separated", {"scope": "openid read write"}, "scope", "", {Scope.READ, Scope.WRITE}),
    ("list", {"scp": ["delete", "admin", 7]}, "scp", "", {Scope.DELETE, Scope.ADMIN}),
    ("dotted-path", {"realm_access": {"roles": ["read"]}}, "realm_access.roles", "", {Scope.READ}),
    ("prefixed", {"scope": "read tessera:write"}, "scope", "tessera:", {Scope.WRITE}),
    ("missing", {}, "scope", "", set()),
    ("not-a-string", {"scope": 3}, "scope", "", set()),
    ("unknown-names", {"scope": "reader Read"}, "scope", "", set()),
]


@pytest.mark.parametrize(
    ("claims", "claim", "prefix", "expected"),
    [row[1:] for row in SCOPE_CLAIMS],
    ids=[row[0] for row in SCOPE_CLAIMS],
)
def test_granted_scopes(
    claims: dict[str, object], claim: str, prefix: str, expected: set[Scope]
) -> None:
    assert granted_scopes(scope_names(claims, claim), prefix) == expected


CHALLENGES = [
    ("no-credentials", AuthError(None, "needs a token"), 401, 'Bearer realm="tessera"'),
    (
        "invalid-token",
        AuthError("invalid_token", "the token has expired"),
        401,
        'Bearer realm="tessera", error="invalid_token", error_description="the token has expired"',
    ),
    (
        "insufficient-scope",
        AuthError("insufficient_scope", "needs write", scope="write"),
        403,
        'Bearer realm="tessera", error="insufficient_scope", error_description="needs write", '
        'scope="write"',
    ),
    (
        "quotes-and-controls-are-replaced",
        AuthError("invalid_request", 'bad "x"\\\n é'),
        400,
        'Bearer realm="tessera", error="invalid_request", error_description="bad ?x??? ?"',
    ),
]


@pytest.mark.parametrize(
    ("failure", "status", "header"), [r[1:] for r in CHALLENGES], ids=[r[0] for r in CHALLENGES]
)
def test_challenge(failure: AuthError, status: int, header: str) -> None:
    assert failure.status == status
    assert challenge(failure, "tessera") == header


BEARER = [
    ("absent", [], None),
    ("other-scheme", ["Basic dXNlcjpwYXNz"], None),
    ("empty-bearer", ["Bearer "], "invalid_request"),
    ("space-inside", ["Bearer abc def"], "invalid_request"),
    ("repeated", ["Bearer a", "Bearer b"], "invalid_request"),
    ("non-token68", ["Bearer a,b"], "invalid_request"),
]


@pytest.mark.parametrize(("headers", "error"), [r[1:] for r in BEARER], ids=[r[0] for r in BEARER])
def test_bearer_token_refusals(headers: list[str], error: str | None) -> None:
    with pytest.raises(AuthError) as caught:
        bearer_token(headers)
    assert caught.value.error == error


def test_bearer_token_scheme_is_case_insensitive() -> None:
    assert bearer_token(["bearer abc.DEF-_~+/=="]) == "abc.DEF-_~+/=="


BIND = [
    ("loopback-auth-off", "127.0.0.1", False, False, True),
    ("localhost", "localhost", False, False, True),
    ("ipv6-loopback", "::1", False, False, True),
    ("wildcard-auth-off", "0.0.0.0", False, False, False),
    ("ipv6-wildcard", "::", False, False, False),
    ("lan-address", "192.0.2.10", False, False, False),
    ("hostname", "archive.example", False, False, False),
    ("wildcard-auth-on", "0.0.0.0", True, False, True),
    ("wildcard-override", "0.0.0.0", False, True, True),
]


@pytest.mark.parametrize(
    ("host", "auth", "override", "safe"), [r[1:] for r in BIND], ids=[r[0] for r in BIND]
)
def test_check_bind_safety(host: str, auth: bool, override: bool, safe: bool) -> None:
    settings = Settings(host=host, auth_enabled=auth, allow_insecure_bind=override)
    message = check_bind_safety(settings)
    assert (message is None) is safe
    if message is not None:
        assert "TESSERA_ALLOW_INSECURE_BIND" in message


OIDC = {"oidc_issuer": "https://idp.example/realms/x", "oidc_audience": "tessera"}
SECURITY_SETTINGS = [
    ("default-embedded", {}, None),
    ("oidc-ok", {**OIDC, "auth_enabled": True}, None),
    ("hs256-refused", {**OIDC, "oidc_algorithms": ["RS256", "HS256"]}, "HS256"),
    ("none-refused", {**OIDC, "oidc_algorithms": ["none"]}, "none"),
    ("no-algorithm", {**OIDC, "oidc_algorithms": []}, "no JWS algorithm"),
    ("audience-required", {"oidc_issuer": "https://idp.example"}, "AUDIENCE"),
    ("issuer-required", {"oidc_audience": "tessera"}, "ISSUER"),
    ("http-jwks-refused", {**OIDC, "oidc_jwks_url": "http://idp.example/keys"}, "https"),
    ("http-jwks-loopback", {**OIDC, "oidc_jwks_url": "http://127.0.0.1:9/keys"}, None),
    (
        "http-jwks-allowed",
        {**OIDC, "oidc_jwks_url": "http://idp:8080/keys", "oidc_allow_http": True},
        None,
    ),
    ("http-discovery-refused", {**OIDC, "oidc_issuer": "http://idp.example"}, "discovery"),
    ("cors-star-auth-on", {"auth_enabled": True, "cors_allowed_origins": ["*"]}, "'*'"),
    ("cors-star-auth-off", {"cors_allowed_origins": ["*"]}, None),
    ("bind-and-cors", {"host": "0.0.0.0", "cors_allowed_origins": ["null"]}, "null"),
]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [r[1:] for r in SECURITY_SETTINGS],
    ids=[r[0] for r in SECURITY_SETTINGS],
)
def test_check_security_settings(overrides: dict[str, object], problem: str | None) -> None:
    message = check_security_settings(Settings(**overrides))  # type: ignore[arg-type]
    if problem is None:
        assert message is None
    else:
        assert message is not None and problem in message


def test_token_policy_refuses_symmetric_algorithms() -> None:
    with pytest.raises(TokenConfigError):
        TokenPolicy(issuer="i", audience="a", algorithms=frozenset({"HS256"}))


# --- JWK Sets -----------------------------------------------------------------------------------

RSA_PUBLIC = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
EC_PUBLIC = ec.generate_private_key(ec.SECP256R1()).public_key()
RSA_JWK = {**RSAAlgorithm.to_jwk(RSA_PUBLIC, as_dict=True), "kid": "rsa"}
EC_JWK = {**ECAlgorithm.to_jwk(EC_PUBLIC, as_dict=True), "kid": "ec"}


def test_parse_jwks_keeps_only_signing_keys() -> None:
    document = {
        "keys": [
            RSA_JWK,
            EC_JWK,
            {**RSA_JWK, "kid": "enc", "use": "enc"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            {"kty": "XYZ", "kid": "unknown"},
            "not-an-object",
        ]
    }
    assert set(parse_jwks(orjson.dumps(document))) == {"rsa", "ec"}


@pytest.mark.parametrize("document", [b"not json", b"[]", b'{"keys": 1}'])
def test_parse_jwks_refuses_non_sets(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


FITS = [
    ("rsa-rs256", RSA_JWK, "RS256", True),
    ("rsa-ps512", RSA_JWK, "PS512", True),
    ("rsa-es256", RSA_JWK, "ES256", False),
    ("rsa-hs256", RSA_JWK, "HS256", False),
    ("rsa-with-own-alg", {**RSA_JWK, "alg": "RS256"}, "PS256", False),
    ("ec-p256-es256", EC_JWK, "ES256", True),
    ("ec-p256-es384", EC_JWK, "ES384", False),
    ("ec-none", EC_JWK, "none", False),
]


@pytest.mark.parametrize(("jwk", "alg", "fits"), [r[1:] for r in FITS], ids=[r[0] for r in FITS])
def test_signing_key_fits(jwk: dict[str, object], alg: str, fits: bool) -> None:
    assert SigningKey(jwk).fits(alg) is fits
