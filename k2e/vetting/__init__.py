"""Upload vetting: what a model file or config may contain (configs, h5structure,
keras_archive), what it is (model_config, metric_names, inspection), and the sandbox
process that reads untrusted files."""
