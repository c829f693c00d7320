"""The settings of GET /metrics. ``Settings`` (k2e.settings) extends this; read them
from there."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MetricsSettings(BaseSettings):
    """Who may scrape the metrics, and how many tenants they name."""

    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        max_length=512,
        description="A bearer token that may read `GET /metrics` besides admin API keys "
        "(`Authorization: Bearer <token>`), so that Prometheus needs no admin key. Unset: "
        "admin keys only.",
    )
    metrics_tenant_labels: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="How many tenants `GET /metrics` names in its per-tenant series (the "
        'ones with the most active jobs); the others are summed under `tenant="other"`. '
        "Bounds the number of series whatever the number of tenants.",
    )
