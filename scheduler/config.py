"""Configuration: frozen pydantic models and :func:`load_config`.

``config.yaml`` is the single source of truth for tiers and their schedules. Strings may use
``${VAR}`` / ``${VAR:-default}`` interpolation from the environment; unknown keys are errors;
every problem is reported with its key path (``tiers.hourly.timeout: ...``) and the file name.
Relative paths resolve against the directory holding the config file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler import config_validate as check
from scheduler.kernel.errors import ConfigError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"30m"``, ``"1.5h"``, ``"7d"``; rejects negatives."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30, '30s', '30m', '2h' or '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(
                f"invalid duration {value!r}: expected seconds or a number with s/m/h/d/w"
            )
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}")
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return check.check_duration(seconds, high=check.MAX_DURATION_S, original=value)


def parse_timeout(value: object) -> float:
    """A duration that bounds a run or a wait: at most a week."""
    return check.check_duration(parse_duration(value), high=check.WEEK_S, original=value)


def _size_text(low: int, high: int, what: str) -> BeforeValidator:
    """A size kept as docker's text (``"4g"``), checked and bounded at load."""

    def validate(value: object) -> object:
        if value is None:
            return None
        size = check.bounded_size(value, low=low, high=high, what=what)
        return check.docker_size(size)

    return BeforeValidator(validate)


def _size_bytes(low: int, high: int, what: str) -> BeforeValidator:
    return BeforeValidator(lambda value: check.bounded_size(value, low=low, high=high, what=what))


Duration = Annotated[float, BeforeValidator(parse_duration)]
Timeout = Annotated[float, BeforeValidator(parse_timeout)]
ImageRef = Annotated[str, AfterValidator(check.check_image)]


class _Model(BaseModel):
    # defer_build: each model's validator is made when first used, not at import: a command
    # that takes its config from a snapshot (scheduler.config_cache) never validates one.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def check_host_name(value: str) -> str:
    """A daemon's host identity: what `schedctl runs` shows and ``tiers.<t>.hosts`` lists."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        raise ValueError(f"host name {value!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,62}}")
    return value


class ProjectConfig(_Model):
    """The project under test: a local ``path`` or a git ``repo`` to mirror."""

    path: Path | None = None
    repo: str | None = None
    branch: str | None = None
    python: str | None = Field(
        default=None, description="Interpreter for the local runner (default: schedctl's own)."
    )
    fetch_timeout: Duration = 120.0

    @model_validator(mode="after")
    def _one_source(self) -> ProjectConfig:
        if (self.path is None) == (self.repo is None):
            raise ValueError("set exactly one of project.path or project.repo")
        return self


class Thresholds(_Model):
    loss_rtol: float = Field(default=0.05, ge=0)
    min_efficiency: float = Field(default=0.7, ge=0, le=1.5)
    enforce_efficiency_on_cpu: bool = False


class TorchrunConfig(_Model):
    """Body of a ``kind: torchrun`` tier: the 1-vs-N distributed smoketest."""

    entry: str = Field(
        default="builtin", description="'builtin', a module (-m pkg.mod) or a script"
    )
    nproc: list[int | Literal["all"]] = Field(default_factory=lambda: [1, "all"])  # type: ignore[arg-type]
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    cpu_procs: int = Field(default=2, ge=1, description="N for 'all' when no GPU is leased")
    steps: int = Field(default=20, ge=2)
    args: list[str] = Field(default_factory=list)
    run_timeout: Timeout | None = None
    silence_timeout: Timeout = 120.0
    thresholds: Thresholds = Field(default_factory=Thresholds)
    inject_fault: Literal["none", "desync", "hang"] = "none"

    @field_validator("nproc")
    @classmethod
    def _positive_counts(cls, value: list[int | str]) -> list[int | str]:
        if not value:
            raise ValueError("nproc needs at least one entry, e.g. [1, all]")
        for i, n in enumerate(value):
            if isinstance(n, int) and n < 1:
                raise ValueError(f"nproc[{i}] must be >= 1 or 'all', got {n}")
        return value


class SlurmOptions(_Model):
    """sbatch settings of a tier on ``runner: slurm`` (each overrides the top-level ``slurm:``)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch_args: list[str] = Field(default_factory=list, description="Extra sbatch arguments")
    nodes: int = Field(default=1, ge=1, description="Nodes (torchrun tiers: the N-run's nodes)")
    cpus_per_task: int | None = Field(default=None, ge=1)


