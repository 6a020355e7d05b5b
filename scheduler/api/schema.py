"""The request bodies of the control API (pydantic); the JSON it answers is in :mod:`.payloads`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from scheduler.api.payloads import iso, run_summary, status_payload, tier_rows
from scheduler.config_validate import check_marker_expression

__all__ = ["CancelBody", "SubmitBody", "iso", "run_summary", "status_payload", "tier_rows"]


class SubmitBody(BaseModel):
    """``POST /v1/runs``: what a client may ask for; unknown keys are rejected.

    Never the runner, image, mounts or environment: those are the tier's, so no token holder can
    move a docker tier's tests out of their container. ``markers`` must be a pytest ``-m``
    expression; ``timeout_s`` may only shorten the tier's timeout (checked against the tier).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tier: str = Field(min_length=1, max_length=64)
    ref: str | None = Field(default=None, max_length=512)
    markers: Annotated[str, AfterValidator(check_marker_expression)] | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    trigger: Literal["manual", "api"] = "api"


class CancelBody(BaseModel):
    """``POST /v1/runs/{id}/cancel``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str = Field(default="cancelled through the API", max_length=500)
