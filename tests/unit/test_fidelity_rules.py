"""The rules behind issue 21 as plain functions: what feature columns read, how a config
uses a custom name, and the kind a custom_objects mapping must have."""

from typing import Any

import pytest

from k2e.errors import InvalidUpload
from k2e.schemas import TensorInfo
from k2e.spec.custom import check_custom_objects
from k2e.vetting.configs import VetPolicy, vet_model_config
from k2e.vetting.feature_columns import column_shape_error, fed_inputs
from k2e.vetting.model_config import parse_model_config


def _input(name: str, shape: list[int | None], dtype: str = "int64") -> dict[str, Any]:
    config = {"batch_input_shape": shape, "dtype": dtype, "name": name}
    return {"class_name": "InputLayer", "name": name, "config": config, "inbound_nodes": []}


def _identity(key: str, buckets: int) -> dict[str, Any]:
    inner = {"key": key, "number_buckets": buckets, "default_value": None}
    categorical = {"class_name": "IdentityCategoricalColumn", "config": inner}
    return {"class_name": "IndicatorColumn", "config": {"categorical_column": categorical}}


def _numeric(key: str, shape: list[int]) -> dict[str, Any]:
    return {"class_name": "NumericColumn", "config": {"key": key, "shape": shape}}


def _columns_model(columns: list[dict[str, Any]], also_dense: str | None = None) -> dict:
    """Inputs cp (4,), age (2,) into a DenseFeatures layer; ``also_dense`` feeds a Dense too."""
    layers = [
        _input("cp", [None, 4]),
        _input("age", [None, 2], "float32"),
        {
            "class_name": "DenseFeatures",
            "name": "features",
            "config": {"name": "features", "feature_columns": columns},
            "inbound_nodes": [{"cp": ["cp", 0, 0, {}], "age": ["age", 0, 0, {}]}],
        },
        {
            "class_name": "Dense",
            "name": "y",
            "config": {"name": "y", "units": 1},
            "inbound_nodes": [[["features", 0, 0, {}]]],
        },
    ]
    if also_dense:
        layers.append(
            {
                "class_name": "Dense",
                "name": "side",
                "config": {"name": "side", "units": 1},
                "inbound_nodes": [[[also_dense, 0, 0, {}]]],
            }
        )
    config = {
        "name": "m",
        "layers": layers,
        "input_layers": {"cp": ["cp", 0, 0], "age": ["age", 0, 0]},
        "output_layers": [["y", 0, 0]],
    }
    return {"class_name": "Functional", "config": config}


def test_inputs_read_only_by_feature_columns_are_known_with_what_they_read() -> None:
    summary = parse_model_config(_columns_model([_identity("cp", 4), _numeric("age", [2])]))
    assert summary.column_inputs == {"cp": None, "age": 2}
    # An input that also feeds another layer is shaped by its Input as before.
    shared = parse_model_config(_columns_model([_identity("cp", 4)], also_dense="cp"))
    assert "cp" not in shared.column_inputs


@pytest.mark.parametrize(
    ("have", "want", "reads", "refused"),
    [
        ([], [4], None, None),  # the library's test: scalar ids, Input (4,)
        ([1], [4], None, None),
        ([4], [4], None, None),
        ([3], [4], None, "the model's Input expects [4]"),
        ([2, 2], [None, None], None, "scalar or a list of ids"),
        ([2], [2], 2, None),
        ([], [2], 2, "reads 2 values"),
        ([], [1], 1, None),
    ],
)
def test_what_a_feature_column_input_takes(
    have: list[int], want: list[int | None], reads: int | None, refused: str | None
) -> None:
    why = column_shape_error("f", have, want, reads)
    if refused is None:
        assert why is None
    else:
        assert why is not None
        assert refused in why


def test_a_job_feeds_a_feature_column_input_with_its_data_shape() -> None:
    inputs = [
        TensorInfo(name="cp", shape=[None, 4], dtype="int64"),
        TensorInfo(name="x", shape=[None, 3]),
    ]
    fed = fed_inputs(inputs, {"cp": None}, {"cp": [64], "x": [64, 3]})
    assert [t.shape for t in fed] == [[None], [None, 3]]
    # Data of the Input's shape, and no data, keep the Input's shape (as before).
    assert fed_inputs(inputs, {"cp": None}, {"cp": [64, 4]})[0].shape == [None, 4]
    assert fed_inputs(inputs, {"cp": None}, None)[0].shape == [None, 4]
    assert fed_inputs(inputs, {"cp": 1}, None)[0].shape == [None, 1]


def _dense_model(activation: Any) -> dict[str, Any]:
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 1, "activation": activation}}
    return {"class_name": "Sequential", "config": {"name": "s", "layers": [dense]}}


CUSTOM_RELU = {"module": "builtins", "class_name": "function", "config": "custom_relu"}


def test_custom_functions_are_deferred_like_classes_with_how_they_are_used() -> None:
    uses: dict[str, set[str]] = {}
    deferred = vet_model_config(
        _dense_model(CUSTOM_RELU), VetPolicy.of(["relu6"], defer_custom=True), uses=uses
    )
    assert deferred == ["custom_relu"]
    assert uses["custom_relu"] == {"activation"}
    assert uses["Dense"] == {"layer"}
    with pytest.raises(InvalidUpload, match="function 'custom_relu'"):
        vet_model_config(_dense_model(CUSTOM_RELU), VetPolicy.of(["relu6"]))
    uses = {}
    assert vet_model_config(
        {"loss": {"y": "my_loss"}}, VetPolicy.of([], defer_custom=True), uses=uses
    ) == ["my_loss"]
    assert uses == {"my_loss": {"loss"}}
    with pytest.raises(InvalidUpload, match="loss 'my_loss' is neither"):
        vet_model_config({"loss": ["mse", "my_loss"]}, VetPolicy.of([]))


def _mapping_errors(uses: dict[str, list[str]], mapping: dict[str, str]) -> list[Any]:
    return check_custom_objects(mapping, [], uses)


def test_a_mapping_must_be_of_the_kind_the_model_uses_the_name_as() -> None:
    [error] = _mapping_errors({"custom_relu": ["activation"]}, {"custom_relu": "relu6"})
    assert error.loc == ("custom_objects", "custom_relu")
    assert "as an activation function, but 'relu6' is a layer" in error.msg
    assert (
        _mapping_errors({"custom_relu": ["activation"]}, {"custom_relu": "relu6_activation"}) == []
    )
    assert _mapping_errors({"MyClip": ["layer"]}, {"MyClip": "relu6"}) == []
    [error] = _mapping_errors({"MyClip": ["layer"]}, {"MyClip": "relu6_activation"})
    assert "as a class" in error.msg


def test_a_registry_name_the_model_uses_as_saved_must_be_of_its_kind() -> None:
    assert _mapping_errors({"relu6": ["layer"]}, {}) == []
    [error] = _mapping_errors({"relu6": ["activation"]}, {})
    assert error.loc == ("custom_objects",)
    assert "registry name 'relu6' as an activation function, but it is a layer" in error.msg
