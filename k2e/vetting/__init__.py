"""Upload vetting: what a model file or config may contain (configs, h5structure,
keras_archive), what it is (model_config, metric_names, inspection), and the sandbox
that reads untrusted files in a child process (sandbox: the parent's API; runner; child;
confinement; sealing; selfcheck)."""