class SlurmConfig(SlurmOptions):
    """The Slurm runner: where run dirs go (a path every compute node sees) and sbatch defaults."""

    shared_dir: Path | None = Field(
        default=None,
        description="Run dirs of Slurm runs go under <shared_dir>/<instance>/ (default: state_dir)",
    )


class TierConfig(_Model):
    """One tier: what to run, when, and with which limits."""

    schedule: str | None = Field(default=None, description="5-field cron, crontab(5) semantics")
    enabled: bool = True
    kind: Literal["pytest", "torchrun", "build", "review"] = Field(
        default="pytest",
        description="'build' tiers come only from images: (image:NAME); 'review': the quarterly "
        "marker review (schedctl markers review) as one GitHub issue",
    )
    timeout: Timeout = 1800.0
    markers: str | None = None
    paths: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    coverage: bool = False
    coverage_source: list[str] = Field(default_factory=list)
    runner: Literal["auto", "local", "docker", "slurm"] | None = None
    slurm: SlurmOptions | None = None
    image: ImageRef | None = None
    memory: Annotated[str | None, _size_text(6 * check.MIB, 16 * check.TIB, "memory")] = "4g"
    shm_size: Annotated[str | None, _size_text(check.MIB, 16 * check.TIB, "shm_size")] = "1g"
    output_limit: Annotated[int, _size_bytes(check.MIB, 16 * check.TIB, "output_limit")] = Field(
        default=check.GIB, description="Bytes a run may write into its run dir (/work/out)"
    )
    network: bool = False
    pids_limit: int = Field(default=4096, ge=16, le=4_194_304)
    mounts: dict[str, str] = Field(
        default_factory=dict,
        description="Container runs: extra read-only binds, host path -> container path",
    )
    gpus: int | Literal["all"] = 0
    preempts: list[str] = Field(
        default_factory=list,
        description="Tiers whose GPU leases this tier may stop at its slot (they re-run after)",
    )
    silence_timeout: Timeout | None = Field(
        default=None, description="pytest tiers: no output for this long ends the run (timeout)"
    )
    priority: int | None = Field(
        default=None, ge=-1_000_000, le=1_000_000, description="Lower runs first; default by order"
    )
    misfire_grace: Timeout = 600.0
    max_catchup: int = Field(default=1, ge=0, le=1000)
    torchrun: TorchrunConfig | None = None
    reruns: int = Field(
        default=0, ge=0, le=10, description="Rerun failed tests up to N times (pytest tiers)"
    )
    flaky_fails_tier: bool = Field(
        default=False, description="A test that failed, then passed on a rerun, fails the run"
    )
    hosts: list[Annotated[str, AfterValidator(check_host_name)]] = Field(
        default_factory=list,
        description="Shared store: only daemons whose host is listed fire this tier (default: "
        "any; a slot still runs once)",
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            # APScheduler's own checks, without importing it (scheduler.daemon.crontab)
            from scheduler.daemon.crontab import UTC, CrontabSchedule

            CrontabSchedule(value, UTC)
            check.check_cron_fires(value)
        return value

    @field_validator("markers")
    @classmethod
    def _marker_expression(cls, value: str | None) -> str | None:
        return None if value is None else check.check_marker_expression(value)

    @field_validator("mounts")
    @classmethod
    def _safe_mounts(cls, value: dict[str, str]) -> dict[str, str]:
        for host, target in value.items():
            check.check_mount(host, target)
        return value

    @field_validator("gpus")
    @classmethod
    def _non_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 1024:
            raise ValueError("gpus must be 0..1024 or 'all'")
        return value

    @model_validator(mode="after")
    def _no_blind_reruns(self) -> TierConfig:
        if self.kind == "torchrun" and self.reruns:
            raise ValueError(
                "reruns: torchrun tiers are never rerun (a hang or a rank failure is evidence)"
            )
        return self

    @model_validator(mode="after")
    def _nproc_fits_gpus(self) -> TierConfig:
        if self.kind == "torchrun" and self.torchrun and isinstance(self.gpus, int) and self.gpus:
            too_many = [n for n in self.torchrun.nproc if isinstance(n, int) and n > self.gpus]
            if too_many:
                raise ValueError(
                    f"torchrun.nproc {too_many} exceeds gpus: {self.gpus} (NCCL needs one GPU "
                    "per process)"
                )
        return self


BUILD_TIER_PREFIX = "image:"


class ImageRecipe(_Model):
    """A named test image: the project's own Dockerfile, or one generated from its test deps.

    Generated (no ``dockerfile``): ``base`` + a venv with the project's declared test
    dependencies and the project installed editable from ``/work/src`` + the layout the docker
    runner expects. ``requirements``/``extras``/``groups`` left unset are detected in the project
    (see :mod:`scheduler.images.declared`); ``[]`` means none.
    """

    schedule: str | None = Field(default=None, description="5-field cron, e.g. '0 7 * * *'")
    enabled: bool = True
    timeout: Timeout = 1800.0
    keep: int = Field(default=3, ge=1, description="successful builds whose images are kept")
    misfire_grace: Timeout = 600.0
    max_catchup: int = Field(default=1, ge=0)
    dockerfile: str | None = Field(default=None, description="path in the project")
    context: str = Field(default=".", description="build context, in the project")
    build_args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    base: str = "schedctl-base:bookworm"
    requirements: list[str] | None = None
    extras: list[str] | None = None
    groups: list[str] | None = None
    install_project: bool = True
    pip_args: list[str] = Field(
        default_factory=list, description="extra args for the host's 'pip wheel'"
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from scheduler.daemon.crontab import UTC, CrontabSchedule

            CrontabSchedule(value, UTC)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ImageRecipe:
        generated = ("requirements", "extras", "groups", "pip_args")
        if self.dockerfile is not None and any(k in self.model_fields_set for k in generated):
            raise ValueError(
                "a recipe with dockerfile: takes no requirements/extras/groups/pip_args"
            )
        return self

    def as_tier(self) -> TierConfig:
        """The build tier this recipe fires as: its schedule, slots, alerts, overlap."""
        return TierConfig(
            schedule=self.schedule, enabled=self.enabled, kind="build", timeout=self.timeout,
            runner="docker", network=True, memory=None, misfire_grace=self.misfire_grace,
            max_catchup=self.max_catchup,
        )  # fmt: skip


class GpuPolicy(_Model):
    """When a GPU counts as free, and how long a run waits for one."""

    max_memory_used_mib: int = Field(default=1024, ge=0)
    max_utilization_pct: int = Field(default=10, ge=0, le=100)
    foreign_processes_busy: bool = True
    free_samples: int = Field(default=2, ge=1)
    sample_interval: Duration = 2.0
    poll_timeout: Duration = 5.0
    exclude: list[int | str] = Field(default_factory=list)
    wait: Timeout = 1800.0
    priorities: list[str] = Field(default_factory=list)
    expected_count: int | None = Field(
        default=None, ge=1, description="fewer GPUs than this is a health finding (gpu-missing)"
    )
    drain_unexplained_processes: bool = Field(
        default=True,
        description="a process on an unleased GPU (a killed container's leftover) drains it "
        "until it is gone",
    )


class WebhookSink(_Model):
    name: str = "webhook"
    url: str | None = Field(
        default=None, description="Plain URL; use url_env/url_file if it carries a token"
    )
    url_env: str | None = None
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    tiers: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSink:
        if sum(x is not None for x in (self.url, self.url_env, self.url_file)) != 1:
            raise ValueError("set exactly one of url, url_env or url_file")
        return self


class SlackSink(_Model):
    name: str = "slack"
    url_env: str = "SCHEDCTL_SLACK_WEBHOOK_URL"
    url_file: str | None = None
    tiers: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)


class GitHubSink(_Model):
    name: str = "github"
    repo: str
    api_url: str = "https://api.github.com"
    token_env: str = "SCHEDCTL_GITHUB_TOKEN"
    token_file: str | None = None
    labels: list[str] = Field(default_factory=lambda: ["test-failure", "automated"])
    escalation_labels: list[str] = Field(default_factory=lambda: ["high-priority"])
    comment_min_interval: Duration = 21600.0
    tiers: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)


