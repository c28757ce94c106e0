"""What every dashboard page shares: the signed-in session, the page layout, CSRF-checked forms.

Pages are rendered on the server (Jinja2, autoescaped) from the same services the API uses;
a session acts with the role of the user (or key) that signed in, checked again on every
request, so a member demoted or removed loses access at once. The dashboard is not part of
the OpenAPI document."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from inferd.api.gateway import Gateway
from inferd.api.sso.routes import check_csrf, dash_session
from inferd.auth import Principal
from inferd.auth.teams import ADMIN, Session

TEMPLATES = Environment(
    loader=PackageLoader("inferd.api.dash", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

# (path, label, admins only): the sidebar, in the order the hosted dashboard has them.
NAV = (
    ("/dash", "Overview", False),
    ("/dash/api_keys", "API keys", False),
    ("/dash/usage", "Usage", False),
    ("/dash/deployments", "Deployments", False),
    ("/dash/instances", "GPU instances", False),
    ("/dash/playground", "Playground", False),
    ("/dash/webhooks", "Webhooks", False),
    ("/dash/team", "Team", False),
    ("/dash/billing", "Billing", True),
    ("/dash/account", "Account", False),
)


class Refused(Exception):
    """A page or form the session may not use: rendered as a 403 page."""


@dataclass
class Dash:
    """One dashboard request: its session and the principal it acts as."""

    request: Request
    session: Session
    principal: Principal

    @property
    def gateway(self) -> Gateway:
        return self.request.app.state.gateway

    @property
    def is_admin(self) -> bool:
        return self.session.role == ADMIN

    @property
    def actor(self) -> str:
        """Who acts, for the audit log: the signed-in user, else the key that signed in."""
        s = self.session
        return f"user:{s.email}" if s.email else f"key:{s.key_name}"

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Refused(f"Only a team admin may {what}.")

    async def form(self) -> dict[str, str]:
        """The posted form, once its CSRF token matched the session's."""
        form = await self.request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not check_csrf(self.session, fields.get("csrf", "")):
            raise Refused("The form expired or did not come from this dashboard; reload it.")
        return fields

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        path = self.request.url.path
        nav = [
            (href, label, href == path or (href != "/dash" and path.startswith(href + "/")))
            for href, label, admins in NAV
            if self.is_admin or not admins
        ]
        html = TEMPLATES.get_template(template).render(
            nav=nav, session=self.session, csrf=self.session.csrf, **values
        )
        return HTMLResponse(html, status_code=status, headers=NO_STORE)


# Pages show secrets once (a new key): never cached, never framed.
NO_STORE = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
}


def fragment(dash: Dash, template: str, block: str, **values: Any) -> HTMLResponse:
    """One block of a page (what `data-refresh` swaps in), rendered with the page's values."""
    page = TEMPLATES.get_template(template)
    context = page.new_context({"session": dash.session, "csrf": dash.session.csrf, **values})
    return HTMLResponse("".join(page.blocks[block](context)), headers=NO_STORE)


async def signed_in(request: Request) -> Dash | Response:
    """The request's dashboard context, or the redirect to the login page."""
    session = await dash_session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    gateway: Gateway = request.app.state.gateway
    principal = Principal(
        session.account_id,
        session.key_name or "dashboard",
        False,
        None,
        None,
        role=session.role,
        user_id=session.user_id,
    )
    try:
        principal = await gateway.auth.current(principal)  # limits and admin flag, now
    except Exception:  # the team is gone
        return RedirectResponse("/login", status_code=303)
    return Dash(request, session, principal)


def view(handler):
    """A dashboard handler: signed in, with refusals rendered as a 403 page."""

    async def endpoint(request: Request) -> Response:
        dash = await signed_in(request)
        if not isinstance(dash, Dash):
            return dash
        try:
            return await handler(dash)
        except Refused as exc:
            return dash.page("refused.html", status=403, reason=str(exc))

    endpoint.__name__ = handler.__name__
    return endpoint


async def blocking(fn, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)
