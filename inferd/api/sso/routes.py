"""Browser routes of sign-in: plain HTML pages, not API endpoints (left out of the OpenAPI
document). A session is a random token in the `inferd_session` cookie (HttpOnly, SameSite=Lax);
forms that change something carry the session's CSRF token (`check_csrf`)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from inferd.api.gateway import Gateway
from inferd.auth import AuthError
from inferd.auth.oidc import LOGIN_MAX_AGE_S, OidcClient, OidcError
from inferd.auth.teams import Session

log = logging.getLogger("inferd.sso")

SESSION_COOKIE = "inferd_session"
LOGIN_COOKIE = "inferd_sso"  # the sealed pending login, between start and callback

_HEADERS = {
    "Cache-Control": "no-store",
    # No scripts, no framing (the logout form must not be clickjacked), no outside assets.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}"
    "label,input,button{display:block;margin:.4rem 0}input{width:100%;padding:.3rem}"
    "[role=alert]{color:#a00}"
)


# -- helpers others reuse -------------------------------------------------------------------------


async def dash_session(request: Request) -> Session | None:
    """The signed-in browser's live session (role as it is now), or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(_gateway(request).auth.teams.session, token)


def check_csrf(session: Session, form_value: object) -> bool:
    """Whether a form's `csrf` field is the session's token (constant-time)."""
    return isinstance(form_value, str) and hmac.compare_digest(
        session.csrf.encode(), form_value.encode()
    )


# -- pages --------------------------------------------------------------------------------------


async def login_sso_form(request: Request) -> Response:
    return _page("SSO login", _sso_form(request))


async def login_sso(request: Request) -> Response:
    if _cross_site(request):
        return _refused_cross_site()
    form = await request.form()
    return await _start(request, str(form.get("team") or ""))


async def team_login(request: Request) -> Response:
    """The provider-initiated login ("initiate login URI" at Okta): the same flow."""
    return await _start(request, request.path_params["team"])


async def callback(request: Request) -> Response:
    params = request.query_params
    gateway = _gateway(request)
    cookie, state = request.cookies.get(LOGIN_COOKIE), params.get("state")
    try:
        if "error" in params:
            error = re.sub(r"[^\w.-]", "", params["error"])[:64]
            try:
                _oidc(request).take(cookie, state)
                described = params.get("error_description", "")[:300]
            except OidcError:
                # Not this browser's sign-in (or a provider that drops the state): its prose
                # is not shown, so a crafted link cannot put words on our page.
                described = ""
            raise OidcError(
                f"The provider refused the sign-in: {error}"
                + (f" ({described})." if described else ".")
            )
        pending = _oidc(request).take(cookie, state)
        code = params.get("code")
        if not code:
            raise OidcError("The provider's answer has no authorization code.")
        sso = await asyncio.to_thread(gateway.auth.teams.sso, pending.team)
        if sso is None:
            raise OidcError(f"Team `{pending.team}` no longer has single sign-on.")
        email = await _oidc(request).finish(sso, pending, code)
        user_id, role = await asyncio.to_thread(
            gateway.auth.teams.sign_in, sso.account_id, email, sso.admin_email
        )
    except OidcError as exc:
        log.info("sso sign-in refused", extra={"reason": exc.message})
        response = _page(
            "Sign-in failed",
            f'<p role="alert">{escape(exc.message)}</p>'
            f'<p><a href="{_root(request)}/login_sso">Try again</a></p>',
            exc.status,
        )
        response.delete_cookie(LOGIN_COOKIE, path=_login_cookie_path(request))
        return response
    log.info("sso sign-in", extra={"account": sso.account_id})
    response = await _signed_in(request, sso.account_id, role, user_id=user_id)
    response.delete_cookie(LOGIN_COOKIE, path=_login_cookie_path(request))
    return response


async def login_form(request: Request) -> Response:
    return _page("Log in", _key_form(request))


async def login(request: Request) -> Response:
    """API-key login, for single-user installs without an identity provider."""
    if _cross_site(request):
        return _refused_cross_site()
    form = await request.form()
    key = str(form.get("api_key") or "").strip()
    if not key:
        return _page("Log in", _key_form(request, "Enter an API key."), 400)
    try:
        principal = await _gateway(request).auth.authenticate("Bearer " + key)
    except AuthError as exc:
        return _page("Log in", _key_form(request, str(exc)), exc.status)
    if principal.jwt is not None:
        # A scoped JWT is a narrowed credential for inference, not a team login.
        message = "Scoped JWTs cannot sign in; use an API key."
        return _page("Log in", _key_form(request, message), 403)
    return await _signed_in(
        request,
        principal.account_id,
        principal.role,
        user_id=principal.user_id,
        key_name=principal.key_name,
    )