class AlertmanagerSink(_Model):
    name: str = "alertmanager"
    url: str
    firing_ttl: Duration = Field(
        default=8 * 86400.0, description="endsAt of a firing alert; each repeat extends it"
    )
    tiers: list[str] = Field(default_factory=list)
    severities: list[str] = Field(default_factory=list)


class EscalationConfig(_Model):
    after_consecutive_failures: int = Field(default=3, ge=1)


class DeliveryConfig(_Model):
    """How the outbox worker retries a sink that refuses or is unreachable."""

    backoff_base: Duration = 5.0
    backoff_max: Duration = 900.0
    max_attempts: int = Field(default=20, ge=1)
    lease: Duration = Field(default=120.0, description="a claimed alert returns after this")


class AlertsConfig(_Model):
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    resolve_after_green: int = Field(default=1, ge=1)
    public_url: str | None = None
    webhooks: list[WebhookSink] = Field(default_factory=list)
    slack: list[SlackSink] = Field(default_factory=list)
    github: list[GitHubSink] = Field(default_factory=list)
    alertmanager: list[AlertmanagerSink] = Field(default_factory=list)


def _host_port(value: str | None) -> str | None:
    """``host:port`` (``[::1]:9464`` for IPv6) with a port in 0..65535, or ``None``."""
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9464), got {value!r}")
    return value


