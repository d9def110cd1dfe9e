"""OAuth 2.0 bearer JWTs: the validation policy, JWK Sets and the claims check.

Pure: no I/O (the JWK Set is fetched by ``jwks.py``). A token is accepted only when

- its ``alg`` is on the asymmetric allow-list (RFC 8725 §3.1: never ``none``; never an HMAC
  algorithm, whose "secret" would be the IdP's *public* key, RFC 8725 §2.1),
- the key named by its ``kid`` is a signing key of a type that fits that ``alg`` (an RSA key
  verifies only RS*/PS*, a P-256 key only ES256, …) and, when the JWK names its own ``alg``,
  exactly that one,
- the signature verifies, ``iss`` and ``aud`` are the configured ones and ``exp`` / ``nbf`` /
  ``iat`` hold within a small leeway (RFC 7519 §4.1, RFC 9068 §4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWKError,
)

from tessera_common.settings import Settings

from .access import AuthError, Principal, granted_scopes

KEY_TYPES: dict[str, tuple[str, str | None]] = {
    # alg -> (kty, crv); RFC 7518 §3.1 and RFC 8037 §3.1
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
"""The asymmetric JWS algorithms Tessera can accept, with the key type each needs."""


class TokenConfigError(ValueError):
    """The OIDC settings are unusable (a refused algorithm, a missing audience, …)."""


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a bearer JWT must satisfy. Built from ``Settings`` by :meth:`from_settings`."""

    issuer: str
    audience: str
    algorithms: frozenset[str]
    leeway: float = 30.0
    scope_claim: str = "scope"
    scope_prefix: str = ""

    def __post_init__(self) -> None:
        refused = sorted(alg for alg in self.algorithms if alg not in KEY_TYPES)
        if refused:
            raise TokenConfigError(
                f"JWS algorithms {refused} are not accepted: only asymmetric algorithms "
                f"({', '.join(KEY_TYPES)}) — never 'none' or HS* (RFC 8725 §2.1)"
            )
        if not self.algorithms:
            raise TokenConfigError("no JWS algorithm is allowed (TESSERA_OIDC_ALGORITHMS)")

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenPolicy | None:
        """The policy, or None when no OIDC issuer is configured (bearer JWTs refused)."""
        if not settings.oidc_issuer:
            if settings.oidc_audience or settings.oidc_jwks_url:
                raise TokenConfigError("TESSERA_OIDC_ISSUER is required to accept bearer JWTs")
            return None
        if not settings.oidc_audience:
            raise TokenConfigError(
                "TESSERA_OIDC_AUDIENCE is required: without it a token the IdP issued for any "
                "other service would be accepted"
            )
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            algorithms=frozenset(settings.oidc_algorithms),
            leeway=settings.oidc_leeway,
            scope_claim=settings.auth_scope_claim,
            scope_prefix=settings.auth_scope_prefix,
        )


@dataclass(frozen=True, slots=True)
class TokenHeader:
    alg: str
    kid: str | None


