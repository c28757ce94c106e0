"""schemathesis' stateful phase over the live OpenAPI document (issue 17, bad input and attacks):
the document's links (declared on the endpoints, `Link` in inferd/api/endpoint.py) chain create
→ get → update → delete for API keys, deployments, files, batches, containers and routes, with
ids taken from each response. Three runs on a server of their own, each with a fixed seed,
bounded scenarios, steps and seconds, and exactly the four response checks of
tests/test_schemathesis.py; every run ends with zero failures:

- as a non-admin account (a team member's key), valid requests only: the NDJSON report shows
  the linked transitions ran, answered 2xx, up to each resource's read, update and delete;
- as that member, valid and invalid requests mixed: invalid bodies and parameters reach
  resources that exist through the same links;
- unauthenticated: half the creates carry the member's key (tests/reliability/stateful_hooks.py)
  so resources exist; every other request, the linked steps on those resources included, goes
  without credentials (or with generated ones) and must get 401.

The server makes every resource cheap: deployments fail at once (the hub is a closed port), a
container fails at once (its image is not on the machine, so podman never runs one), batch
lines go to a null model, and the GPU pool is large enough that capacity is never the answer.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, NULL_CATALOG, NULL_MODEL, Server, free_port

ROOT = Path(__file__).parents[2]
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
SEED = 1
# A run is up to RUNS invocations of `st` with seeds SEED, SEED + 1, ..., each one suite of at
# most SCENARIOS scenarios of STEPS steps (tests/reliability/stateful.toml), until what the
# test needs ran. A suite ends early when Hypothesis replays a prefix and the server, whose
# state moved on, answers differently (a "flaky" replay to it; expected of a stateful API), so
# the work is bounded by count, not by a clock that a loaded machine would eat into. On two
# idle cores each run takes one or two invocations of 10-20 s.
SCENARIOS = 100
RUNS = 6
OWNER = "stateful"
POOL = "A100-80GB"
IMAGE = "inferd-none:latest"  # offered, but mapped to an image that is on no machine
BRIDGE = "inferd-st1"
# The header the hooks add to the requests they send with the member's key (not imported: the
# hooks module registers schemathesis hooks for the whole process that imports it).
MARKER = "X-Stateful-As"
# Admin-only (403 to a member) or a hub double away (400): the fuzzing phases of
# tests/test_schemathesis.py cover them; here they would only spend scenarios.
EXCLUDED = ("create_account_v1_accounts_post", "deploy_lora_lora_model_post")
# Linked steps that must have run with a 2xx in the member's valid run: these walks, and for
# each kind of resource its read, update and delete reached through some link (the Files and
# Batch APIs under `/v1/openai` count as under `/v1`).
MEMBER_WALKS = [
    ("POST /v1/routes", "GET /v1/routes/{name}"),
    ("POST /v1/api-tokens", "DELETE /v1/api-tokens/{name}"),
]
MEMBER_TARGETS = {
    "keys": ["POST /v1/scoped-jwt", "DELETE /v1/api-tokens/{name}"],
    "deployments": [
        "GET /deploy/{deploy_id}",
        "PUT /deploy/{deploy_id}",
        "DELETE /deploy/{deploy_id}",
    ],
    "files": [
        "GET /v1/files/{file_id}",
        "GET /v1/files/{file_id}/content",
        "DELETE /v1/files/{file_id}",
    ],
    "batches": [
        "POST /v1/batches",
        "GET /v1/batches/{batch_id}",
        "POST /v1/batches/{batch_id}/cancel",
    ],
    "containers": [
        "GET /v1/containers/{container_id}",
        "PATCH /v1/containers/{container_id}",
        "DELETE /v1/containers/{container_id}",
    ],
    "routes": ["GET /v1/routes/{name}", "PUT /v1/routes/{name}", "DELETE /v1/routes/{name}"],
}
# Linked steps that must have been sent without credentials (and refused) in the other run.
UNAUTHENTICATED_TARGETS = [
    "GET /v1/routes/{name}",
    "DELETE /v1/api-tokens/{name}",
    "DELETE /v1/files/{file_id}",
    "DELETE /deploy/{deploy_id}",
    "DELETE /v1/containers/{container_id}",
]


@dataclass(frozen=True)
class Step:
    """One request of a scenario, from the NDJSON report."""

    operation: str  # "METHOD /path/{template}"
    source: str | None  # the operation whose response the link took values from
    status: int | None  # None: no response (a network error)
    negative: bool  # generated to violate the schema
    keyed: bool  # sent with the member's key by the hooks' choice (the unauthenticated run)


@dataclass
class Run:
    """The JSON reports and the steps of one or more invocations of `st`."""

    reports: list[dict[str, Any]]
    steps: list[Step]

    def linked(self, source: str, target: str, statuses: range) -> int:
        return sum(
            1
            for s in self.steps
            if (s.source, s.operation) == (source, target) and s.status in statuses
        )

    def reached(self, statuses: range) -> set[str]:
        """Operations some linked step reached with one of `statuses` (`/v1/openai` as `/v1`)."""
        return {
            s.operation.replace("/v1/openai/", "/v1/")
            for s in self.steps
            if s.source and s.status in statuses
        }

    def transitions(self) -> Counter[tuple[str, str, int | None]]:
        return Counter((s.source, s.operation, s.status) for s in self.steps if s.source)

    def summary(self) -> str:
        lines = [f"{n:4} {a} -> {b}: {status}" for (a, b, status), n in self.transitions().items()]
        return "\n".join(sorted(lines, key=lambda line: line[5:]))


@pytest.fixture(scope="module")
def stateful_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("stateful")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_CATALOG": str(root / "catalog.toml"),
        "INFERD_GPU_QUOTA": "10000",
        # Nothing listens there: every deployment fails at its first download, at once.
        "INFERD_HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "INFERD_CONTAINERS": "true",
        "INFERD_CONTAINER_BRIDGE": BRIDGE,
        "INFERD_CONTAINER_SUBNET": "127.221.0.0/24",
    }
    server = Server(root, env)
    (server.home / "config.toml").write_text(
        f'[[pools]]\nname = "{POOL}"\ncount = 64\nusd_per_hour = 72.0\nemulated = true\n\n'
        f'[container_images]\n"{IMAGE}" = "localhost/inferd-stateful-absent:never"\n'
    )
    server.start(timeout=300)
    yield server
    server.stop()
    for family in ("inet", "bridge"):
        table = "inferd_" + BRIDGE.replace("-", "_")
        subprocess.run(["nft", "delete", "table", family, table], check=False)


@pytest.fixture(scope="module")
def member_key(stateful_server: Server) -> str:
    """A team member's key of a non-admin account (the owner prefix `stateful/`)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    account = httpx.post(stateful_server.url + "/v1/accounts", headers=admin, json={"name": OWNER})
    assert account.status_code == 200, account.text
    inferd = [sys.executable, "-m", "inferd", "teams"]
    cli = functools.partial(
        subprocess.run, env=stateful_server.env, capture_output=True, text=True, check=True
    )
    cli([*inferd, "add-member", OWNER, "st@example.test", "--role", "member"])
    # A name the run cannot guess: its DELETE /v1/api-tokens/{name} never revokes this key.
    name = "st-member-" + os.urandom(6).hex()
    return cli([*inferd, "key", OWNER, "st@example.test", "--name", name]).stdout.strip()


