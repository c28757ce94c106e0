"""Billing by uptime: every second an instance of a deployed version is ready (from its worker's
Ready to its stop) costs `num_gpus x pool price per GPU-hour / 3600`. Observed each
reconciler tick and just before an instance is stopped; written to the usage ledger as one
`deployment_uptime` row per version every `flush_s` (and at shutdown), so `/v1/usage` and
spending limits see it like any other cost. GPU containers `add` their running seconds the
same way (`container_uptime` rows)."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from inferd.billing.ledger import UPTIME_ROUTE, UsageLedger, UsageRecord
from inferd.runtime.backend import ModelDeployment

_IDS = itertools.count(1)
_PREFIX = secrets.token_hex(4)


@dataclass
class _Open:
    """Uptime of one version not yet written: instance-seconds and their cost."""

    account_id: str
    model: str
    route: str
    seconds: float = 0.0
    cost: float = 0.0
    since: float = 0.0  # monotonic, when this period began
    started_at: datetime | None = None


class UptimeMeter:
    def __init__(self, ledger: UsageLedger, flush_s: float) -> None:
        self.ledger = ledger
        self.flush_s = flush_s
        self._seen: dict[int, float] = {}  # id(replica) → up to when it was counted
        self._open: dict[str, _Open] = {}  # deploy_id (container id) → uncommitted uptime

    def observe(
        self,
        deploy_id: str,
        account_id: str,
        model: str,
        deployment: ModelDeployment,
        usd_per_instance_hour: float,
        now: float | None = None,
    ) -> None:
        """Count the ready time of the version's replicas up to `now`."""
        now = time.monotonic() if now is None else now
        seconds = 0.0
        for replica in deployment.replicas:
            ready_since = getattr(replica, "ready_since", None)
            if ready_since is None:
                self._seen.pop(id(replica), None)
                continue
            counted = max(ready_since, self._seen.get(id(replica), ready_since))
            seconds += max(0.0, now - counted)
            self._seen[id(replica)] = now
        self.add(deploy_id, account_id, model, seconds, usd_per_instance_hour, now=now)

    def add(
        self,
        key: str,
        account_id: str,
        model: str,
        seconds: float,
        usd_per_hour: float,
        route: str = UPTIME_ROUTE,
        now: float | None = None,
    ) -> None:
        """Count `seconds` of something billed by the hour (an instance, a container)."""
        if seconds <= 0:
            return
        now = time.monotonic() if now is None else now
        period = self._open.get(key)
        if period is None:
            period = self._open[key] = _Open(
                account_id, model, route, since=now, started_at=datetime.now(UTC)
            )
        period.seconds += seconds
        period.cost += seconds * usd_per_hour / 3600.0

    def flush(self, force: bool = False, now: float | None = None) -> list[tuple[str, float]]:
        """Write the periods older than `flush_s` (all with `force`); (account, cost) of each,
        for the budgets."""
        now = time.monotonic() if now is None else now
        written = []
        for deploy_id, period in list(self._open.items()):
            if not force and now - period.since < self.flush_s:
                continue
            del self._open[deploy_id]
            written.append((period.account_id, period.cost))
            self.ledger.record(
                UsageRecord(
                    request_id=f"uptime-{_PREFIX}-{next(_IDS):x}",
                    account_id=period.account_id,
                    key_name="",
                    jwt_id=None,
                    model=period.model,
                    route=period.route,
                    status=200,
                    prompt_tokens=0,
                    completion_tokens=0,
                    cost=period.cost,
                    started_at=period.started_at or datetime.now(UTC),
                    duration_ms=int(period.seconds * 1000),
                )
            )
        return written
