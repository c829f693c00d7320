"""Reads an export's TF Serving warm-up file independently of k2e's writer.

The tensorflow-serving-api package is not installed (it pins a full TensorFlow), so the
messages are declared here from TF Serving's published .proto files and parsed by the
protobuf runtime itself. A TensorProto value is declared as bytes (the same wire form
as the embedded message) and parsed with TensorFlow's own TensorProto class.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


def _prediction_log_class() -> type:
    proto = descriptor_pb2.FileDescriptorProto(
        name="k2e_test_serving.proto", package="tensorflow.serving", syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    optional, repeated = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def message(name: str, fields: list[tuple[str, int, int, str | None, int]]) -> None:
        m = proto.message_type.add(name=name)
        for field_name, number, kind, type_name, label in fields:
            field = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    message(
        "ModelSpec",
        [
            ("name", 1, f.TYPE_STRING, None, optional),
            ("signature_name", 3, f.TYPE_STRING, None, optional),
        ],
    )
    req = proto.message_type.add(name="PredictRequest")
    entry = req.nested_type.add(name="InputsEntry")
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=f.TYPE_BYTES, label=optional)
    entry.options.map_entry = True
    req.field.add(
        name="model_spec",
        number=1,
        type=f.TYPE_MESSAGE,
        label=optional,
        type_name=".tensorflow.serving.ModelSpec",
    )
    req.field.add(
        name="inputs",
        number=2,
        type=f.TYPE_MESSAGE,
        label=repeated,
        type_name=".tensorflow.serving.PredictRequest.InputsEntry",
    )
    message(
        "PredictLog",
        [("request", 1, f.TYPE_MESSAGE, ".tensorflow.serving.PredictRequest", optional)],
    )
    message(
        "PredictionLog",
        [("predict_log", 6, f.TYPE_MESSAGE, ".tensorflow.serving.PredictLog", optional)],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.PredictionLog")
    return message_factory.GetMessageClass(descriptor)


@dataclass
class WarmupRequest:
    signature: str
    model_name: str
    inputs: dict[str, np.ndarray]


def read(export_dir: Path) -> list[WarmupRequest]:
    """Every record of the export's warm-up file, decoded as a PredictionLog."""
    prediction_log = _prediction_log_class()
    requests = []
    for record in tf.data.TFRecordDataset(str(export_dir / WARMUP)).as_numpy_iterator():
        log = prediction_log.FromString(record)
        assert log.HasField("predict_log"), "a PredictLog in every record"
        request = log.predict_log.request
        inputs = {
            key: tf.make_ndarray(tensor_pb2.TensorProto.FromString(value))
            for key, value in request.inputs.items()
        }
        requests.append(
            WarmupRequest(request.model_spec.signature_name, request.model_spec.name, inputs)
        )
    return requests
