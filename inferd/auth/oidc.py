"""OpenID Connect relying party: a team's users sign in at the team's provider (Okta or any
other) with the authorization code flow, PKCE (S256), a random state and nonce.

The pending login (team, state, nonce, PKCE verifier) travels in a short-lived cookie sealed
with the server's KeyVault (AES-GCM: encrypted and authenticated), so whichever gateway
receives the callback can finish the flow. A state is accepted once: the callback clears the
cookie and this process remembers the states it consumed until they would have expired
anyway. Another gateway does not share that memory; there the provider's refusal of a second
redemption of the same code (RFC 6749 §4.1.2) is what stops a replay.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from dataclasses import dataclass
from typing import Any

import httpx2  # what Authlib's httpx integration is built on
import orjson
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    MissingKeyError,
)
from joserfc.jwk import KeySet

from inferd.auth.keys import KeyVault
from inferd.auth.teams import SsoConfig

LOGIN_MAX_AGE_S = 600
DISCOVERY_TTL_S = 300
HTTP_TIMEOUT_S = 10.0
LEEWAY_S = 60  # clock skew between us and the provider
SCOPE = "openid email"
# Only asymmetric signatures: with HS256 the "key" would be the client secret, and a key set
# could be tricked into verifying with a public key as an HMAC secret.
ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
# Sealed values of other kinds (stored API keys, client secrets) decrypt under the same vault
# key; this prefix tells a pending login apart from them.
_PURPOSE = "inferd/sso-login\0"


class OidcError(Exception):
    """A sign-in refused: `message` is safe to show the user; `status` the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Provider:
    """What the relying party needs from the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    auth_method: str  # client_secret_basic | client_secret_post
    algorithms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PendingLogin:
    team: str
    state: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    created_at: float


class OidcClient:
    def __init__(self, vault: KeyVault) -> None:
        self.vault = vault
        self._providers: dict[str, tuple[float, Provider]] = {}
        self._keys: dict[str, KeySet] = {}
        self._consumed: dict[str, float] = {}  # state → when it would expire anyway

    # -- the flow ---------------------------------------------------------------------------------

    async def start(self, sso: SsoConfig, redirect_uri: str) -> tuple[str, str]:
        """(the provider's authorization URL to send the browser to, the pending-login cookie)."""
        provider = await self.discover(sso.issuer)
        pending = PendingLogin(
            team=sso.team,
            state=generate_token(32),
            nonce=generate_token(32),
            code_verifier=generate_token(64),  # RFC 7636: 43 to 128 characters
            redirect_uri=redirect_uri,
            created_at=time.time(),
        )
        async with self._client(sso, provider) as client:
            url, _ = client.create_authorization_url(
                provider.authorization_endpoint,
                redirect_uri=redirect_uri,
                state=pending.state,
                code_verifier=pending.code_verifier,
                nonce=pending.nonce,
            )
        return url, self.seal(pending)

    def seal(self, pending: PendingLogin) -> str:
        payload = orjson.dumps(dataclasses.astuple(pending)).decode()
        # URL-safe alphabet: a cookie value needs no quoting then.
        return self.vault.encrypt(_PURPOSE + payload).replace("+", "-").replace("/", "_")

    def take(self, cookie: str | None, state: str | None) -> PendingLogin:
        """The pending login the callback's `state` belongs to; refused when the cookie is
        missing, tampered with, too old, for another state, or its state was used already."""
        if not cookie or not state:
            raise OidcError(
                "No sign-in is in progress in this browser (or it expired). Start again."
            )
        try:
            plain = self.vault.decrypt(cookie.replace("-", "+").replace("_", "/"))
            if not plain.startswith(_PURPOSE):
                raise ValueError
            pending = PendingLogin(*orjson.loads(plain[len(_PURPOSE) :]))
        except Exception:  # any decryption or shape error: the cookie is not ours
            raise OidcError("The sign-in cookie is invalid. Start again.") from None
        if not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise OidcError("The sign-in state does not match this browser's sign-in.")
        now = time.time()
        if now - pending.created_at > LOGIN_MAX_AGE_S:
            raise OidcError("The sign-in took too long and expired. Start again.")
        self._consumed = {s: t for s, t in self._consumed.items() if t > now}
        if state in self._consumed:
            raise OidcError("This sign-in was already completed; its state cannot be reused.")
        self._consumed[state] = pending.created_at + LOGIN_MAX_AGE_S
        return pending

    async def finish(self, sso: SsoConfig, pending: PendingLogin, code: str) -> str:
        """Exchange the code and verify the ID token; returns the user's verified email."""
        provider = await self.discover(sso.issuer)
        async with self._client(sso, provider) as client:
            try:
                token = await client.fetch_token(
                    provider.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                    redirect_uri=pending.redirect_uri,
                )
            except OAuthError as exc:
                raise OidcError(f"The provider refused the code: {exc.error}.") from None
            except (httpx2.HTTPError, ValueError):
                raise OidcError("The provider's token endpoint failed.", 502) from None
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise OidcError("The provider returned no ID token.")
            keys = await self._key_set(provider, id_token)
            claims = validate_id_token(id_token, keys, provider, sso.client_id, pending.nonce)
            if "email" not in claims and provider.userinfo_endpoint:
                # Some providers put profile claims only in userinfo; its `sub` must be the
                # ID token's (OIDC Core §5.3.2), or it describes someone else.
                info = await _get_json(client, provider.userinfo_endpoint, withhold_token=False)
                if info.get("sub") != claims.get("sub"):
                    raise OidcError("The provider's userinfo is for another subject.")
                claims = {**info, **claims}
        return verified_email(claims)

    # -- discovery and keys -----------------------------------------------------------------------

    async def discover(self, issuer: str) -> Provider:
        issuer = issuer.rstrip("/")
        hit = self._providers.get(issuer)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with AsyncOAuth2Client(timeout=HTTP_TIMEOUT_S) as client:
            doc = await _get_json(client, issuer + "/.well-known/openid-configuration")
        provider = _provider(issuer, doc)
        self._providers[issuer] = (time.monotonic() + DISCOVERY_TTL_S, provider)
        return provider

    async def _key_set(self, provider: Provider, id_token: str) -> KeySet:
        """The provider's published keys; fetched again once when the token names a key we
        have not seen (the provider rotated its keys)."""
        keys = self._keys.get(provider.jwks_uri)
        kid = _kid(id_token)
        if keys is not None and (kid is None or any(k.kid == kid for k in keys.keys)):
            return keys
        async with AsyncOAuth2Client(timeout=HTTP_TIMEOUT_S) as client:
            doc = await _get_json(client, provider.jwks_uri)
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (JoseError, KeyError, TypeError, ValueError):
            raise OidcError("The provider's key set (jwks_uri) is unusable.", 502) from None
        self._keys[provider.jwks_uri] = keys
        return keys

    def _client(self, sso: SsoConfig, provider: Provider) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=sso.client_id,
            client_secret=sso.client_secret,
            token_endpoint_auth_method=provider.auth_method,
            scope=SCOPE,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_S,
        )