def run_stateful(
    server: Server,
    tmp_path: Path,
    mode: str,
    enough: Callable[[Run], bool],
    *,
    key: str | None,
    create_key: str | None = None,
    runs: int = RUNS,
) -> Run:
    """`st run --phases stateful` until `enough` holds of the steps of all invocations so far,
    or `runs` are done; every invocation must end without a failure or an error."""
    run = Run([], [])
    for attempt in range(runs):
        report, steps = invoke_st(
            server, tmp_path / f"seed{SEED + attempt}", SEED + attempt, mode, key, create_key
        )
        run.reports.append(report)
        run.steps.extend(steps)
        if enough(run):
            break
    print(f"{len(run.reports)} invocation(s), {len(run.steps)} requests:\n{run.summary()}")
    return run


def invoke_st(
    server: Server, out: Path, seed: int, mode: str, key: str | None, create_key: str | None
) -> tuple[dict[str, Any], list[Step]]:
    out.mkdir()
    report = out / "report.json"
    events = out / "events.ndjson"
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(ROOT / "tests" / "reliability" / "stateful.toml"),
        "run",
        server.url + "/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "stateful",
        "--mode",
        mode,
        "--seed",
        str(seed),
        "--max-examples",
        str(SCENARIOS),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--generation-database",
        "none",
        *[arg for op in EXCLUDED for arg in ("--exclude-operation-id", op)],
        *(["--header", f"Authorization: Bearer {key}"] if key else []),
        "--report",
        "json,ndjson",
        "--report-json-path",
        str(report),
        "--report-ndjson-path",
        str(events),
        "--no-color",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INFERD_ST_OWNER": OWNER,
        "INFERD_ST_MODEL": NULL_MODEL,
        "INFERD_ST_POOL": POOL,
        "INFERD_ST_IMAGE": IMAGE,
        "INFERD_ST_CREATE_KEY": create_key or "",
    }
    done = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    print(output[-1500:])  # the summary: scenarios, links covered, running time
    assert report.exists() and events.exists(), output[-5000:]
    result = json.loads(report.read_text())
    assert result["complete"], output[-5000:]
    assert not result["failures"] and not result["errors"], output[-20000:]
    assert done.returncode == 0, output[-5000:]
    assert result["phases"]["stateful"]["status"] == "success", result["phases"]
    return result, read_steps(events)


