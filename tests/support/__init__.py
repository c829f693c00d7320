"""What the tests share that is not a fixture: real processes (an API, a worker), API
keys, job polling, PostgreSQL databases and schemas, upload models, fuzz inputs, readers
of what k2e writes (server-sent events, TF Serving warm-up records), and the suite's own
guards (skips under CI, processes that outlive the run)."""
