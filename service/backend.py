"""What the routes' work touches, built once per API process."""

from dataclasses import dataclass

from k2e.blobstore import blob_store
from k2e.catalog import Catalog
from k2e.jobs.cluster_views import ClusterViews
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.event_log import notifier_for
from k2e.jobs.job_store import JobStore
from k2e.jobs.placement import Placement
from k2e.jobs.queueing import TaskSender
from k2e.jobs.scheduling import Policy
from k2e.settings import Settings
from k2e.storage import Storage
from k2e.tenancy.bodies import EffectiveQuotas
from k2e.tenancy.sessions import SessionStore
from k2e.tenancy.tenant_store import TenantStore
from k2e.webhooks.store import WebhookStore
from k2e.webhooks.targets import TargetPolicy


@dataclass(frozen=True)
class Backend:
    store: JobStore
    storage: Storage
    sender: TaskSender
    settings: Settings
    tenants: TenantStore
    catalog: Catalog
    dispatcher: Dispatcher
    sessions: SessionStore
    placement: Placement
    clusters: ClusterViews
    webhooks: WebhookStore
    # Checks webhook URLs at registration (the delivery loop checks them again).
    webhook_targets: TargetPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> "Backend":
        store = JobStore(settings.sqlalchemy_url, notifier_for(settings.redis_url))
        sender = TaskSender(settings)
        defaults = EffectiveQuotas(
            max_active_jobs=settings.quota_max_active_jobs,
            max_bytes=settings.quota_max_bytes,
            max_steps=settings.quota_max_steps,
            max_run_s=settings.quota_max_run_s,
            max_priority=settings.quota_max_priority,
        )
        return cls(
            store=store,
            storage=Storage(settings.storage_root, blobs=blob_store(settings)),
            sender=sender,
            settings=settings,
            tenants=TenantStore(store.engine, defaults),
            catalog=Catalog(store.engine),
            dispatcher=Dispatcher.from_settings(store.engine, sender, settings),
            sessions=SessionStore(store.engine, settings.session_ttl_s),
            placement=Placement(store.engine, Policy.from_settings(settings)),
            clusters=ClusterViews(store.engine, settings.lease_s),
            webhooks=WebhookStore(store.engine, settings.webhook_max_per_tenant),
            webhook_targets=TargetPolicy(
                settings.webhook_allowed_networks, lookup_timeout_s=settings.webhook_timeout_s
            ),
        )

    def upload_limit(self, tenant: str) -> tuple[int, str]:
        """Bytes an upload may take now, and what sets that limit (for the 413). Uploads
        running at once may each receive this much: each then reserves its size before it
        is kept (``TenantStore.reserve_bytes``), and those that no longer fit get a 413."""
        quota = self.tenants.quotas(tenant).max_bytes
        left = max(0, quota - self.tenants.bytes_in_use(tenant))
        if left < self.settings.max_upload_bytes:
            return left, f"the tenant's storage quota ({quota} bytes, {left} left)"
        limit = self.settings.max_upload_bytes
        return limit, f"the upload limit of {limit} bytes"