async def logout(request: Request) -> Response:
    session = await dash_session(request)
    form = await request.form()
    if session is not None and not check_csrf(session, form.get("csrf")):
        return _page("Log out", '<p role="alert">Invalid CSRF token.</p>', 403)
    token = request.cookies.get(SESSION_COOKIE)
    if session is not None and token:
        await asyncio.to_thread(_gateway(request).auth.teams.close_session, token)
    response = _redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- the flow -----------------------------------------------------------------------------------


async def _start(request: Request, team: str) -> Response:
    team = team.strip()[:200]
    if not team:
        return _page("SSO login", _sso_form(request, "Enter your Team ID."), 400)
    sso = await asyncio.to_thread(_gateway(request).auth.teams.sso, team)
    if sso is None:
        # One answer for both cases: the page does not tell which teams exist.
        message = f"Team `{team}` has no single sign-on (unknown Team ID, or not set up)."
        return _page("SSO login", _sso_form(request, message), 404)
    redirect_uri = str(request.base_url).rstrip("/") + "/sso/callback"
    try:
        url, sealed = await _oidc(request).start(sso, redirect_uri)
    except OidcError as exc:
        log.info("sso start refused", extra={"reason": exc.message})
        return _page("SSO login", _sso_form(request, exc.message), exc.status)
    response = RedirectResponse(url, 303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        LOGIN_COOKIE,
        sealed,
        max_age=LOGIN_MAX_AGE_S,
        path=_login_cookie_path(request),
        secure=_https(request),
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to the callback
    )
    return response


async def _signed_in(
    request: Request,
    account_id: str,
    role: str,
    *,
    user_id: str | None = None,
    key_name: str | None = None,
) -> Response:
    teams = _gateway(request).auth.teams
    ttl_s = _gateway(request).settings.session_ttl_s
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await asyncio.to_thread(teams.close_session, previous)  # one session per browser
    token = await asyncio.to_thread(
        teams.open_session,
        account_id,
        role,
        ttl_s,
        user_id=user_id,
        key_name=key_name,
    )
    response = _redirect(request, "/dash")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl_s),
        path="/",
        secure=_https(request),
        httponly=True,
        samesite="lax",
    )
    return response


# -- plumbing -----------------------------------------------------------------------------------


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _oidc(request: Request) -> OidcClient:
    # One per app: it caches discovery documents, key sets and consumed states.
    state = request.app.state
    client = getattr(state, "oidc", None)
    if client is None:
        client = state.oidc = OidcClient(_gateway(request).auth.vault)
    return client


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") + "/sso"  # only the callback needs it


def _root(request: Request) -> str:
    return escape(request.scope.get("root_path", ""))


def _cross_site(request: Request) -> bool:
    """A sign-in form posted from another site (login CSRF: signing the victim into the
    attacker's team). Fetch metadata, not Origin: it survives a TLS-terminating proxy."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def _refused_cross_site() -> Response:
    return _page("Log in", '<p role="alert">Cross-site sign-in refused.</p>', 403)


def _redirect(request: Request, path: str) -> Response:
    return RedirectResponse(
        request.scope.get("root_path", "") + path, 303, headers={"Cache-Control": "no-store"}
    )


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} · inferd</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        status,
        headers=_HEADERS,
    )


def _alert(message: str | None) -> str:
    return f'<p role="alert">{escape(message)}</p>' if message else ""


def _sso_form(request: Request, error: str | None = None) -> str:
    return (
        f"{_alert(error)}"
        f'<form method="post" action="{_root(request)}/login_sso">'
        '<label for="team">Team ID</label>'
        '<input id="team" name="team" required autocomplete="organization" '
        'autocapitalize="none" spellcheck="false">'
        '<button type="submit">SSO Login</button></form>'
        f'<p><a href="{_root(request)}/login">Log in with an API key</a></p>'
    )


def _key_form(request: Request, error: str | None = None) -> str:
    return (
        f"{_alert(error)}"
        f'<form method="post" action="{_root(request)}/login">'
        '<label for="api_key">API key</label>'
        '<input id="api_key" name="api_key" type="password" required autocomplete="off">'
        '<button type="submit">Log in</button></form>'
        f'<p><a href="{_root(request)}/login_sso">Corporate SSO</a></p>'
    )


routes = [
    Route("/login_sso", login_sso_form, methods=["GET"], include_in_schema=False),
    Route("/login_sso", login_sso, methods=["POST"], include_in_schema=False),
    Route("/sso/callback", callback, methods=["GET"], include_in_schema=False),
    Route("/sso/{team}/login", team_login, methods=["GET"], include_in_schema=False),
    Route("/login", login_form, methods=["GET"], include_in_schema=False),
    Route("/login", login, methods=["POST"], include_in_schema=False),
    Route("/logout", logout, methods=["POST"], include_in_schema=False),
]
