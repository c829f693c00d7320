"""What a job will report and export, known from its spec and its inspected model alone
(no TensorFlow): the keys of ``metrics.eval`` and the export's signatures.

The worker's export (worker/export.py) decides between a raw receiver and a tf.Example
parsing one with ``needs_example_parsing`` from here, so the plan and the export agree.
What the Estimator makes of each receiver (tensorflow-estimator 2.15.0, keras_lib and
export): ``serving_default`` predicts every model output by name; each ``export_outputs``
key adds a signature of that name (a predict head's one output is ``output``; a regress
head's ``outputs``, a classify head's ``scores``, both taking one serialized tf.Example
tensor ``inputs``, and dropped with a raw receiver); a parsing receiver's ``raw``
alternative adds ``raw:<name>`` for each predict signature.
"""

from collections.abc import Mapping

from k2e.plan_schemas import SignaturePlan, SignatureTensor
from k2e.schemas import ConvertRequest, TensorInfo

# The keys evaluate() adds to the metrics: the mean loss and the checkpoint's step.
EVAL_EXTRA_KEYS = ("loss", "global_step")
RAW_ALTERNATIVE = "raw"
EXAMPLES = "examples"  # the parsing receiver's one input: serialized tf.Examples


def needs_example_parsing(
    export_outputs: Mapping[str, str] | None, inputs: list[TensorInfo]
) -> bool:
    """A regress or classify head needs a parsing receiver, which needs every input's
    per-example shape fixed (a FixedLenFeature each)."""
    heads = set((export_outputs or {}).values()) & {"regression", "classification"}
    fixed = all(d is not None for t in inputs for d in t.shape[1:])
    return bool(heads) and fixed


def eval_metric_keys(spec: ConvertRequest, metric_names: list[str]) -> list[str]:
    """The keys of the job's ``metrics.eval``: its compiled metrics' names after
    ``metric_names_map``, the loss and the global step; none without ``eval``."""
    if spec.eval is None:
        return []
    mapped = spec.metric_names_map or {}
    return [mapped.get(name, name) for name in metric_names] + list(EVAL_EXTRA_KEYS)


def _batched(tensor: TensorInfo, name: str | None = None, output: bool = False) -> SignatureTensor:
    """An input's shape is always known (a bare ``[None]`` is one value per example); an
    output's ``[None]`` is inspection's "rank unknown" (ModelSummary.outputs)."""
    unknown = output and tensor.shape == [None]
    shape = None if unknown else [None, *tensor.shape[1:]]
    return SignatureTensor(name=name or tensor.name, dtype=tensor.dtype or "float32", shape=shape)


def _serialized(name: str) -> SignatureTensor:
    return SignatureTensor(name=name, dtype="string", shape=[None])


def planned_signatures(
    spec: ConvertRequest, inputs: list[TensorInfo], outputs: list[TensorInfo]
) -> list[SignaturePlan]:
    """The export's signatures, sorted by name; none with ``export: false``. ``inputs``
    are the model's inputs as the job feeds them (feature_columns.fed_inputs)."""
    if not spec.export:
        return []
    by_name = {o.name: o for o in outputs}
    heads = spec.export_outputs or {}
    parse = needs_example_parsing(heads, inputs)
    raw_in = [_batched(t) for t in inputs]
    predicted = [_batched(o, output=True) for o in outputs]
    received = [_serialized(EXAMPLES)] if parse else raw_in
    found = [
        SignaturePlan(name="serving_default", method="predict", inputs=received, outputs=predicted)
    ]
    predict_heads = []
    for key, kind in heads.items():
        if kind == "predict":
            head = SignaturePlan(
                name=key,
                method="predict",
                inputs=received,
                outputs=[_batched(by_name[key], "output", output=True)],
            )
            found.append(head)
            predict_heads.append(head)
        elif parse:
            method, out = ("regress", "outputs") if kind == "regression" else ("classify", "scores")
            found.append(
                SignaturePlan(
                    name=key,
                    method=method,
                    inputs=[_serialized("inputs")],
                    outputs=[_batched(by_name[key], out, output=True)],
                )
            )
    if parse:
        for signature in (found[0], *predict_heads):
            found.append(
                signature.model_copy(
                    update={"name": f"{RAW_ALTERNATIVE}:{signature.name}", "inputs": raw_in}
                )
            )
    return sorted(found, key=lambda s: s.name)
