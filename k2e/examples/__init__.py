"""The seed document's examples (model_to_estimator's own): the models, their data, and
the settings the documentation uses. Shared by the tests, the benchmark and the demo.

``k2e.examples.seed_data`` needs numpy only; ``k2e.examples.seed_models`` imports TensorFlow.
"""
