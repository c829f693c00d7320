"""The client's webhook calls (mixed into k2e.client.http.Client)."""

from collections.abc import Iterable

from k2e.client.transport import Session
from k2e.webhooks.schemas import Delivery, EventType, Webhook, WebhookCreated


class WebhookCalls:
    session: Session

    def add_webhook(
        self, url: str, events: Iterable[EventType | str] = tuple(EventType)
    ) -> WebhookCreated:
        """Register an endpoint for job events; the answer's ``secret`` is shown only now."""
        body = {"url": url, "events": [EventType(e).value for e in events]}
        return self.session.call_as(WebhookCreated, "POST", "/webhooks", json=body)

    def list_webhooks(self) -> list[Webhook]:
        return self.session.get_list(Webhook, "/webhooks")

    def delete_webhook(self, webhook_id: str) -> None:
        self.session.request("DELETE", f"/webhooks/{webhook_id}")

    def test_webhook(self, webhook_id: str) -> Delivery:
        """Queue a ``webhook.test`` event for the endpoint; its delivery."""
        return self.session.call_as(Delivery, "POST", f"/webhooks/{webhook_id}/test")

    def webhook_deliveries(self, webhook_id: str, limit: int = 50) -> list[Delivery]:
        """The endpoint's deliveries, newest first, with their latest answers."""
        return self.session.get_list(
            Delivery, f"/webhooks/{webhook_id}/deliveries", params={"limit": limit}
        )
