"""The settings of k2e's logs and traces (k2e.logs, k2e.tracing). ``Settings``
(k2e.settings) extends this; read them from there."""

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ObservabilitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: human-readable lines. `json`: one JSON object per line "
        "(`time`, `level`, `logger`, `message`, and `request_id`, `job_id`, `tenant`, "
        "`worker`, `trace_id` where they apply), for a log collector; the job logs "
        "(`GET /jobs/{id}/logs`) take the same form.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("K2E_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Turns tracing on: spans (API requests, a submission's upload, check and "
        "enqueue, the worker's pickup and each job phase) are exported over OTLP/HTTP to "
        "this collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added). The standard "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` also works. Unset (and no trace file): tracing is off.",
    )
    trace_file: Path | None = Field(
        default=None,
        description="Also turns tracing on: every process appends its finished spans to "
        "this file, one JSON object per line. Meant for tests and for looking at one "
        "job's trace without a collector; not for production.",
    )
    service_name: str = Field(
        default="k2e",
        description="The `service.name` of exported spans; the API adds `-api`, the "
        "workers `-worker`.",
    )

    @property
    def tracing(self) -> bool:
        """Whether spans are recorded at all (an OTLP endpoint or a trace file is set)."""
        return bool(self.otlp_endpoint) or self.trace_file is not None