HostPort = Annotated[str | None, AfterValidator(_host_port)]


class ApiConfig(_Model):
    socket: Annotated[Path, AfterValidator(check.check_socket_path)] | None = Field(
        default=None, description="Unix socket; default <state_dir>/api.sock"
    )
    tcp: HostPort = Field(
        default=None, description="host:port for the TCP listener, off by default"
    )
    token_env: str = "SCHEDCTL_API_TOKEN"
    token_file: str | None = None


class DaemonConfig(_Model):
    grace: Timeout = 60.0
    metrics_address: HostPort = "127.0.0.1:9464"
    web_address: HostPort = Field(
        default="127.0.0.1:9465",
        description="host:port of the read-only web pages; null turns them off. Off loopback "
        "they need the API token (daemon.api.token_env/token_file)",
    )
    api: ApiConfig = Field(default_factory=ApiConfig)
    watchdog: bool = True


class DockerConfig(_Model):
    """Who the tests run as inside containers: numeric ids that no host account has."""

    uid: Annotated[int, AfterValidator(check.foreign_uid)] = Field(
        default=64000, ge=1, le=2**31 - 2
    )
    gid: Annotated[int, AfterValidator(check.foreign_gid)] = Field(
        default=64000, ge=1, le=2**31 - 2
    )


DEFAULT_LOCAL_USER = "nobody"


class LocalConfig(_Model):
    """The local runner: ``user`` is the account tests run as when the daemon runs as root
    (default: nobody); ``allow_root: true`` (unsafe) keeps root instead."""

    user: Annotated[str, AfterValidator(check.local_user)] | None = None
    allow_root: bool = Field(
        default=False,
        description="unsafe: a root daemon runs local tests as root (no local.user default)",
    )

    @model_validator(mode="after")
    def _one_choice(self) -> LocalConfig:
        if self.user is not None and self.allow_root:
            raise ValueError("local.user and local.allow_root exclude each other: set one")
        return self

    def run_as(self, euid: int | None = None) -> str | None:
        """The account local tests run as, or None for the daemon's own (non-root, or opted out)."""
        if (os.geteuid() if euid is None else euid) != 0 or self.allow_root:
            return None
        return self.user or DEFAULT_LOCAL_USER


