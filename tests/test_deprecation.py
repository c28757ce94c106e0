"""Model deprecation: a real server with null models (one past its date, one before it), the
official `openai` SDK and httpx for the headers and the replacement, and a real SMTP server on
loopback (aiosmtpd) receiving the notices."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from openai import OpenAI
from pydantic import SecretStr

from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.control.deprecation import DeprecationNotifier
from inferd.store.db import Database
from inferd.store.models import Account, Usage
from tests.conftest import ADMIN_KEY, Server, free_port

OLD, NEW = "test/old", "test/new"  # OLD is past its date: NEW serves it
SOON, NEXT = "test/soon", "test/next"  # SOON is deprecated in 10 days, within the notice window
PAST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
CANARY = "CANARY-" + secrets.token_hex(8)


def catalog_toml(future: datetime = FUTURE) -> str:
    def null(name: str, extra: str = "") -> str:
        return f'[[models]]\nname = "{name}"\ntask = "text-generation"\nengine = "null"\n{extra}'

    return "\n".join(
        [
            null(OLD, f'deprecated_at = 2020-01-01\nreplacement = "{NEW}"\n'),
            null(SOON, f'deprecated_at = {future.isoformat()}\nreplacement = "{NEXT}"\n'),
            null(NEW),
            null(NEXT),
        ]
    )


class Mailbox:
    """aiosmtpd's handler: every message received, as parsed emails."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.raw.append(envelope.content)
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


