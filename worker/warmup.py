"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests`` in an export.

The file is a TFRecord of ``tensorflow.serving.PredictionLog`` messages, one
``PredictLog`` per exported signature carrying a ``PredictRequest`` with a few examples.
TF Serving replays them when it loads the model (``--enable_model_warmup``), so the
first client request does not pay for graph initialisation.

The tensorflow-serving-api package (which has these messages) pins a full TensorFlow,
so the few messages are written here in protobuf's wire format, with the field numbers
of TF Serving's published protos (tensorflow_serving/apis):

- PredictionLog: ``predict_log = 6``
- PredictLog: ``request = 1``
- PredictRequest: ``model_spec = 1``, ``map<string, TensorProto> inputs = 2``
- ModelSpec: ``name = 1``, ``signature_name = 3``
- a map entry: ``key = 1``, ``value = 2``
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from worker.signatures import signature_inputs
from worker.tfrt import tf

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
WARMUP_EXAMPLES = 3
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or embedded message)."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def predict_request(signature_name: str, inputs: Mapping[str, np.ndarray]) -> bytes:
    """A serialized ``PredictRequest`` for ``signature_name`` with ``inputs`` as TensorProtos.
    The model name is left empty: it is the server's ``--model_name``, and warm-up replays
    a request on the model being loaded whatever it names."""
    request = _field(1, _field(3, signature_name.encode()))
    for key in sorted(inputs):
        tensor = tf.make_tensor_proto(inputs[key]).SerializeToString()
        request += _field(2, _field(1, key.encode()) + _field(2, tensor))
    return request


def prediction_log(signature_name: str, inputs: Mapping[str, np.ndarray]) -> bytes:
    """A serialized ``PredictionLog`` whose ``predict_log`` carries the request."""
    return _field(6, _field(1, predict_request(signature_name, inputs)))


def write_warmup(
    export_dir: Path, signatures: Mapping[str, Any], features: Mapping[str, np.ndarray]
) -> int:
    """Write one request per signature with the first few examples of ``features``;
    returns how many were written."""
    few = {k: np.asarray(v)[:WARMUP_EXAMPLES] for k, v in features.items()}
    records = [
        prediction_log(name, signature_inputs(signature, few))
        for name, signature in sorted(signatures.items())
    ]
    target = export_dir / WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for record in records:
            writer.write(record)
    return len(records)
