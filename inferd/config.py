"""Server settings: defaults, then a TOML file, then ``INFERD_*`` environment variables.

The file is ``$INFERD_CONFIG`` if set, else ``$INFERD_HOME/config.toml`` when it exists.
Environment variables win so that automation can override any file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ENV_PREFIX = "INFERD_"


class PoolConfig(BaseModel):
    """An accelerator pool the operator declares (`TYPE-MEMGB`, e.g. `A100-80GB`).

    `emulated = true` runs the pool's instances on the CPU: for testing the control plane
    (quota, billing, placement) on a machine without that hardware; never a default.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9]+-[0-9]+GB$")
    count: int = Field(ge=0)
    usd_per_hour: float = Field(ge=0)
    emulated: bool = False
    ray_num_cpus: float | None = Field(
        default=None, gt=0, description="CPUs a Ray replica on this pool reserves."
    )


class RouteTargetConfig(BaseModel):
    """A target of a route declared in the config file (see docs/routing.md)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    base_url: str | None = Field(
        default=None, description="An OpenAI-compatible provider's base URL (…/v1); unset: here."
    )
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the provider's API key."
    )
    weight: float = Field(default=1.0, gt=0)
    zero_retention: bool = False
    input_per_1m: float = Field(default=0.0, ge=0)
    output_per_1m: float = Field(default=0.0, ge=0)


class RouteConfig(BaseModel):
    """A route declared by the operator in the config file: public, read-only through the API."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=300)
    targets: list[RouteTargetConfig] = Field(min_length=1)
    policy: Literal["ordered", "weighted", "cheapest", "fastest"] = "ordered"
    task: Literal["text-generation", "embeddings"] = "text-generation"
    zero_retention: bool = False


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default=Path(".inferd"), description="Data directory (database, secrets).")
    host: str = "127.0.0.1"
    port: int = 8000
    catalog: Path | None = Field(
        default=None, description="Catalog TOML; the packaged default catalog when unset."
    )
    seed_catalog: bool = Field(
        default=True,
        description="Write the catalog's models into the database at start; when false, serve "
        "the built-in models the database already holds (another process seeds them).",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite under `home` when unset."
    )
    admin_key: str | None = Field(default=None, description="Admin API key to install at start.")
    master_key: str | None = Field(
        default=None, description="Server secret for key hashing; generated under `home` if unset."
    )
    model_cache: Path = Field(
        default=Path.home() / ".cache" / "inferd" / "models",
        description="Where converted model weights (GGUF → transformers) are kept.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for limits, budgets and revocations across gateways."
    )
    redis_prefix: str = "inferd"
    lease_ttl_s: float = 15.0
    ledger_flush_interval_s: float = 0.5
    log_level: str = "INFO"
    max_output_tokens: int = 16384
    default_native_max_new_tokens: int = 512
    # Room for a 20 MB image as a base64 data URL.
    max_request_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    max_images: int = 8
    max_audio_bytes: int = 25 * 1024 * 1024
    # Cost caps, checked before a request is admitted (inferd/api/caps.py); over → 400.
    max_image_pixels: int = Field(
        default=2048 * 2048, description="Text to image: width * height per image."
    )
    max_image_steps: int = Field(default=150, description="Text to image: num_inference_steps.")
    max_audio_seconds: float = Field(
        default=1800.0, description="Speech recognition: seconds of input audio."
    )
    max_tts_chars: int = Field(default=100_000, description="Text to speech: input characters.")
    fetch_timeout_s: float = 10.0
    fetch_allow_private: bool = Field(
        default=False, description="Let URL inputs reach private/loopback addresses (SSRF!)."
    )
    fetch_allow_hosts: str = Field(
        default="", description="Comma-separated host:port exempt from the private-address check."
    )
    dns_nameservers: str = Field(
        default="",
        description="DNS servers (comma-separated address:port) that resolve user-given URLs "
        "(inputs, webhooks); empty: the system resolver.",
    )
    concurrency_limit: int = 200
    drain_timeout_s: float = 30.0
    model_ready_timeout_s: float = 300.0
    worker_restart_backoff_s: float = 0.5
    # Where model replicas run: worker processes of this gateway, or a Ray cluster (Ray Serve).
    backend: Literal["local", "ray"] = Field(
        default="local", description="`local` (worker processes) or `ray` (a Ray cluster)."
    )
    ray_address: str | None = Field(
        default=None, description="The Ray cluster's GCS address, HOST:PORT (backend `ray`)."
    )
    ray_namespace: str = Field(default="inferd", description="Ray namespace of the driver.")
    ray_cpus_per_replica: float = Field(
        default=0.5, gt=0, description="CPUs each Ray replica reserves (fractions allowed)."
    )
    ray_health_check_period_s: float = Field(
        default=10.0, gt=0, description="How often Serve checks each replica."
    )
    ray_health_check_timeout_s: float = Field(
        default=30.0, gt=0, description="A replica silent this long is replaced."
    )
    ray_autoscale_look_back_s: float = Field(
        default=30.0, gt=0, description="The window Serve's autoscaler averages load over."
    )
    auth_cache_ttl_s: float = 2.0
    # Deployments (control/): accelerator pools, quota, weights from a Hugging Face hub.
    hf_endpoint: str | None = Field(
        default=None, description="Hugging Face hub URL for deployments (HF_ENDPOINT if unset)."
    )
    gpu_quota: int = Field(
        default=4, description="GPUs an account's deployments may hold (max_instances x num_gpus)."
    )
    cpu_pool: bool = Field(
        default=True, description="Offer this machine's CPU as a pool (`CPU-<memory>GB`)."
    )
    cpu_pool_slots: int = Field(default=4, ge=0, description="Instances the CPU pool can run.")
    cpu_pool_usd_per_hour: float = Field(default=0.10, ge=0, description="CPU pool price.")
    cpu_pool_ray_num_cpus: float | None = Field(
        default=None, gt=0, description="CPUs a Ray replica on the CPU pool reserves."
    )
    pools: list[PoolConfig] = Field(
        default_factory=list, description="Accelerator pools declared by the operator."
    )
    reconcile_interval_s: float = Field(
        default=1.0, gt=0, description="How often the control plane converges deployments."
    )
    uptime_flush_s: float = Field(
        default=60.0, gt=0, description="How often deployments' uptime is written as usage."
    )
    # Dashboard sign-in (api/sso, api/dash).
    forwarded_allow_ips: str | None = Field(
        default=None,
        description="Addresses of a TLS proxy in front (comma-separated, `*`: any) whose "
        "X-Forwarded-Proto/-For are trusted; unset: none.",
    )
    session_ttl_s: float = Field(
        default=12 * 3600, gt=0, description="A dashboard session ends this long after sign-in."
    )
    # GPU containers (control/containers.py) on this machine's podman.
    containers: bool = Field(
        default=True, description="Offer GPU containers (needs podman, runc and nftables)."
    )
    container_images: dict[str, str] = Field(
        default_factory=lambda: {"inferd-debian:bookworm": "localhost/inferd-debian:bookworm"},
        description="`container_image` names users may ask for → local podman images.",
    )
    container_memory_mb_per_gpu: int = Field(
        default=2048, ge=64, description="Memory cap of a container per GPU of its config."
    )
    container_cpus_per_gpu: float = Field(
        default=1.0, gt=0, description="CPU cap per GPU of its config (at most the machine's)."
    )
    container_pids_limit: int = Field(default=1024, ge=16, description="Processes per container.")
    container_max_lifetime_s: float = Field(
        default=7 * 86400, gt=0, description="A container is shut down after running this long."
    )
    container_start_timeout_s: float = Field(
        default=120.0, gt=0, description="A container whose SSH does not answer by then fails."
    )
    container_subnet: str = Field(
        default="127.213.0.0/24", description="Addresses of containers (a loopback range)."
    )
    container_bridge: str = Field(
        default="inferd-ct0", max_length=15, description="The containers' bridge interface."
    )
    container_reconcile_s: float = Field(
        default=2.0, gt=0, description="How often podman is compared with the database."
    )
    # Deprecation notices (control/deprecation.py), by email through the operator's SMTP server.
    smtp_host: str | None = Field(
        default=None, description="SMTP server for notices; none are sent when unset."
    )
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = Field(default="inferd@localhost", description="The notices' From address.")
    smtp_user: str | None = Field(default=None, description="SMTP login, if the server wants one.")
    # A SecretStr: a printed Settings (a traceback, a test failure) shows it as ******.
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS.")
    deprecation_check_interval_s: float = Field(
        default=3600.0, gt=0, description="How often accounts to notify are looked for."
    )
    deprecation_notice_days: int = Field(
        default=14,
        ge=7,
        description="Accounts that used a model in the last 30 days are told this many days "
        "before its deprecation date (at least 7).",
    )

    # Jobs (jobs/): webhooks and batch files, encrypted at rest under a key kept outside `home`.
    blob_dir: Path | None = Field(
        default=None,
        description="Where encrypted files and payloads are kept (`home/blobs` when unset). "
        "Gateways sharing a database must share this folder (a shared filesystem).",
    )
    blob_master_key: SecretStr | None = Field(
        default=None,
        description="Key that wraps every stored file's own key (hex or base64 of 32 bytes).",
    )
    blob_master_key_file: Path | None = Field(
        default=None,
        description="File holding that key, outside `home`; ~/.config/inferd/blob-master.key "
        "(created) when neither is set.",
    )
    webhooks_allow_hosts: str = Field(
        default="",
        description="host:port receivers exempt from the private-address check (comma-separated).",
    )
    webhooks_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000",
        description="Seconds between delivery attempts, comma-separated (with 10% jitter).",
    )
    webhooks_timeout_s: float = Field(default=10.0, gt=0, description="Per delivery attempt.")
    webhooks_resend_window_s: float = Field(
        default=86400.0,
        gt=0,
        description="How long after its last attempt a delivery can be "
        "resent; then its payload is purged.",
    )
    webhooks_queue_limit: int = Field(
        default=1000, ge=1, description="Webhook requests an account may have waiting to run."
    )
    webhooks_rotation_window_s: float = Field(
        default=86400.0, ge=0, description="After a rotation, the old secret signs too this long."
    )

    batch_discount: float = Field(
        default=0.5, ge=0, le=1, description="Share of the price taken off batch lines."
    )
    batch_concurrency: int = Field(
        default=2, ge=1, description="Batch lines one gateway process runs at a time."
    )
    batch_completion_window_s: float = Field(
        default=86400.0,
        gt=0,
        description="A batch's `24h` completion window, in seconds (shorter only for tests).",
    )

    batch_budget_retry_s: float = Field(
        default=30.0, gt=0, description="How often a paused batch's lines look for money."
    )

    # Routes (serving/routing.py): a name served by targets here or at other providers.
    routes: list[RouteConfig] = Field(
        default_factory=list, description="Operator routes (`[[routes]]` in the config file)."
    )
    route_failure_threshold: int = Field(
        default=3, ge=1, description="Failures in a row that put a route target in cooldown."
    )
    route_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long a failing target rests before a probe."
    )
    route_max_attempts: int = Field(
        default=3, ge=1, description="Targets one request may try (its retry budget)."
    )
    route_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connecting to a provider; then the next target."
    )
    route_first_byte_timeout_s: float = Field(
        default=60.0, gt=0, description="Until a provider's first token (or answer); then the next."
    )
    route_idle_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest silence in a provider's stream once it started."
    )

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'inferd.db').resolve()}"


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    data: dict[str, Any] = {}
    home = Path(os.environ.get(f"{ENV_PREFIX}HOME", ".inferd"))
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
    path = Path(config_file) if config_file else home / "config.toml"
    if path.is_file():
        with path.open("rb") as fh:
            data.update(tomllib.load(fh))
    for name in Settings.model_fields:
        env_value = os.environ.get(f"{ENV_PREFIX}{name.upper()}")
        if env_value is not None:
            data[name] = env_value
    data.update(overrides or {})
    return Settings.model_validate(data)
