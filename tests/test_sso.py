"""Single sign-on against a real OpenID provider on loopback (oidc-provider-mock: a registered
client, client-secret authentication, nonces), API-key login, dashboard sessions and logout on a
real server; and, in-process, the ID token checks a provider cannot be made to fail."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import oidc_provider_mock
import pytest
import werkzeug.serving
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from inferd.auth.keys import KeyVault
from inferd.auth.oidc import (
    OidcClient,
    OidcError,
    PendingLogin,
    Provider,
    validate_id_token,
    verified_email,
)
from inferd.auth.teams import SsoConfig
from tests.conftest import ADMIN_KEY, NULL_CATALOG, Server

TEAM = "acme"
ADMIN_EMAIL = "admin@acme.test"


class IdP:
    """oidc-provider-mock on 127.0.0.1, recording every token its token endpoint hands out
    (so the test can look for them in the server's log)."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.paths: list[str] = []  # every path requested, in order
        app = oidc_provider_mock.app(require_client_registration=True, require_nonce=True)
        self.httpd = werkzeug.serving.make_server("127.0.0.1", 0, self._recording(app), True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True).start()

    def _recording(self, app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            self.paths.append(environ["PATH_INFO"])
            chunks = app(environ, start_response)
            if environ["PATH_INFO"] != "/oauth2/token":
                return chunks
            body = b"".join(chunks)
            tokens = json.loads(body)
            self.issued += [v for k, v in tokens.items() if k.endswith("token")]
            return [body]

        return wsgi

    def register(self, redirect_uri: str) -> tuple[str, str]:
        r = httpx.post(
            self.url + "/oauth2/clients",
            json={
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        )
        assert r.status_code == 201, r.text
        return r.json()["client_id"], r.json()["client_secret"]


class Impostor:
    """A discovery document that lies: the real provider's endpoints under another issuer
    (`/`), or the real provider's issuer under another URL (`/bad`)."""

    def __init__(self, idp: IdP) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                doc = httpx.get(idp.url + "/.well-known/openid-configuration").json()
                if self.path == "/.well-known/openid-configuration":
                    doc["issuer"] = outer.url
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


class Env:
    def __init__(self, server: Server, idp: IdP, impostor: Impostor, secret: str) -> None:
        self.server, self.idp, self.impostor, self.secret = server, idp, impostor, secret


def _admin(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("sso")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    server = Server(
        root, {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "catalog.toml")}
    )
    idp = IdP()
    impostor = Impostor(idp)
    client_id, secret = idp.register(server.url + "/sso/callback")
    server.start()
    try:
        for team, issuer in [
            (TEAM, idp.url),
            ("impostor", impostor.url),
            ("impostor-doc", impostor.url + "/bad"),
            ("plain", None),
        ]:
            r = _admin("POST", server.url + "/v1/accounts", json={"name": team})
            assert r.status_code == 200, r.text
            if issuer is None:
                continue
            sso = {
                "issuer": issuer,
                "client_id": client_id,
                "client_secret": secret,
                "admin_email": ADMIN_EMAIL,
            }
            r = _admin("PUT", server.url + f"/v1/accounts/{team}/sso", json=sso)
            assert r.status_code == 200, r.text
        yield Env(server, idp, impostor, secret)
    finally:
        server.stop()
        idp.httpd.shutdown()
        impostor.httpd.shutdown()


# -- a browser ----------------------------------------------------------------------------------


def browser(env: Env) -> httpx.Client:
    return httpx.Client(base_url=env.server.url, follow_redirects=False, timeout=30)


def start(b: httpx.Client, team: str = TEAM) -> str:
    """POST /login_sso: the provider's authorization URL it redirects to."""
    r = b.post("/login_sso", data={"team": team})
    assert r.status_code == 303, r.text
    return r.headers["location"]


def authorize(location: str, email: str) -> str:
    """The provider's sign-in form, submitted as `email`: the callback URL it redirects to."""
    assert httpx.get(location).status_code == 200
    r = httpx.post(location, data={"sub": email})
    assert r.status_code == 302, r.text
    return r.headers["location"]


def sign_in(b: httpx.Client, email: str, team: str = TEAM) -> httpx.Response:
    return b.get(authorize(start(b, team), email))


def dash(b: httpx.Client) -> dict[str, str]:
    r = b.get("/dash")
    assert r.status_code == 200, (r.status_code, r.headers.get("location"))
    found = dict(re.findall(r'id="(team|user|role)"[^>]*>([^<]*)<', r.text))
    found["csrf"] = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    return found


def key_login(b: httpx.Client, key: str) -> httpx.Response:
    return b.post("/login", data={"api_key": key})


# -- pages --------------------------------------------------------------------------------------


def test_forms_are_plain_accessible_html(env: Env) -> None:
    with browser(env) as b:
        sso = b.get("/login_sso")
        assert sso.status_code == 200 and sso.headers["content-type"].startswith("text/html")
        assert '<html lang="en">' in sso.text
        assert '<label for="team">Team ID</label>' in sso.text and 'name="team"' in sso.text
        assert ">SSO Login</button>" in sso.text
        login = b.get("/login")
        assert (
            '<label for="api_key">API key</label>' in login.text
            and 'href="/login_sso"' in login.text
        )
        assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
        r = b.get("/dash")
        assert r.status_code == 303 and r.headers["location"] == "/login"


def test_team_without_sso_is_a_404_page(env: Env) -> None:
    with browser(env) as b:
        for team in ("no-such-team", "plain"):
            r = b.post("/login_sso", data={"team": team})
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
            assert f"Team `{team}` has no single sign-on" in r.text and "Traceback" not in r.text
        r = b.post("/login_sso", data={"team": "<script>x</script>"})
        assert r.status_code == 404 and "<script>x" not in r.text and "&lt;script&gt;" in r.text


# -- single sign-on -----------------------------------------------------------------------------


def test_admin_email_signs_in_as_admin(env: Env) -> None:
    with browser(env) as b:
        location = start(b)
        query = parse_qs(urlsplit(location).query)
        assert location.startswith(env.idp.url + "/oauth2/authorize")
        assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
        assert query["redirect_uri"] == [env.server.url + "/sso/callback"]
        r = b.get(authorize(location, ADMIN_EMAIL))
        assert r.status_code == 303 and r.headers["location"] == "/dash", r.text
        cookie = next(
            c for c in r.headers.get_list("set-cookie") if c.startswith("inferd_session=")
        )
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http on loopback
        assert dash(b) | {"csrf": ""} == {
            "team": TEAM,
            "user": ADMIN_EMAIL,
            "role": "admin",
            "csrf": "",
        }


def test_another_email_joins_as_member_via_the_provider_initiated_url(env: Env) -> None:
    with browser(env) as b:
        r = b.get(f"/sso/{TEAM}/login")  # what the operator enters as Okta's initiate login URI
        assert r.status_code == 303, r.text
        assert b.get(authorize(r.headers["location"], "Dev@Acme.test")).status_code == 303
        seen = dash(b)
        assert (seen["user"], seen["role"]) == ("dev@acme.test", "member")


def test_replayed_state_is_refused(env: Env) -> None:
    with browser(env) as b:
        location = start(b)
        sealed = b.cookies["inferd_sso"]
        callback = authorize(location, "replay@acme.test")
        assert b.get(callback).status_code == 303
        again = b.get(callback)  # the pending-login cookie was cleared
        assert again.status_code == 400 and "No sign-in is in progress" in again.text
        b.cookies.set("inferd_sso", sealed, domain="127.0.0.1", path="/sso")  # kept by an attacker
        again = b.get(callback)
        assert again.status_code == 400 and "already completed" in again.text
    with browser(env) as other:  # login CSRF: someone else's callback URL in this browser
        assert other.get(callback).status_code == 400


def test_provider_denial_is_a_400_page(env: Env) -> None:
    with browser(env) as b:
        r = httpx.post(start(b), data={"action": "deny"})
        assert r.status_code == 302
        denied = r.headers["location"]
        r = b.get(denied)
        assert r.status_code == 400 and "access_denied" in r.text
        assert b.get("/dash").status_code == 303
    with browser(env) as b:  # as Okta answers (with the state): its reason is shown
        state = parse_qs(urlsplit(start(b)).query)["state"][0]
        r = b.get(
            "/sso/callback",
            params={"state": state, "error": "access_denied", "error_description": "Not assigned"},
        )
        assert r.status_code == 400 and "access_denied (Not assigned)." in r.text
    with browser(env) as other:  # not its sign-in: no prose from the link is shown
        r = other.get("/sso/callback?error=access_denied<b>&error_description=Call+555")
        assert r.status_code == 400 and "access_deniedb." in r.text and "555" not in r.text


def test_id_token_from_another_issuer_is_refused(env: Env) -> None:
    # The discovery document claims the impostor's issuer; the provider signs with its own.
    with browser(env) as b:
        r = sign_in(b, "mallory@acme.test", team="impostor")
        assert r.status_code == 400 and "`iss` is wrong" in r.text, r.text
        assert "inferd_session" not in b.cookies


def test_discovery_document_of_another_issuer_is_refused(env: Env) -> None:
    with browser(env) as b:
        r = b.post("/login_sso", data={"team": "impostor-doc"})
        assert r.status_code == 502 and "names issuer" in r.text, r.text


def test_unverified_email_is_refused(env: Env) -> None:
    email = "unverified@acme.test"
    r = httpx.put(env.idp.url + f"/users/{email}", json={"email": email, "email_verified": False})
    assert r.status_code == 204, r.text
    with browser(env) as b:
        r = sign_in(b, email)
        assert r.status_code == 400 and "not verified" in r.text


def test_user_without_email_is_refused(env: Env) -> None:
    # Not in the ID token: the server asks userinfo (same `sub`), which has none either.
    r = httpx.put(env.idp.url + "/users/00u-no-email", json={"name": "No Email"})
    assert r.status_code == 204, r.text
    with browser(env) as b:
        r = sign_in(b, "00u-no-email")
        assert r.status_code == 400 and "did not share the user" in r.text, r.text
    assert "/userinfo" in env.idp.paths


# -- API-key login and sessions -----------------------------------------------------------------


def test_api_key_login(env: Env) -> None:
    with browser(env) as b:
        r = key_login(b, ADMIN_KEY)
        assert r.status_code == 303 and r.headers["location"] == "/dash"
        seen = dash(b)
        assert (seen["team"], seen["user"], seen["role"]) == ("admin", "API key auto", "admin")
    with browser(env) as b:
        r = key_login(b, "ik_wrong")
        assert r.status_code == 401 and "Invalid API key" in r.text
        assert "inferd_session" not in b.cookies
        r = b.post("/login", data={"api_key": ADMIN_KEY}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403 and "inferd_session" not in b.cookies


def test_scoped_jwt_cannot_log_in(env: Env) -> None:
    r = _admin(
        "POST",
        env.server.url + "/v1/scoped-jwt",
        json={"api_key_name": "auto", "expires_delta": 600},
    )
    assert r.status_code == 200, r.text
    with browser(env) as b:
        r = key_login(b, r.json()["token"])
        assert r.status_code == 403 and "Scoped JWTs cannot sign in" in r.text
        assert "inferd_session" not in b.cookies


def test_logout_needs_the_csrf_token(env: Env) -> None:
    with browser(env) as b:
        sign_in(b, ADMIN_EMAIL)
        csrf = dash(b)["csrf"]
        token = b.cookies["inferd_session"]
        r = b.post("/logout", data={"csrf": "forged"})
        assert r.status_code == 403
        assert b.post("/logout", data={}).status_code == 403
        assert dash(b)["user"] == ADMIN_EMAIL  # still signed in
        r = b.post("/logout", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert "inferd_session" not in b.cookies
        b.cookies.set("inferd_session", token, domain="127.0.0.1", path="/")  # closed on the server
        r = b.get("/dash")
        assert r.status_code == 303 and r.headers["location"] == "/login"


def test_secrets_never_reach_the_log(env: Env) -> None:
    # Last in the module: every sign-in above has written what it writes.
    log = env.server.log_text()
    assert "sso sign-in" in log
    assert env.secret not in log
    assert env.idp.issued and not [t for t in env.idp.issued if t in log]
    assert ADMIN_KEY not in log


# -- in-process: the checks of the ID token and the pending login -------------------------------

KEY = RSAKey.generate_key(2048, {"kid": "k1"})
IDP = Provider(
    issuer="https://idp.test",
    authorization_endpoint="https://idp.test/authorize",
    token_endpoint="https://idp.test/token",
    jwks_uri="https://idp.test/jwks",
    userinfo_endpoint=None,
    auth_method="client_secret_basic",
    algorithms=("RS256",),
)
PUBLISHED = KeySet([RSAKey.import_key(KEY.as_dict(private=False))])


def id_token(key: Any = KEY, alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())  # at signing: the module is imported long before its tests run
    base = {
        "iss": IDP.issuer,
        "aud": "client-1",
        "sub": "00u1",
        "exp": now + 300,
        "iat": now,
        "nonce": "n-1",
        "email": "a@acme.test",
    }
    payload = {k: v for k, v in (base | claims).items() if v is not None}
    return jwt.encode({"alg": alg, "kid": "k1"}, payload, key, algorithms=[alg])


def test_a_valid_id_token_passes() -> None:
    claims = validate_id_token(id_token(), PUBLISHED, IDP, "client-1", "n-1")
    assert verified_email(claims) == "a@acme.test"
    claims = validate_id_token(id_token(aud=["client-1"]), PUBLISHED, IDP, "client-1", "n-1")
    assert claims["sub"] == "00u1"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: id_token(key=RSAKey.generate_key(2048, {"kid": "k1"})), "signature is invalid"),
        (lambda: id_token(iss="https://evil.test"), "`iss` is wrong"),
        (lambda: id_token(aud="client-2"), "`aud` is wrong"),
        (lambda: id_token(aud=["client-1", "client-2"]), "`azp` is wrong"),
        (lambda: id_token(exp=int(time.time()) - 3600), "expired"),
        (lambda: id_token(nonce="n-2"), "`nonce` is wrong"),
        (lambda: id_token(nonce=None), "lacks `nonce`"),
        (lambda: id_token(iat=None), "lacks `iat`"),
        (lambda: id_token(key=OctKey.import_key("s" * 32), alg="HS256"), "malformed"),
        (lambda: id_token()[:-6] + "AAAAAA", "signature is invalid"),
        (lambda: "not.a.jwt", "malformed"),
    ],
    ids=[
        "bad-signature",
        "iss",
        "aud",
        "azp",
        "expired",
        "nonce",
        "no-nonce",
        "no-iat",
        "hs256",
        "tampered",
        "garbage",
    ],
)
def test_a_bad_id_token_is_refused(token: Any, reason: str) -> None:
    with pytest.raises(OidcError) as refused:
        validate_id_token(token(), PUBLISHED, IDP, "client-1", "n-1")
    assert reason in refused.value.message


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"sub": "x"}, "did not share the user's email"),
        ({"email": "a@acme.test", "email_verified": False}, "not verified"),
        ({"email": "a@acme.test", "email_verified": "false"}, "not verified"),
    ],
)
def test_email_must_be_present_and_not_unverified(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(OidcError, match=reason):
        verified_email(claims)


def test_pending_login_is_sealed_bound_to_its_state_and_used_once() -> None:
    vault = KeyVault(b"test-master-secret")
    client = OidcClient(vault)
    client._providers[IDP.issuer] = (float("inf"), IDP)  # discovery done (no network here)
    sso = SsoConfig("acc_1", TEAM, IDP.issuer, "client-1", "s3cret", ADMIN_EMAIL)
    url, sealed = asyncio.run(client.start(sso, "https://inferd.test/sso/callback"))
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["client_id"] == "client-1" and query["scope"] == "openid email"
    assert query["redirect_uri"] == "https://inferd.test/sso/callback"
    assert "s3cret" not in url and "s3cret" not in sealed
    state = query["state"]
    elsewhere = PendingLogin(TEAM, state, "n", "v" * 43, "https://inferd.test/", time.time())
    for cookie, reason in [
        (None, "No sign-in is in progress"),
        (sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:], "invalid"),
        (OidcClient(KeyVault(b"another-server")).seal(elsewhere), "invalid"),
        (vault.encrypt("ik_stored_api_key"), "invalid"),  # sealed by the vault, not a login
    ]:
        with pytest.raises(OidcError, match=reason):
            client.take(cookie, state)
    pending = client.take(sealed, state)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(pending.code_verifier.encode()).digest())
    assert query["code_challenge"] == challenge.rstrip(b"=").decode()
    assert query["code_challenge_method"] == "S256" and query["nonce"] == pending.nonce
    assert pending.team == TEAM and pending.redirect_uri == "https://inferd.test/sso/callback"
    with pytest.raises(OidcError, match="already completed"):
        client.take(sealed, state)
    with pytest.raises(OidcError, match="does not match"):
        client.take(sealed, state + "x")
    stale = client.seal(replace(pending, created_at=time.time() - 3600))
    with pytest.raises(OidcError, match="expired"):
        client.take(stale, state)
