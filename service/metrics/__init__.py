"""GET /metrics: the API's own request counters (service.metrics.http) and the figures
read from the job store at scrape time (service.metrics.store_collector)."""