def validate_id_token(
    id_token: str, keys: KeySet, provider: Provider, client_id: str, nonce: str
) -> dict[str, Any]:
    """The ID token's claims once its signature (against the provider's keys), `iss`, `aud`,
    `exp`, `iat` and `nonce` check out (OIDC Core §3.1.3.7)."""
    try:
        token = jwt.decode(id_token, keys, algorithms=provider.algorithms)
    except BadSignatureError:
        raise OidcError("The ID token's signature is invalid.") from None
    except (InvalidKeyIdError, MissingKeyError):
        raise OidcError(
            "The ID token is signed with a key the provider does not publish."
        ) from None
    except JoseError as exc:
        raise OidcError(f"The ID token is malformed ({exc.error}).") from None
    registry = jwt.JWTClaimsRegistry(
        leeway=LEEWAY_S,
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    claims = token.claims
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise OidcError("The ID token has expired.") from None
    except MissingClaimError as exc:
        raise OidcError(f"The ID token lacks `{exc.claim}`.") from None
    except JoseError as exc:
        what = getattr(exc, "claim", exc.error)
        raise OidcError(
            f"The ID token's `{what}` is wrong (not for this team's sign-in)."
        ) from None
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise OidcError("The ID token's `azp` is wrong (not for this team's sign-in).")
    return claims


def verified_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise OidcError("The provider did not share the user's email (scope `email`).")
    # Absent: the provider vouches for its users' emails (Okta's org directory); a provider
    # that says "not verified" (a string at some providers) is believed.
    if claims.get("email_verified", True) in (False, "false"):
        raise OidcError("The provider has not verified this user's email.")
    return email


def _provider(issuer: str, doc: dict[str, Any]) -> Provider:
    # OIDC Discovery §4.3: the document must be the configured issuer's, or its keys and
    # endpoints are someone else's.
    found = doc.get("issuer")
    if not isinstance(found, str) or found.rstrip("/") != issuer:
        raise OidcError(
            f"The provider's discovery document names issuer {str(found)[:200]!r}, "
            f"not the configured {issuer!r}.",
            502,
        )
    endpoints = [doc.get(k) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")]
    if not all(isinstance(e, str) and e.startswith(("https://", "http://")) for e in endpoints):
        raise OidcError("The provider's discovery document lacks its endpoints.", 502)
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    method = next((m for m in ("client_secret_basic", "client_secret_post") if m in methods), None)
    if method is None:
        raise OidcError("The provider supports neither client_secret_basic nor _post.", 502)
    offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    algorithms = tuple(a for a in ALGORITHMS if a in offered)
    if not algorithms:
        raise OidcError("The provider signs ID tokens with no algorithm inferd accepts.", 502)
    userinfo = doc.get("userinfo_endpoint")
    return Provider(
        found,  # the ID token's `iss` is the provider's own spelling (with its slash, if any)
        *endpoints,  # type: ignore[arg-type]
        userinfo if isinstance(userinfo, str) else None,
        method,
        algorithms,
    )


async def _get_json(
    client: AsyncOAuth2Client, url: str, withhold_token: bool = True
) -> dict[str, Any]:
    try:
        response = await client.request("GET", url, withhold_token=withhold_token)
        response.raise_for_status()
        doc = response.json()
    except (httpx2.HTTPError, ValueError):  # unreachable, an error status, not JSON
        raise OidcError(f"The provider did not answer at {url[:300]}.", 502) from None
    if not isinstance(doc, dict):
        raise OidcError(f"The provider answered {url[:300]} with no JSON object.", 502)
    return doc


def _kid(id_token: str) -> str | None:
    """The key id in the token's header, read before verifying it to pick the key set."""
    try:
        kid = jws.extract_compact(id_token.encode()).protected.get("kid")
    except (JoseError, ValueError):
        return None
    return kid if isinstance(kid, str) else None
