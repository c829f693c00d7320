"""Completion webhooks: tenants' endpoints, the outbox of deliveries, and their sending."""