class MarkersConfig(_Model):
    """``schedctl markers``: the marker catalog and what the audit recommends."""

    catalog: str = Field(
        default="tests/schedctl-markers.toml",
        description="The marker catalog, relative to the project; tier runs load it when present",
    )
    hourly_tier: str = "hourly"
    daily_tier: str = "daily"
    hourly_budget: Duration | None = Field(
        default=None, description="Predicted hourly duration to fit (default: half its timeout)"
    )
    fast_threshold: Duration = Field(default=5.0, description="p90 at most this: hourly candidate")
    slow_threshold: Duration = Field(default=60.0, description="p90 above this: recommend `slow`")
    growth_ratio: float = Field(
        default=2.0, gt=1, description="an hourly test whose recent p90 grew by this is demoted"
    )
    min_runs: int = Field(default=3, ge=1, description="results a test needs to be recommended")
    history_window: Duration = Field(default=30 * 86400.0, description="history the audit reads")
    review_since: Duration = Field(
        default=90 * 86400.0, description="the period a `kind: review` tier reviews"
    )
    critical_paths: list[str] = Field(
        default_factory=list, description="node id globs of critical-path tests (more value)"
    )
    critical_modules: list[str] = Field(
        default_factory=list,
        description="source file globs; tests the daily coverage report shows covering them gain "
        "value (coverage tiers then record per-test contexts: --cov-context=test)",
    )

    @field_validator("catalog")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value or Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError(f"expected a path inside the project, got {value!r}")
        return value


def _store_from_text(value: object) -> object:
    """``store: postgresql://...`` is short for ``store: {url: postgresql://...}``."""
    return {"url": value} if isinstance(value, str) else value


