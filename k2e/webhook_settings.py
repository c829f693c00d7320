"""The settings of webhook deliveries (k2e.webhooks): which private targets are allowed,
how long one attempt may take, and how retries back off. ``Settings`` (k2e.settings)
extends this; read them from there."""

import ipaddress
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidrs(text: str) -> tuple[IpNetwork, ...]:
    """``"127.0.0.1/32, 10.1.0.0/16"`` as networks; ValueError names a bad item."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or CIDR block") from None
    return tuple(networks)


class WebhookSettings(BaseSettings):
    """Where webhooks may point and how their deliveries are retried."""

    model_config = SettingsConfigDict(env_prefix="K2E_", extra="ignore")

    webhook_allow_cidrs: str = Field(
        default="",
        description="Comma-separated addresses or CIDR blocks webhooks may target although "
        "they are loopback, private, link-local or otherwise not public (e.g. "
        "`10.20.0.0/16` for an in-house receiver). Empty: public addresses only.",
    )
    webhook_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="The longest one delivery attempt may take, connection to last byte "
        "read; a slower endpoint counts as failed and is retried.",
    )
    webhook_retry_base_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="The wait before a failed delivery's second attempt; each later wait "
        "doubles, up to `K2E_WEBHOOK_RETRY_MAX_S`.",
    )
    webhook_retry_max_s: float = Field(
        default=3600.0,
        gt=0,
        le=86400,
        description="The longest wait between two attempts of a delivery.",
    )
    webhook_retry_window_s: float = Field(
        default=86400.0,
        gt=0,
        le=7 * 86400,
        description="How long after its event a delivery is retried; then it is given up "
        "(`failed`).",
    )
    webhook_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often a worker's delivery loop looks for deliveries that are due.",
    )
    webhook_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Deliveries one worker's delivery loop makes at once (threads of its "
        "main process, never a job slot).",
    )
    webhook_response_bytes: int = Field(
        default=1024,
        ge=0,
        le=65536,
        description="The most bytes of an endpoint's response read and kept per attempt "
        "(shown in the delivery's `response_excerpt`).",
    )
    webhook_history_days: float = Field(
        default=30.0,
        gt=0,
        le=3650,
        description="How long delivered and given-up deliveries stay listed; then the "
        "delivery loop removes them.",
    )
    webhook_max_per_tenant: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="The most webhook endpoints a tenant may register.",
    )

    @field_validator("webhook_allow_cidrs")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        parse_cidrs(value)
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> Self:
        if self.webhook_retry_max_s < self.webhook_retry_base_s:
            raise ValueError("K2E_WEBHOOK_RETRY_MAX_S must be at least K2E_WEBHOOK_RETRY_BASE_S")
        return self

    @property
    def webhook_allowed_networks(self) -> tuple[IpNetwork, ...]:
        return parse_cidrs(self.webhook_allow_cidrs)