def read_steps(events: Path) -> list[Step]:
    """Every request of the stateful phase: its operation, the link it followed and its answer."""
    steps = []
    for line in events.read_text().splitlines():
        kind, data = next(iter(json.loads(line).items()))
        if kind != "ScenarioFinished":
            continue
        recorder = data["recorder"]
        cases = recorder.get("cases", {})
        for case_id, node in cases.items():
            interaction = recorder.get("interactions", {}).get(case_id)
            if interaction is None:
                continue  # generated, never sent
            case = node["value"]
            transition = node.get("transition")
            source = None
            if transition is not None and node.get("is_transition_applied"):
                parent = cases[transition["parent_id"]]["value"]
                source = f"{parent['method']} {parent['path']}"
            response = interaction.get("response")
            mode = case.get("meta", {}).get("generation", {}).get("mode")
            headers = {k.lower() for k in interaction["request"].get("headers", {})}
            steps.append(
                Step(
                    operation=f"{case['method']} {case['path']}",
                    source=source,
                    status=response["status_code"] if response else None,
                    negative=mode == "negative",
                    # A negative case may drop the header the hook set ("violates required").
                    keyed={MARKER.lower(), "authorization"} <= headers,
                )
            )
    return steps


def member_walked(run: Run) -> bool:
    return not missing_walks(run) and not any(unreached(run).values())


def missing_walks(run: Run) -> list[tuple[str, str]]:
    return [walk for walk in MEMBER_WALKS if not run.linked(*walk, range(200, 300))]


def unreached(run: Run) -> dict[str, set[str]]:
    reached = run.reached(range(200, 300))
    return {kind: set(ops) - reached for kind, ops in MEMBER_TARGETS.items() if set(ops) - reached}


@pytest.mark.timeout(600)
def test_stateful_as_a_member(stateful_server: Server, member_key: str, tmp_path: Path) -> None:
    ok = range(200, 300)
    run = run_stateful(stateful_server, tmp_path, "positive", member_walked, key=member_key)
    missing = missing_walks(run)
    assert not missing, f"linked transitions that never ran with a 2xx: {missing}\n{run.summary()}"
    assert not unreached(run), f"{unreached(run)}\n{run.summary()}"
    # A delete is final from its answer on: no start brings the version back while the
    # reconciler still stops it (it did, found by this run).
    assert not run.linked("DELETE /deploy/{deploy_id}", "POST /deploy/{deploy_id}/start", ok)
    assert_key_works(stateful_server, member_key)


@pytest.mark.timeout(300)
def test_stateful_bad_input_as_a_member(
    stateful_server: Server, member_key: str, tmp_path: Path
) -> None:
    """Valid and invalid requests mixed: invalid bodies reach resources that exist through the
    links (ids from the responses, the rest generated to break the schema), and are refused
    with a documented 4xx (anything else is a failure of the invocation)."""

    def bad_input_reached(run: Run) -> bool:
        return any(s.source and s.negative and s.status != 401 for s in run.steps)

    run = run_stateful(stateful_server, tmp_path, "all", bad_input_reached, key=member_key, runs=2)
    assert bad_input_reached(run), run.summary()
    assert_key_works(stateful_server, member_key)


@pytest.mark.timeout(600)
def test_stateful_unauthenticated(stateful_server: Server, member_key: str, tmp_path: Path) -> None:
    def refused_everywhere(run: Run) -> bool:
        return not missing_refusals(run)

    run = run_stateful(
        stateful_server, tmp_path, "all", refused_everywhere, key=None, create_key=member_key
    )
    anonymous = [s for s in run.steps if not s.keyed]
    refused = Counter(s.status for s in anonymous)
    assert set(refused) == {401}, refused
    assert 401 not in {s.status for s in run.steps if s.keyed}
    missing = missing_refusals(run)
    assert not missing, f"linked steps never sent without a key: {missing}\n{run.summary()}"