class StoreConfig(_Model):
    """Where runs are recorded: the SQLite file in ``state_dir`` (default), or a PostgreSQL
    database shared by several daemons. The password never goes in the URL: it comes from
    ``password_env``, ``password_file`` or ``$CREDENTIALS_DIRECTORY/<password_env>``."""

    url: str | None = Field(
        default=None, description="postgresql://user@host[:port]/db (default: state_dir's SQLite)"
    )
    password_env: str = "SCHEDCTL_STORE_PASSWORD"
    password_file: str | None = None
    connect_timeout: Timeout = 10.0
    heartbeat: Timeout = Field(default=5.0, description="how often a daemon stamps its liveness")
    host_timeout: Timeout = Field(
        default=60.0,
        description="a daemon silent this long is dead: its runs are recorded interrupted",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError(
                "expected postgresql://user@host[:port]/database (leave store unset for the "
                "SQLite file in state_dir)"
            )
        if parts.password is not None:
            raise ValueError(
                "the password does not belong in the URL (it would be logged): set "
                "$SCHEDCTL_STORE_PASSWORD or store.password_file"
            )
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("expected postgresql://user@host[:port]/database")
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> StoreConfig:
        if self.host_timeout < 3 * self.heartbeat:
            raise ValueError("host_timeout must be at least 3 heartbeats")
        return self

    @property
    def is_postgres(self) -> bool:
        return self.url is not None


class RetentionConfig(_Model):
    passed: Duration = 7 * 86400.0
    failed: Duration = 30 * 86400.0


class Config(_Model):
    """The whole configuration file."""

    state_dir: Annotated[Path, AfterValidator(check.check_state_dir)] = Path(".schedctl")
    state_min_free: Annotated[int, _size_bytes(0, 16 * check.TIB, "state_min_free")] = Field(
        default=256 * check.MIB, description="Runs are refused below this much free state disk"
    )
    timezone: str = "UTC"
    runner: Literal["auto", "local", "docker", "slurm"] = "auto"
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    image: ImageRef = "schedctl-test:bookworm"
    log_limit_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=check.GIB)
    project: ProjectConfig
    tiers: dict[str, TierConfig]
    gpu: GpuPolicy = Field(default_factory=GpuPolicy)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    markers: MarkersConfig = Field(default_factory=MarkersConfig)
    store: Annotated[StoreConfig, BeforeValidator(_store_from_text)] = Field(
        default_factory=StoreConfig
    )
    host: Annotated[str, AfterValidator(check_host_name)] | None = Field(
        default=None, description="This daemon's name in a shared store (default: hostname)"
    )
    images: dict[str, ImageRecipe] = Field(
        default_factory=dict, description="test images; a tier's image: '@NAME' uses NAME's"
    )
    owners: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Test path pattern (CODEOWNERS syntax) -> owner(s); before CODEOWNERS",
    )
    source_file: Path | None = Field(default=None, exclude=True)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, value: dict[str, TierConfig]) -> dict[str, TierConfig]:
        if not value:
            raise ValueError("at least one tier is required")
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
                raise ValueError(f"tier name {name!r} must match [a-z][a-z0-9_-]{{0,31}}")
        return value

    @model_validator(mode="after")
    def _slurm_counts_gpus(self) -> Config:
        for name, tier in self.tiers.items():
            if tier.gpus == "all" and (tier.runner or self.runner) == "slurm":
                raise ValueError(
                    f"tiers.{name}.gpus: 'all' cannot be asked of Slurm (it leases the GPUs); "
                    "give the GPUs per node as a number"
                )
        return self

    def slurm_for(self, tier_name: str) -> SlurmOptions:
        """The tier's sbatch settings: its own ``slurm:`` keys over the top-level ones."""
        tier = self.tier(tier_name)
        top = SlurmOptions(**self.slurm.model_dump(exclude={"shared_dir"}))
        if tier.slurm is None:
            return top
        return top.model_copy(update=tier.slurm.model_dump(exclude_unset=True))

    @model_validator(mode="after")
    def _known_preempted_tiers(self) -> Config:
        for name, tier in self.tiers.items():
            for other in tier.preempts:
                if other not in self.tiers or other == name:
                    raise ValueError(
                        f"tiers.{name}.preempts: {other!r} is not another tier "
                        f"(tiers: {', '.join(self.tiers)})"
                    )
        return self

    @field_validator("images")
    @classmethod
    def _image_names(cls, value: dict[str, ImageRecipe]) -> dict[str, ImageRecipe]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
                raise ValueError(f"image name {name!r} must match [a-z][a-z0-9_-]{{0,31}}")
        return value

    @model_validator(mode="after")
    def _image_refs(self) -> Config:
        problems = []
        refs = [("image", self.image)] + [
            (f"tiers.{n}.image", t.image) for n, t in self.tiers.items()
        ]
        for key, ref in refs:
            if ref and ref.startswith("@") and ref[1:] not in self.images:
                known = ", ".join(self.images) or "(none)"
                problems.append(f"{key}: {ref!r} names no recipe under images: ({known})")
        problems += [
            f"tiers.{n}.kind: 'build' tiers come from images:, not tiers:"
            for n, t in self.tiers.items()
            if t.kind == "build"
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def with_build_tiers(self) -> Config:
        """This config with one ``image:NAME`` tier per recipe (names tiers cannot clash with)."""
        builds = {BUILD_TIER_PREFIX + n: r.as_tier() for n, r in self.images.items()}
        return self.model_copy(update={"tiers": {**self.tiers, **builds}})

    def recipe_of(self, tier_name: str) -> tuple[str, ImageRecipe]:
        """The recipe a build tier builds; raises :class:`UnknownTierError` for other tiers."""
        from scheduler.kernel.errors import UnknownTierError

        name = tier_name.removeprefix(BUILD_TIER_PREFIX)
        if not tier_name.startswith(BUILD_TIER_PREFIX) or name not in self.images:
            raise UnknownTierError(tier_name, [BUILD_TIER_PREFIX + n for n in self.images])
        return name, self.images[name]

    def tier(self, name: str) -> TierConfig:
        from scheduler.kernel.errors import UnknownTierError

        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(name, list(self.tiers)) from None

    def tier_priority(self, name: str) -> int:
        """Lower runs first: ``priority``, else the gpu.priorities order, else file order."""
        tier = self.tier(name)
        if tier.priority is not None:
            return tier.priority
        if name in self.gpu.priorities:
            return self.gpu.priorities.index(name)
        return len(self.gpu.priorities) + list(self.tiers).index(name)

    def runner_for(self, tier_name: str, requested: str | None = None) -> str:
        """The runner a run of ``tier_name`` asks for: ``"local"``, ``"docker"`` or ``"auto"``.

        Precedence: ``requested`` (``schedctl run --runner``, an API submit), then the tier's
        ``runner``, then the top-level ``runner``. The one rule applied on top: ``auto`` with
        ``project.python`` set is ``"local"``, because project.python is a host path that cannot
        run inside a container. Any other ``auto`` is returned as is; the caller then resolves it
        with :meth:`runners.registry.RunnerFactory.resolve` (Docker when an engine answers,
        else local). An explicit ``docker`` stays ``"docker"`` even with project.python set: the
        image's ``python3`` runs the tests and project.python is ignored (``config check`` warns).

        Pure: reads only this config, no I/O. Raises :class:`UnknownTierError` for an unknown tier.
        """
        tier = self.tier(tier_name)
        name = requested or tier.runner or self.runner
        if name == "auto" and self.project.python:
            return "local"
        return name

    def python_for(self, tier_name: str, backend: str) -> str:
        """Which interpreter runs ``tier_name``'s tests on ``backend``, for people to read.

        ``backend`` is a resolved runner (``"docker"`` or ``"local"``, not ``"auto"``). Docker:
        ``python3 in image IMAGE`` (the tier's image, else the top-level one); local:
        project.python, else schedctl's own interpreter. Mirrors the interpreter choice of
        :func:`scheduler.run.spec.build_pytest_spec` and of torchrun tiers.
        """
        tier = self.tier(tier_name)
        if backend == "docker":
            return f"python3 in image {tier.image or self.image}"
        if self.project.python:
            return self.project.python
        return f"{sys.executable} (schedctl's own)"

    @property
    def host_name(self) -> str:
        """This daemon's identity in the store: ``host``, else the machine's hostname."""
        import socket

        return self.host or socket.gethostname()

    def fires_here(self, tier_name: str) -> bool:
        """Whether this daemon schedules ``tier_name``: unpinned, or pinned to this host."""
        hosts = self.tier(tier_name).hosts
        return not hosts or self.host_name in hosts

    @property
    def db_path(self) -> Path:
        return self.state_dir / "schedctl.db"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"


def interpolate_env(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise KeyError(f"{where or '<root>'}: environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: interpolate_env(v, env, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate_env(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{loc or '<root>'}: {msg}")
    return problems


def config_from_mapping(
    data: Any,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate an already parsed YAML tree; raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["<root>: expected a mapping of keys"])
    try:
        data = interpolate_env(data, os.environ if env is None else env)
    except KeyError as exc:
        raise ConfigError(source, [str(exc.args[0])]) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None
    if base_dir is not None:
        try:
            config = _resolve_paths(config, base_dir)
        except ValueError as exc:
            raise ConfigError(source, [f"state_dir: {exc}"]) from None
    config = config.with_build_tiers()
    path = config.project.path
    if path is not None and not path.is_dir():
        raise ConfigError(source, [f"project.path: {path} is not a directory"])
    return config.model_copy(update={"source_file": Path(source)})


def _resolve_paths(config: Config, base: Path) -> Config:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    project = config.project
    if project.path is not None:
        project = project.model_copy(update={"path": absolute(project.path)})
    if project.repo is not None and not re.match(r"^[a-z+]+://|^[^/]+@[^:]+:", project.repo):
        project = project.model_copy(update={"repo": str(absolute(Path(project.repo)))})
    state_dir = check.check_state_dir(absolute(config.state_dir))
    return config.model_copy(update={"state_dir": state_dir, "project": project})


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raises :class:`ConfigError`."""
    import yaml  # PyYAML: not imported for a config snapshot (scheduler.config_cache)

    from scheduler import yaml_safe

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"<file>: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml_safe.load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"<file>: invalid YAML: {exc}"]) from None
    return config_from_mapping(data, source=str(path), base_dir=path.resolve().parent, env=env)


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema()
