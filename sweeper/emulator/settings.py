"""The emulator's settings: what the server is, and which faults it injects."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FaultSettings:
    """Deterministic (seeded) faults; every rate is a probability in [0, 1]."""

    # seconds of added latency per endpoint name (post, get, status, jobs, list, cancel, outputs,
    # job_status, or "all"), as (min, max)
    latency: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # The rate_limit_* and error/drop faults apply to every run POST (runJobGroup, runFlow,
    # runPlan: see posting.py), counted together in request order.
    # 429 bursts: after every `rate_limit_every` POSTs answer the next `rate_limit_burst` with
    # 429; and/or each POST gets 429 with probability `rate_limit_rate`
    rate_limit_every: int = 0
    rate_limit_burst: int = 1
    rate_limit_rate: float = 0.0
    rate_limit_retry_after: int = 1  # x-retry-after (seconds) sent with an injected 429
    # 5xx before the job group, flow run or plan run is created (nothing created)
    error_before_rate: float = 0.0
    # 5xx after it is created (it exists; the client sees 5xx)
    error_after_rate: float = 0.0
    error_status: int = 500
    # the connection is closed without a response after it is created
    drop_after_rate: float = 0.0
    # jobs: the wrangle job fails at this rate, or when a run parameter has one of these values
    job_fail_rate: float = 0.0
    fail_params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # jobs run `slow_factor` times longer; only for these parameter values when given
    slow_factor: float = 1.0
    slow_params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    seed: int | None = None  # overrides EmulatorSettings.seed when set


@dataclass(frozen=True)
class EmulatorSettings:
    """How one emulated Dataprep server behaves."""

    state_path: Path | None = None
    catalog_path: Path | None = None
    faults: FaultSettings | None = None
    quota_user_per_min: int = 30
    quota_workspace_per_min: int = 60
    flow_quota_user_per_min: int = 20  # runFlow: its own bucket, separate from runJobGroup's
    flow_quota_workspace_per_min: int = 40
    plan_quota_user_per_min: int = 30  # runPlan: a third bucket
    plan_quota_workspace_per_min: int = 60
    token: str | None = field(default=None, repr=False)
    output_root: Path = field(default_factory=Path.cwd)
    # files and folders under output_root that outputs must never touch (a ledger, its lock)
    protected_paths: tuple[Path, ...] = ()
    created_seconds: float = 0.3
    wrangle_seconds: float = 0.8
    filewriter_seconds: float = 0.4
    profile_seconds: float = 0.5
    time_scale: float = 1.0
    clock: Callable[[], float] | None = None
    strict_parameters: bool = False
    seed: int = 0
    # bytes of request body accepted on POST /v4/jobGroups; more is 413 (a real body is < 10 KB)
    max_body_bytes: int = 1024 * 1024
    # POST /as/token: the one refresh token first accepted (None: any unseen one, once), and how
    # long the access tokens it issues are accepted (Designer Cloud: 5 minutes)
    oauth_refresh_token: str | None = field(default=None, repr=False)
    access_token_seconds: float = 300.0
