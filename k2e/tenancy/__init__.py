"""Identity and tenancy: API keys (keys), tenants and their quotas (models, store)."""
