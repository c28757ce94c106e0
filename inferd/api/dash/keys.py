"""API keys (create, show once, copy, revoke) and scoped JWTs, as /v1/api-tokens and
/v1/scoped-jwt do them."""

from __future__ import annotations

from starlette.responses import Response

from inferd.api.dash.render import Dash, Refused, blocking, view
from inferd.auth.accounts import Conflict
from inferd.auth.scoped_jwt import ScopedJwtError, mint


async def _keys_page(dash: Dash, **values) -> Response:
    keys = await blocking(dash.gateway.auth.accounts.list_keys, dash.session.account_id)
    return dash.page("api_keys.html", title="API keys", keys=keys, **values)


@view
async def api_keys(dash: Dash) -> Response:
    return await _keys_page(dash)


@view
async def create_key(dash: Dash) -> Response:
    form = await dash.form()
    name = form.get("name", "").strip()
    if not name or len(name) > 200 or not all(c.isalnum() or c in "._-" for c in name):
        return await _keys_page(dash, error="A key name is 1-200 letters, digits, `.`, `_`, `-`.")
    try:
        created = await blocking(
            dash.gateway.auth.accounts.create_key,
            dash.session.account_id,
            name,
            None,
            dash.session.user_id,  # the key acts with its creator's role
        )
    except Conflict as exc:
        return await _keys_page(dash, error=str(exc))
    return await _keys_page(dash, created=created, notice=f"Key `{name}` created.")


@view
async def revoke_key(dash: Dash) -> Response:
    await dash.form()
    name = dash.request.path_params["name"]
    evict = await blocking(dash.gateway.auth.accounts.delete_key, dash.session.account_id, name)
    if evict is None:
        return await _keys_page(dash, error=f"No API key named `{name}`.")
    await dash.request.app.state.revocations.revoke(dash.session.account_id, evict)
    return await _keys_page(dash, notice=f"Key `{name}` revoked: it stopped working.")


@view
async def create_jwt(dash: Dash) -> Response:
    form = await dash.form()
    models = [m.strip() for m in form.get("models", "").split(",") if m.strip()] or None
    try:
        hours = float(form.get("hours") or 24)
        if not 0 < hours <= 24 * 365:
            raise ValueError
    except ValueError:
        return await _keys_page(dash, error="Expiry: a number of hours, at most a year.")
    limit = form.get("spending_limit", "").strip()
    try:
        token = await blocking(
            mint,
            dash.gateway.auth,
            dash.principal,
            form.get("api_key_name", ""),
            models,
            int(hours * 3600),
            None,
            float(limit) if limit else None,
        )
    except (ScopedJwtError, ValueError) as exc:
        raise Refused(str(exc)) from None
    return await _keys_page(dash, token=token, notice="Scoped JWT created.")
