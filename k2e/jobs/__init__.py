"""Jobs: the durable store (store for the API, leases for workers), its tables, and the
queues jobs are sent on (queueing)."""