def missing_refusals(run: Run) -> set[str]:
    """The linked steps of UNAUTHENTICATED_TARGETS that no request without a key reached."""
    reached = {
        s.operation.replace("/v1/openai/", "/v1/") for s in run.steps if s.source and not s.keyed
    }
    return set(UNAUTHENTICATED_TARGETS) - reached


def assert_key_works(server: Server, key: str) -> None:
    """The run never revoked the key it runs with (its DELETEs name only keys it created)."""
    me = httpx.get(server.url + "/v1/api-tokens", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200, me.text


def test_links_chain_every_resource() -> None:
    """The document's links, as declared on the endpoints: each create leads to its resource's
    read, update and delete; a link to an operation or a parameter that does not exist, or
    after a status the endpoint does not answer, is refused when the document is built."""
    from starlette.responses import JSONResponse

    from inferd.api.app import create_app
    from inferd.api.endpoint import JSON, Endpoint, Link, Reply
    from inferd.api.openapi import build_openapi
    from inferd.config import Settings

    document = build_openapi(create_app(Settings(catalog=None)).routes)
    by_id = {
        operation["operationId"]: f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    edges = {
        (by_id[operation["operationId"]], by_id[link["operationId"]])
        for item in document["paths"].values()
        for operation in item.values()
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    }
    creates = {
        "keys": "POST /v1/api-tokens",
        "deployments": "POST /deploy/llm",
        "files": "POST /v1/files",
        "batches": "POST /v1/batches",
        "containers": "POST /v1/containers",
        "routes": "POST /v1/routes",
    }
    for kind, create in creates.items():
        for target in set(MEMBER_TARGETS[kind]) - {create}:
            assert (create, target) in edges or any(
                (create, via) in edges and (via, target) in edges for via in MEMBER_TARGETS[kind]
            ), (create, target)
    assert set(MEMBER_WALKS) <= edges

    async def handler(request: Any) -> JSONResponse:
        return JSONResponse({})

    def endpoint(path: str, method: str, *links: Link) -> Endpoint:
        reply = {200: Reply("x", {JSON: dict})}
        return Endpoint(path, handler, method, responses=reply, links=links)

    item = endpoint("/things/{thing_id}", "GET")
    good = endpoint("/things", "POST", Link("GET", "/things/{thing_id}", {"thing_id": "$r"}))
    assert build_openapi([good, item])["paths"]["/things"]["post"]["responses"]["200"]["links"]
    for bad in (
        endpoint("/things", "POST", Link("GET", "/nothing/{thing_id}", {"thing_id": "$r"})),
        endpoint("/things", "POST", Link("GET", "/things/{thing_id}", {"other": "$r"})),
    ):
        with pytest.raises(ValueError):
            build_openapi([bad, item])
    with pytest.raises(ValueError):
        endpoint("/things", "POST", Link("GET", "/things/{thing_id}", status=201))


def test_a_deleted_deployment_stays_deleted(stateful_server: Server, member_key: str) -> None:
    """Start, stop and update right after a DELETE answer 404, whether or not the reconciler
    has stopped the version yet, and the version ends deleted."""
    api = httpx.Client(
        base_url=stateful_server.url, headers={"Authorization": f"Bearer {member_key}"}
    )
    body = {"model_name": "st-gone", "gpu": POOL, "hf": {"repo": "st-models/none"}}
    deploy_id = api.post("/deploy/llm", json=body).json()["deploy_id"]
    assert api.delete(f"/deploy/{deploy_id}").status_code == 200
    assert api.post(f"/deploy/{deploy_id}/start").status_code == 404
    assert api.post(f"/deploy/{deploy_id}/stop").status_code == 404
    assert api.put(f"/deploy/{deploy_id}", json={"settings": {}}).status_code == 404
    assert api.delete(f"/deploy/{deploy_id}").status_code in (200, 404)
    deleted = api.get("/deploy/list", params={"status": "deleted"}).json()
    for _ in range(50):
        if deploy_id in {d["deploy_id"] for d in deleted}:
            break
        time.sleep(0.2)
        deleted = api.get("/deploy/list", params={"status": "deleted"}).json()
    assert deploy_id in {d["deploy_id"] for d in deleted}
    assert deploy_id not in {d["deploy_id"] for d in api.get("/deploy/list").json()}