def server_env(root: Path, smtp_port: int) -> dict[str, str]:
    (root / "catalog.toml").write_text(catalog_toml())
    return {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_SMTP_HOST": "127.0.0.1",
        "INFERD_SMTP_PORT": str(smtp_port),
        "INFERD_SMTP_FROM": "Inferd <notices@inferd.test>",
        "INFERD_DEPRECATION_CHECK_INTERVAL_S": "0.3",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("deprecation")
    srv = Server(root, server_env(root, smtp[1])).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def sdk(server: Server) -> OpenAI:
    return OpenAI(api_key=ADMIN_KEY, base_url=server.url + "/v1/openai", max_retries=0)


def sunset_headers(headers: httpx.Headers, at: datetime, replacement: str) -> None:
    assert headers["deprecation"] == f"@{int(at.timestamp())}"
    assert parsedate_to_datetime(headers["sunset"]) == at
    assert headers["sunset"].endswith(" GMT")
    assert headers["link"] == f'</models/{replacement}>; rel="successor-version"'


# -- before the date: the model serves, the responses warn ---------------------------------


def test_before_the_date_headers_on_every_route(sdk: OpenAI, admin: httpx.Client) -> None:
    messages = [{"role": "user", "content": "hi"}]
    raw = sdk.chat.completions.with_raw_response.create(model=SOON, messages=messages)
    assert raw.status_code == 200
    assert raw.parse().model == SOON
    sunset_headers(raw.headers, FUTURE, NEXT)
    assert "x-inferd-served-by" not in raw.headers

    raw = sdk.completions.with_raw_response.create(model=SOON, prompt="hi", max_tokens=2)
    assert raw.parse().model == SOON
    sunset_headers(raw.headers, FUTURE, NEXT)

    raw = sdk.chat.completions.with_raw_response.create(model=SOON, messages=messages, stream=True)
    sunset_headers(raw.headers, FUTURE, NEXT)
    chunks = list(raw.parse())
    assert chunks and all(c.model == SOON for c in chunks)

    r = admin.post(f"/v1/inference/{SOON}", json={"input": "hi"})
    assert r.status_code == 200, r.text
    sunset_headers(r.headers, FUTURE, NEXT)
    assert "x-inferd-served-by" not in r.headers

    with admin.stream("POST", f"/v1/inference/{SOON}", json={"input": "hi", "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        sunset_headers(r.headers, FUTURE, NEXT)
        assert r.read()


def test_models_not_deprecated_carry_no_header(sdk: OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model=NEW, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.status_code == 200
    assert not {"deprecation", "sunset", "x-inferd-served-by"} & set(raw.headers)


# -- after the date: the replacement serves, never a 404 -----------------------------------


@pytest.mark.parametrize("model", [OLD, f"{OLD}:1"])
def test_after_the_date_the_replacement_serves(
    sdk: OpenAI, admin: httpx.Client, model: str
) -> None:
    messages = [{"role": "user", "content": "hi"}]
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=messages)
    assert raw.status_code == 200
    assert raw.parse().model == NEW
    assert raw.headers["x-inferd-served-by"] == NEW
    sunset_headers(raw.headers, PAST, NEW)

    raw = sdk.completions.with_raw_response.create(model=model, prompt="hi", stream=True)
    assert raw.headers["x-inferd-served-by"] == NEW
    assert {c.model for c in raw.parse()} == {NEW}

    r = admin.post(f"/v1/inference/{model}", json={"input": "hi"})
    assert r.status_code == 200, r.text
    assert r.headers["x-inferd-served-by"] == NEW
    sunset_headers(r.headers, PAST, NEW)


def test_after_the_date_usage_names_the_replacement(server: Server) -> None:
    account = new_account(server)
    chat(server, account["api_key"], OLD)
    r = httpx.get(
        server.url + "/v1/usage", headers={"Authorization": f"Bearer {account['api_key']}"}
    )
    assert [row["model"] for row in r.json()["usage"]] == [NEW]


def test_a_token_scoped_to_the_old_model_keeps_working(server: Server) -> None:
    key = new_account(server)["api_key"]
    r = httpx.post(
        server.url + "/v1/scoped-jwt",
        headers={"Authorization": f"Bearer {key}"},
        json={"api_key_name": "auto", "models": [OLD]},
    )
    token = r.json()["token"]
    r = chat(server, token, OLD)
    assert r.status_code == 200, r.text
    assert r.headers["x-inferd-served-by"] == NEW
    assert chat(server, token, NEW).status_code == 403  # only through the old name


# -- model cards ---------------------------------------------------------------------------


def test_model_cards_show_the_date_and_replacement(sdk: OpenAI, admin: httpx.Client) -> None:
    old = admin.get(f"/models/{OLD}").json()
    assert old["model_name"] == OLD
    assert (old["deprecated_at"], old["replacement"]) == ("2020-01-01T00:00:00+00:00", NEW)
    soon = admin.get(f"/models/{SOON}").json()
    assert datetime.fromisoformat(soon["deprecated_at"]) == FUTURE
    assert soon["replacement"] == NEXT
    assert "deprecated_at" not in admin.get(f"/models/{NEW}").json()

    listed = {card["model_name"]: card for card in admin.get("/models/list").json()}
    assert listed[OLD]["replacement"] == NEW and listed[SOON]["replacement"] == NEXT
    card = sdk.models.retrieve(OLD)
    assert card.id == OLD
    assert card.model_extra["metadata"]["replacement"] == NEW
    by_id = {m.id: m.model_extra["metadata"] for m in sdk.models.list()}
    assert by_id[SOON]["deprecated_at"] == soon["deprecated_at"]


# -- contact email -------------------------------------------------------------------------


def new_account(server: Server, email: str | None = None) -> dict[str, str]:
    body = {"name": "acct-" + secrets.token_hex(4), **({"email": email} if email else {})}
    r = httpx.post(
        server.url + "/v1/accounts", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json=body
    )
    assert r.status_code == 200, r.text
    return r.json()


def chat(server: Server, credential: str, model: str, text: str = "hi") -> httpx.Response:
    return httpx.post(
        server.url + "/v1/openai/chat/completions",
        headers={"Authorization": f"Bearer {credential}"},
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )


def test_contact_email(server: Server, admin: httpx.Client) -> None:
    account = new_account(server, "first@example.com")
    auth = {"Authorization": f"Bearer {account['api_key']}"}
    listed = {a["id"]: a for a in admin.get("/v1/accounts").json()}
    assert listed[account["id"]]["email"] == "first@example.com"

    r = httpx.put(server.url + "/v1/me", headers=auth, json={"email": "second@example.com"})
    assert r.json() == {"id": account["id"], "name": account["name"], "email": "second@example.com"}
    listed = {a["id"]: a for a in admin.get("/v1/accounts").json()}
    assert listed[account["id"]]["email"] == "second@example.com"
    r = httpx.put(server.url + "/v1/me", headers=auth, json={"email": None})
    assert r.status_code == 200 and r.json()["email"] is None

    for bad in ["nope", "a@b@c", "x@example.com\r\nBcc: y@example.com", "a" * 255 + "@b.c", 3]:
        r = httpx.put(server.url + "/v1/me", headers=auth, json={"email": bad})
        assert r.status_code == 400, bad
        assert r.json()["error"]["param"] == "email"
    assert httpx.put(server.url + "/v1/me", headers=auth, json={}).status_code == 400
    r = admin.post("/v1/accounts", json={"name": "bad-" + secrets.token_hex(3), "email": "x"})
    assert r.status_code == 400
    assert httpx.put(server.url + "/v1/me", json={"email": "a@b.c"}).status_code == 401
    jwt = httpx.post(
        server.url + "/v1/scoped-jwt", headers=auth, json={"api_key_name": "auto"}
    ).json()["token"]
    r = httpx.put(
        server.url + "/v1/me", headers={"Authorization": f"Bearer {jwt}"}, json={"email": "a@b.c"}
    )
    assert r.status_code == 403


def test_put_me_is_documented(admin: httpx.Client) -> None:
    operation = admin.get("/openapi.json").json()["paths"]["/v1/me"]["put"]
    assert {"200", "400", "401", "403"} <= set(operation["responses"])


# -- notices -------------------------------------------------------------------------------


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_recent_users_are_told_once(
    server: Server, smtp: tuple[Mailbox, int], tmp_path: Path
) -> None:
    mailbox, smtp_port = smtp
    user = new_account(server, "user@example.com")  # uses SOON: told
    idle = new_account(server, "idle@example.com")  # uses another model only: not told
    silent = new_account(server)  # uses SOON without an email: not told
    assert chat(server, user["api_key"], SOON, f"secret {CANARY}").status_code == 200
    assert chat(server, user["api_key"], SOON).status_code == 200
    assert chat(server, idle["api_key"], NEW).status_code == 200
    assert chat(server, silent["api_key"], SOON).status_code == 200

    wait_for(lambda: mailbox.to("user@example.com"))
    (mail,) = mailbox.to("user@example.com")
    assert mail["From"] == "Inferd <notices@inferd.test>"
    assert SOON in mail["Subject"] and NEXT in mail["Subject"]
    assert FUTURE.strftime("%Y-%m-%d %H:%M UTC") in mail["Subject"]
    body = mail.get_content()
    assert user["name"] in body and SOON in body and NEXT in body
    assert not mail.is_multipart() and mail.get_content_type() == "text/plain"

    # Later rounds, and a second gateway on the same database, send nothing more.
    second = Server(tmp_path, {**server_env(tmp_path, smtp_port), "INFERD_HOME": str(server.home)})
    second.start()
    try:
        time.sleep(1.5)  # several rounds of both gateways
    finally:
        second.stop()
    assert len(mailbox.to("user@example.com")) == 1
    # Not `idle` (another model), nor the admin and `silent` (no email).
    assert {m["To"] for m in mailbox.messages} - {"window@example.com"} == {"user@example.com"}
    assert not any(CANARY.encode() in raw for raw in mailbox.raw)
    assert CANARY not in server.log_text() + second.log_text()
    assert "user@example.com" not in server.log_text()  # logs name the account id only


# -- the notifier, in process, at chosen moments -----------------------------------------------


def test_notice_window_and_retry(tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    """Not before `deprecation_notice_days` ahead; a failed send is retried next round."""
    mailbox, smtp_port = smtp
    db = Database(f"sqlite:///{tmp_path / 'inferd.db'}")
    db.migrate()
    with db.session() as s, s.begin():
        s.add(Account(id="acc_window", name="window", email="window@example.com"))
        s.add(
            Usage(
                request_id="r1",
                account_id="acc_window",
                key_name="auto",
                model=SOON,
                route="chat",
                status=200,
                started_at=datetime.now(UTC),
            )
        )
    catalog = Catalog.from_toml(catalog_toml(FUTURE))
    down = Settings(smtp_host="127.0.0.1", smtp_port=free_port())  # nothing listens there
    up = down.model_copy(update={"smtp_port": smtp_port})
    early = FUTURE - timedelta(days=up.deprecation_notice_days, seconds=1)
    assert asyncio.run(DeprecationNotifier(up, db, catalog).notify(early)) == 0
    assert asyncio.run(DeprecationNotifier(down, db, catalog).notify()) == 0  # no server
    assert asyncio.run(DeprecationNotifier(up, db, catalog).notify()) == 1
    assert asyncio.run(DeprecationNotifier(up, db, catalog).notify()) == 0
    # Two gateways racing past the query: the database lets one claim the notice.
    assert not DeprecationNotifier(up, db, catalog)._claim(SOON, "acc_window", datetime.now(UTC))
    assert len(mailbox.to("window@example.com")) == 1
    db.close()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # on loopback
def test_login_to_the_smtp_server(tmp_path: Path) -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        db = Database(f"sqlite:///{tmp_path / 'inferd.db'}")
        db.migrate()
        with db.session() as s, s.begin():
            s.add(Account(id="acc_login", name="login", email="login@example.com"))
            s.add(
                Usage(
                    request_id="r2",
                    account_id="acc_login",
                    key_name="auto",
                    model=SOON,
                    route="chat",
                    status=200,
                    started_at=datetime.now(UTC),
                )
            )
        catalog = Catalog.from_toml(catalog_toml())
        settings = Settings(smtp_host="127.0.0.1", smtp_port=controller.port, smtp_user="inferd")
        wrong = settings.model_copy(update={"smtp_password": SecretStr("nope")})
        right = settings.model_copy(update={"smtp_password": SecretStr("s3cret")})
        assert asyncio.run(DeprecationNotifier(wrong, db, catalog).notify()) == 0
        assert asyncio.run(DeprecationNotifier(right, db, catalog).notify()) == 1
        # smtplib tries each mechanism the server offers before it gives up.
        assert set(logins[:-1]) == {(b"inferd", b"nope")}
        assert logins[-1] == (b"inferd", b"s3cret")
        assert [m["To"] for m in mailbox.messages] == ["login@example.com"]
        db.close()
    finally:
        controller.stop()


def test_catalog_checks_replacements_and_moves_at_the_date() -> None:
    catalog = Catalog.from_toml(catalog_toml())
    catalog.clock = lambda: FUTURE.timestamp() - 1
    assert catalog.resolve(SOON).name == SOON
    catalog.clock = lambda: FUTURE.timestamp()
    assert catalog.resolve(SOON).name == NEXT
    assert catalog.resolve(f"{SOON}:1").stands_in_for.name == SOON  # type: ignore[union-attr]
    assert catalog.resolve(NEXT).stands_in_for is None

    def declare(extra: str, task: str = "text-generation") -> None:
        Catalog.from_toml(
            f'[[models]]\nname = "a"\ntask = "text-generation"\nengine = "null"\n{extra}\n'
            f'[[models]]\nname = "b"\ntask = "{task}"\nengine = "null"\n'
        )

    declare('deprecated_at = 2030-01-01T10:00:00\nreplacement = "b"')
    for extra, task, error in [
        ('deprecated_at = 2030-01-01\nreplacement = "nope"', "ocr", "not another model"),
        ('deprecated_at = 2030-01-01\nreplacement = "a"', "ocr", "not another model"),
        ('deprecated_at = 2030-01-01\nreplacement = "b"', "ocr", "is a ocr model"),
        ("deprecated_at = 2030-01-01", "ocr", "go together"),
        ('replacement = "b"', "ocr", "go together"),
    ]:
        with pytest.raises(ValueError, match=error):
            declare(extra, task)
    with pytest.raises(ValueError, match="deprecated itself"):
        Catalog.from_toml(
            catalog_toml() + f'\n[[models]]\nname = "c"\ntask = "text-generation"\n'
            f'engine = "null"\ndeprecated_at = 2030-01-01\nreplacement = "{OLD}"\n'
        )