def read_header(token: str, policy: TokenPolicy) -> TokenHeader:
    """The unverified JOSE header, refused early when its ``alg`` is not allowed (so that a
    forged token never causes a JWK Set fetch)."""
    try:
        header = jwt.get_unverified_header(token)
    except InvalidTokenError as exc:
        raise AuthError("invalid_token", "the token is not a well-formed JWT") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise AuthError("invalid_token", f"the token's algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError("invalid_token", "the token's kid is not a string")
    return TokenHeader(alg=alg, kid=kid)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One public key of a JWK Set (RFC 7517 §4), usable for the algorithms its type fits."""

    jwk: dict[str, Any]
    _prepared: dict[str, jwt.PyJWK] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kid(self) -> str | None:
        kid = self.jwk.get("kid")
        return kid if isinstance(kid, str) else None

    def fits(self, alg: str) -> bool:
        kty, crv = KEY_TYPES.get(alg, ("", None))
        if self.jwk.get("kty") != kty or (crv is not None and self.jwk.get("crv") != crv):
            return False
        own_alg = self.jwk.get("alg")
        return own_alg is None or own_alg == alg

    def for_algorithm(self, alg: str) -> jwt.PyJWK:
        """The key bound to ``alg`` (PyJWT then verifies with exactly that algorithm)."""
        if not self.fits(alg):
            raise AuthError("invalid_token", f"the signing key does not fit algorithm {alg}")
        prepared = self._prepared.get(alg)
        if prepared is None:
            prepared = self._prepared[alg] = jwt.PyJWK(self.jwk, algorithm=alg)
        return prepared


class JwksError(ValueError):
    """A JWK Set document that cannot be used."""


def parse_jwks(document: bytes) -> dict[str | None, SigningKey]:
    """The signing keys of a JWK Set (RFC 7517 §5), by ``kid``.

    Keys for encryption (``use: enc``), symmetric keys (``kty: oct``: a published JWK Set has
    no business holding one) and keys of unknown types are left out; a key without a ``kid``
    is found under None.
    """
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise JwksError(f"the JWK Set is not JSON: {exc}") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise JwksError("the JWK Set has no 'keys' array")
    usable: dict[str | None, SigningKey] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        key = SigningKey(entry)
        try:
            for alg in KEY_TYPES:
                if key.fits(alg):
                    key.for_algorithm(alg)  # parse now: a broken key is left out, not fatal
                    break
            else:
                continue
        except (PyJWKError, InvalidKeyError, ValueError, TypeError):
            continue
        usable[key.kid] = key
    return usable


def pick_key(keys: dict[str | None, SigningKey], header: TokenHeader) -> SigningKey | None:
    """The key for ``header``: by ``kid``; a token without one may use the set's only key."""
    if header.kid is not None:
        key = keys.get(header.kid)
    elif len(keys) == 1:
        key = next(iter(keys.values()))
    else:
        raise AuthError("invalid_token", "the token names no kid and the IdP has several keys")
    return key if key is not None and key.fits(header.alg) else None


_CLAIM_ERRORS: tuple[tuple[type[InvalidTokenError], str], ...] = (
    (ExpiredSignatureError, "the token has expired"),
    (ImmatureSignatureError, "the token is not valid yet"),
    (InvalidIssuedAtError, "the token's iat claim is invalid"),
    (InvalidAudienceError, "the token is not meant for this service (aud)"),
    (InvalidIssuerError, "the token was issued by an issuer this service does not trust (iss)"),
    (InvalidSignatureError, "the token's signature does not verify"),
    (InvalidAlgorithmError, "the token's algorithm is not accepted"),
)


def verify_token(
    token: str, header: TokenHeader, key: SigningKey, policy: TokenPolicy
) -> Principal:
    """Verify the signature and claims of ``token``; the caller it authenticates."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.for_algorithm(header.alg),
            algorithms=[header.alg],
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway,
            options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
        )
    except MissingRequiredClaimError as exc:
        raise AuthError("invalid_token", f"the token has no {exc.claim} claim") from exc
    except InvalidTokenError as exc:
        for error_type, description in _CLAIM_ERRORS:
            if isinstance(exc, error_type):
                raise AuthError("invalid_token", description) from exc
        raise AuthError("invalid_token", "the token is invalid") from exc
    except (InvalidKeyError, PyJWKError) as exc:
        raise AuthError("invalid_token", "the token's signing key is unusable") from exc
    return principal_of(claims, policy)


def principal_of(claims: dict[str, Any], policy: TokenPolicy) -> Principal:
    """The caller of verified ``claims``: ``sub`` (else the client), and the granted scopes."""
    client = claims.get("client_id", claims.get("azp"))
    client_id = client if isinstance(client, str) else None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        subject = f"client:{client_id}" if client_id else "unknown"
    return Principal(
        subject=subject,
        method="jwt",
        scopes=granted_scopes(scope_names(claims, policy.scope_claim), policy.scope_prefix),
        client_id=client_id,
    )


def scope_names(claims: dict[str, Any], claim: str) -> list[str]:
    """The scope names in ``claim`` (a dotted path): a space-separated string (RFC 8693 §4.2,
    RFC 9068 §2.2.3) or a list of strings (Azure's ``roles``, Keycloak's ``realm_access.roles``)."""
    value: Any = claims
    for part in claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
