"""Untrusted uploads: hostile model files are refused with a 4xx that names the problem,
nothing of them runs, and the API lives on (k2e.vetting: configs, h5structure, sandbox)."""

import io
import json
import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from fastapi.testclient import TestClient

from k2e.errors import InvalidSpec, InvalidUpload, Unavailable
from k2e.schemas import ConvertRequest
from k2e.settings import Settings
from k2e.spec.checks import resolve_model
from k2e.storage import Storage
from k2e.vetting.configs import VetPolicy, vet_model_config
from k2e.vetting.h5structure import vet_h5_structure
from k2e.vetting.keras_archive import inspect_keras
from k2e.vetting.runner import outcome
from k2e.vetting.sandbox import SandboxLimits
from service.main import create_app
from tests.support.api_keys import admin_client, admin_files

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

PROBLEM = "application/problem+json"
STRICT = VetPolicy.of(["relu6"])


# --- files ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real Keras 2.15 files: the seed model as .h5 and .keras, and a Lambda model."""
    root = tmp_path_factory.mktemp("keras-files")
    seed = keras_models.seed_multi_io_model()
    seed.save(root / "seed.h5", save_format="h5")
    seed.save(root / "seed.keras")
    x = tf.keras.Input((2,), name="x")
    doubled = tf.keras.layers.Lambda(lambda t: t * 2, name="doubled")(x)
    lam = tf.keras.Model(x, tf.keras.layers.Dense(1, name="out")(doubled))
    lam.compile(optimizer="sgd", loss="mse")
    lam.save(root / "lambda.h5", save_format="h5")

    class MyClip(tf.keras.layers.Layer):
        pass

    clip = tf.keras.Model(x, MyClip(name="clip")(tf.keras.layers.Dense(2, name="d")(x)))
    clip.compile(optimizer="sgd", loss="mse")
    with tf.keras.utils.custom_object_scope({"MyClip": MyClip}):
        clip.save(root / "myclip.h5", save_format="h5")
    return {p.stem + p.suffix.replace(".", "_"): p for p in root.iterdir()}


def _seed_with(files: dict[str, Path], tmp: Path, change: Callable[[h5py.File], None]) -> bytes:
    """The seed HDF5 with something hostile added under /model_weights."""
    path = tmp / f"hostile-{os.urandom(4).hex()}.h5"
    path.write_bytes(files["seed_h5"].read_bytes())
    with h5py.File(path, "a") as h5:
        change(h5)
    return path.read_bytes()


def _with_config(files: dict[str, Path], tmp: Path, edit: Callable[[dict], None]) -> bytes:
    def change(h5: h5py.File) -> None:
        config = json.loads(h5.attrs["model_config"])
        edit(config)
        h5.attrs["model_config"] = json.dumps(config)

    return _seed_with(files, tmp, change)


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["name"] == name)


def _keras_zip(files: dict[str, Path], extra: dict[str, bytes] | None = None, **replace) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(files["seed_keras"]) as src, zipfile.ZipFile(buffer, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return buffer.getvalue()


def _external_link(h5: h5py.File) -> None:
    h5["model_weights/ext"] = h5py.ExternalLink("/etc/passwd", "/x")


def _virtual(h5: h5py.File) -> None:
    layout = h5py.VirtualLayout(shape=(3,), dtype="i8")
    layout[:] = h5py.VirtualSource("/etc/hostname", "data", shape=(3,))
    h5.create_virtual_dataset("model_weights/v", layout)


def _external_storage(h5: h5py.File) -> None:
    h5.create_dataset("model_weights/e", shape=(10,), dtype="f4", external=[("/etc/passwd", 0, 40)])


def _shape_bomb(h5: h5py.File) -> None:
    # 1e12 bytes declared, no chunk written: reading it would allocate a terabyte.
    h5.create_dataset("model_weights/b", shape=(250_000_000_000,), dtype="f4", chunks=(1 << 20,))


def _plugin_filter(h5: h5py.File) -> None:
    h5.create_dataset(
        "model_weights/f", shape=(8,), dtype="f4", compression=307, allow_unknown_filter=True
    )


def _unknown_class(config: dict) -> None:
    _layer(config, "merge")["class_name"] = "EvilLayer"


def _function_ref(config: dict) -> None:
    _layer(config, "dense_2")["config"]["activation"] = {
        "class_name": "function",
        "config": "system",
        "module": "os",
        "registered_name": "function",
    }


def _read_file_op(config: dict) -> None:
    layer = _layer(config, "merge")
    layer["class_name"] = "TFOpLambda"
    layer["config"]["function"] = "io.read_file"


# (case id, file name, content builder, text in the problem's detail)
CORPUS: list[tuple[str, str, Callable[[dict[str, Path], Path], bytes], str]] = [
    ("random-bytes", "m.h5", lambda f, t: os.urandom(4096), "not an HDF5 file"),
    ("empty", "m.h5", lambda f, t: b"", "empty"),
    ("truncated", "m.h5", lambda f, t: f["seed_h5"].read_bytes()[:3000], "corrupt or truncated"),
    (
        "magic-and-junk",
        "m.h5",
        lambda f, t: b"\x89HDF\r\n\x1a\n" + os.urandom(4096),
        "not an HDF5 file|corrupt or truncated",
    ),
    ("external-link", "m.h5", lambda f, t: _seed_with(f, t, _external_link), "external link"),
    ("virtual-dataset", "m.h5", lambda f, t: _seed_with(f, t, _virtual), "virtual dataset"),
    (
        "external-storage",
        "m.h5",
        lambda f, t: _seed_with(f, t, _external_storage),
        "external files",
    ),
    ("shape-bomb", "m.h5", lambda f, t: _seed_with(f, t, _shape_bomb), "declares 1000000000000"),
    ("plugin-filter", "m.h5", lambda f, t: _seed_with(f, t, _plugin_filter), "HDF5 filter 307"),
    ("lambda", "m.h5", lambda f, t: f["lambda_h5"].read_bytes(), "layer 'doubled' (Lambda)"),
    (
        "function-ref",
        "m.h5",
        lambda f, t: _with_config(f, t, _function_ref),
        "layer 'dense_2' (Dense) › activation: function 'system': refers to module 'os'",
    ),
    ("tf-read-file", "m.h5", lambda f, t: _with_config(f, t, _read_file_op), "'io.read_file'"),
    (
        "keras-extra-member",
        "m.keras",
        lambda f, t: _keras_zip(f, {"evil.py": b"import os"}),
        "member 'evil.py' is refused",
    ),
    (
        "keras-assets",
        "m.keras",
        lambda f, t: _keras_zip(f, {"assets/x.txt": b"x"}),
        "member 'assets/x.txt' is refused",
    ),
    (
        "keras-truncated",
        "m.keras",
        lambda f, t: f["seed_keras"].read_bytes()[:2000],
        "not a .keras (zip) archive",
    ),
    (
        "keras-not-zip",
        "m.keras",
        lambda f, t: f["seed_h5"].read_bytes(),
        "not a .keras (zip) archive",
    ),
    ("zip-named-h5", "m.h5", lambda f, t: f["seed_keras"].read_bytes(), "not an HDF5 file"),
    (
        "keras-lambda-config",
        "m.keras",
        lambda f, t: _keras_zip(f, **{"config.json": _keras_config(f, "Lambda")}),
        "(Lambda): Lambda layers hold marshalled Python bytecode",
    ),
]


def _keras_config(files: dict[str, Path], class_name: str) -> bytes:
    with zipfile.ZipFile(files["seed_keras"]) as archive:
        config = json.loads(archive.read("config.json"))
    _layer(config, "merge")["class_name"] = class_name
    return json.dumps(config).encode()


# --- through the API -----------------------------------------------------------------------------


def _refused(response: Any, match: str) -> dict[str, Any]:
    """A refused upload or spec: 422 (docs/security.md: even a file that crashes or hangs
    the reader), a problem whose detail names the reason."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == response.status_code
    # `match`: text the detail contains; "a|b" means either.
    assert any(part in body["detail"] for part in match.split("|")), body["detail"]
    return body


@pytest.mark.parametrize(("name", "filename", "build", "match"), CORPUS, ids=[c[0] for c in CORPUS])
def test_a_hostile_upload_is_a_4xx_naming_the_problem_and_the_api_lives_on(
    client: TestClient,
    settings: Settings,
    files: dict[str, Path],
    tmp_path: Path,
    name: str,
    filename: str,
    build: Callable[[dict[str, Path], Path], bytes],
    match: str,
) -> None:
    before = set((admin_files(settings.storage_root) / "models").iterdir())
    response = client.post("/models", files={"file": (filename, build(files, tmp_path))})
    _refused(response, match)
    assert client.get("/healthz").status_code == 200
    models_now = set((admin_files(settings.storage_root) / "models").iterdir())
    assert models_now == before, "nothing was kept"
    assert not list((settings.storage_root / "tmp").iterdir()), "the upload was removed"


def test_a_good_keras_archive_round_trips_like_its_hdf5(
    client: TestClient, files: dict[str, Path]
) -> None:
    keras_file = files["seed_keras"].read_bytes()
    created = client.post("/models", files={"file": ("seed.keras", keras_file)})
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["format"] == "keras"
    assert info["compiled"] is True
    assert [i["name"] for i in info["inputs"]] == ["input_a", "input_b"]
    assert [(o["name"], o["shape"]) for o in info["outputs"]] == [
        ("dense_2", [None, 3]),
        ("dense_3", [None, 2]),
    ]
    assert info["metric_names"] == ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"]
    h5 = client.post("/models", files={"file": ("seed.h5", files["seed_h5"].read_bytes())}).json()
    for key in ("inputs", "outputs", "compiled", "metric_names", "model_class"):
        assert info[key] == h5[key], key
    assert client.get(f"/models/{info['id']}").json() == info


def test_an_operator_may_allow_lambda_layers(
    tmp_path: Path, redis_server, files: dict[str, Path]
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, allow_lambda=True)
    with admin_client(create_app(settings)) as client:
        response = client.post("/models", files={"file": ("l.h5", files["lambda_h5"].read_bytes())})
    assert response.status_code == 201, response.text
    assert Settings.model_fields["allow_lambda"].default is False


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        ({"inspect_timeout_s": 0.001}, "took longer than 0.001 s"),
        ({"inspect_memory_bytes": 50_000_000}, "crashed|memory limit|more than 50000000 bytes"),
    ],
    ids=["wall-clock", "memory"],
)
def test_a_reader_that_hangs_or_crashes_is_a_4xx_and_the_api_lives_on(
    tmp_path: Path, redis_server, files: dict[str, Path], limits: dict[str, Any], match: str
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, **limits)
    with admin_client(create_app(settings)) as client:
        response = client.post("/models", files={"file": ("s.h5", files["seed_h5"].read_bytes())})
        _refused(response, match)
        assert client.get("/healthz").status_code == 200
    # The same file inspects fine within the default limits.
    with admin_client(create_app(Settings(data_dir=tmp_path, redis_url=redis_server.url))) as ok:
        response = ok.post("/models", files={"file": ("s.h5", files["seed_h5"].read_bytes())})
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("returncode", "match"),
    [(-11, r"crashed \(SIGSEGV\)"), (-24, "CPU-time limit"), (-9, "SIGKILL"), (3, "exited 3")],
)
def test_a_child_that_dies_while_reading_blames_the_file(returncode: int, match: str) -> None:
    done = subprocess.CompletedProcess([], returncode, b"k2e-sandbox: reading\n", b"")
    with pytest.raises(InvalidUpload, match=match):
        outcome(done, SandboxLimits())


def test_a_child_that_dies_before_reading_is_a_server_error() -> None:
    done = subprocess.CompletedProcess([], 1, b"", b"ModuleNotFoundError: k2e")
    with pytest.raises(Unavailable, match="failed to start.*ModuleNotFoundError"):
        outcome(done, SandboxLimits())


def test_an_inline_model_is_vetted_at_convert(client: TestClient, files: dict[str, Path]) -> None:
    config = json.loads(tf.keras.models.load_model(files["lambda_h5"], compile=False).to_json())
    spec = {
        "keras_model": {"config": config, "compile": {"loss": "mse"}},
        "train": {"dataset": "b" * 32, "max_steps": 1},
    }
    body = _refused(client.post("/convert", json=spec), "layer 'doubled' (Lambda)")
    assert body["errors"][0]["loc"] == ["keras_model", "config"]
    evil_optimizer = {"class_name": "Adam", "module": "os", "registered_name": None, "config": {}}
    spec["keras_model"] = {
        "config": json.loads(keras_models.seed_multi_io_model().to_json()),
        "compile": {"loss": "mse", "optimizer": evil_optimizer},
    }
    body = _refused(client.post("/convert", json=spec), "refers to module 'os'")
    assert body["errors"][0]["loc"] == ["keras_model", "compile"]
    assert client.get("/jobs").json()["items"] == []


def test_custom_classes_must_be_mapped_at_convert_on_every_path(
    client: TestClient, settings: Settings, files: dict[str, Path]
) -> None:
    content = files["myclip_h5"].read_bytes()
    # An upload keeps a class it cannot name yet, and says a spec must map it.
    response = client.post("/models", files={"file": ("c.h5", content)})
    assert response.status_code == 201, response.text
    assert response.json()["custom_names"] == ["MyClip"]
    # ... and a job that does not map it is refused, naming it; nothing is queued.
    spec = {"keras_model_path": response.json()["id"], "train": {"dataset": "x", "max_steps": 1}}
    body = _refused(client.post("/convert", json=spec), "class 'MyClip'")
    assert body["errors"][0]["loc"] == ["custom_objects"]
    assert client.get("/jobs").json()["items"] == []
    evil = _with_config(files, settings.data_dir, _unknown_class)
    response = client.post("/models", files={"file": ("e.h5", evil)})
    assert response.json()["custom_names"] == ["EvilLayer"]
    (admin_files(settings.storage_root) / "clip.h5").write_bytes(content)
    storage = Storage(settings.storage_root).for_tenant("default")
    spec = {"keras_model_path": "clip.h5", "train": {"dataset": "x", "max_steps": 1}}
    with pytest.raises(InvalidSpec, match="class 'MyClip'"):
        resolve_model(ConvertRequest.model_validate(spec), storage, settings=settings)
    spec["custom_objects"] = {"MyClip": "relu6"}
    resolved = resolve_model(ConvertRequest.model_validate(spec), storage, settings=settings)
    assert resolved.summary.layer_classes["clip"] == "MyClip"
    spec["custom_objects"] = {"MyClip": "not-in-the-registry"}
    with pytest.raises(InvalidSpec, match="class 'MyClip'"):
        resolve_model(ConvertRequest.model_validate(spec), storage, settings=settings)


# --- the vetting functions -----------------------------------------------------------------------


def _model(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"class_name": "Sequential", "config": {"name": "s", "layers": list(layers)}}


def _dense(name: str = "d", **config: Any) -> dict[str, Any]:
    return {"class_name": "Dense", "config": {"name": name, "units": 1, **config}}


def _refuses(config: Any, match: str, policy: VetPolicy = STRICT) -> None:
    with pytest.raises(InvalidUpload, match=match):
        vet_model_config(config, policy)


def test_real_configs_pass(files: dict[str, Path]) -> None:
    inputs = tf.keras.Input((5, 3))
    x = tf.keras.layers.Bidirectional(tf.keras.layers.LSTM(4, return_sequences=True))(inputs)
    x = tf.keras.layers.TimeDistributed(tf.keras.layers.Dense(2, activation="gelu"))(x)
    x = tf.reduce_sum(tf.nn.relu(x * 2.0)[:, 0], axis=-1, keepdims=True)  # pure TF op layers
    model = tf.keras.Model(inputs, x)
    model.compile(optimizer=tf.keras.optimizers.Adam(), loss="mse", metrics=["mae"])
    vet_model_config(json.loads(model.to_json()), STRICT)
    with zipfile.ZipFile(files["seed_keras"]) as archive:
        vet_model_config(json.loads(archive.read("config.json")), STRICT)
    with h5py.File(files["seed_h5"]) as h5:
        vet_model_config(json.loads(h5.attrs["training_config"]), STRICT, "training_config")


def test_lambda_is_refused_wherever_it_hides_unless_allowed() -> None:
    lam = {"class_name": "Lambda", "config": {"name": "hidden", "function_type": "lambda"}}
    wrapped = {"class_name": "TimeDistributed", "config": {"name": "td", "layer": lam}}
    nested = _model(_dense(), _model(wrapped))
    _refuses(nested, r"layer 's' \(Sequential\) › layer 'td' \(TimeDistributed\) › layer 'hidden'")
    _refuses(nested, "K2E_ALLOW_LAMBDA=true")
    vet_model_config(nested, VetPolicy.of([], allow_lambda=True))
    marker = {"class_name": "__lambda__", "config": {"value": "..."}}
    _refuses(_model(_dense(kernel_initializer=marker)), "Lambda layers hold")
    _refuses(_model(_dense(x={"function_type": "lambda"})), "a Python lambda")
    _refuses(_model(_dense(kernel_initializer={"class_name": "__function__"})), "marker")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (_model({"class_name": "Evil", "config": {"name": "e"}}), "class 'Evil' is neither"),
        (_model(_dense(activation="keras_export")), "activation 'keras_export'"),
        (
            _model(_dense(kernel_initializer={"class_name": "Zeros", "module": "antigravity"})),
            "refers to module 'antigravity'",
        ),
        (
            _model({"class_name": "relu6", "module": "x", "registered_name": None, "config": {}}),
            "refers to module 'x'",
        ),
        (
            _model(_dense(kernel_initializer={"class_name": "Zeros", "registered_name": "Evil"})),
            "registered_name 'Evil'",
        ),
        (
            {"class_name": "function", "config": "eval", "module": "builtins"},
            "function 'eval'",
        ),
        (
            {"class_name": "MeanMetricWrapper", "config": {"name": "m", "fn": "print"}},
            "fn 'print'",
        ),
        (
            _model({"class_name": "TensorFlowOpLayer", "config": {"name": "op"}}),
            "raw graph node",
        ),
        (
            _model({"class_name": "InstanceMethod", "config": {"attr_name": "__class__"}}),
            "tensor attribute",
        ),
        (
            _model(
                {"class_name": "ClassMethod", "config": {"cls_symbol": "io", "method_name": "x"}}
            ),
            "class method",
        ),
        ({"class_name": "__typespec__", "spec_name": "Popen"}, "type spec 'Popen'"),
        (_model({"class_name": 7, "config": {}}), "not a string"),
    ],
)
def test_what_vetting_refuses(config: dict[str, Any], match: str) -> None:
    _refuses(config, match)


def test_custom_names_and_pure_tf_ops_are_accepted() -> None:
    vet_model_config(_model({"class_name": "relu6", "config": {"name": "r"}}), STRICT)
    custom = {"class_name": "relu6", "module": "mine", "registered_name": "relu6", "config": {}}
    vet_model_config(_model(custom), STRICT)
    op = {"class_name": "TFOpLambda", "config": {"name": "t", "function": "math.multiply"}}
    vet_model_config(_model(op), STRICT)
    fn = {"class_name": "function", "config": "relu", "module": "builtins"}
    vet_model_config(_model(_dense(activation=fn)), STRICT)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    config: dict[str, Any] = {"leaf": 1}
    for _ in range(1000):
        config = {"x": config}
    _refuses(config, "nested deeper than")


def _h5(path: Path, build: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "w") as h5:
        build(h5)
    return path


def _vet_file(path: Path) -> None:
    with h5py.File(path) as h5:
        vet_h5_structure(h5, path.stat().st_size)


def test_soft_links_must_resolve_inside_the_file(tmp_path: Path) -> None:
    def good(h5: h5py.File) -> None:
        h5.create_dataset("g/w", data=np.zeros(3))
        h5["alias"] = h5py.SoftLink("/g/w")

    _vet_file(_h5(tmp_path / "ok.h5", good))

    def dangling(h5: h5py.File) -> None:
        h5["g/s"] = h5py.SoftLink("/nowhere")

    with pytest.raises(InvalidUpload, match="'/g/s' is a soft link to '/nowhere'"):
        _vet_file(_h5(tmp_path / "dangling.h5", dangling))

    def loop(h5: h5py.File) -> None:
        h5["a"] = h5py.SoftLink("/b")
        h5["b"] = h5py.SoftLink("/a")

    with pytest.raises(InvalidUpload, match="soft link"):
        _vet_file(_h5(tmp_path / "loop.h5", loop))


def test_compressed_weights_within_the_allowance_pass(tmp_path: Path) -> None:
    def gzip(h5: h5py.File) -> None:
        h5.create_dataset("w", data=np.zeros((256, 256), "f4"), compression="gzip")

    _vet_file(_h5(tmp_path / "gz.h5", gzip))


def _zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_keras_archive_members(tmp_path: Path, files: dict[str, Path]) -> None:
    with zipfile.ZipFile(files["seed_keras"]) as archive:
        config = archive.read("config.json")
        weights = archive.read("model.weights.h5")
    cases = [
        ([("config.json", config)], "lacks model.weights.h5"),
        ([("config.json", config), ("config.json", config)], "twice"),
        ([("config.json", b"[1]"), ("model.weights.h5", weights)], "not a JSON object"),
        ([("config.json", b"\xff"), ("model.weights.h5", weights)], "not UTF-8 JSON"),
        ([("config.json", config), ("model.weights.h5", b"junk" * 100)], "corrupt"),
    ]
    for members, match in cases:
        (tmp_path / "m.keras").write_bytes(_zip(members))
        with pytest.raises(InvalidUpload, match=match):
            inspect_keras(tmp_path / "m.keras")
    bomb = [("config.json", config), ("model.weights.h5", b"\0" * 50_000_000)]
    (tmp_path / "bomb.keras").write_bytes(_zip(bomb, zipfile.ZIP_DEFLATED))
    with pytest.raises(InvalidUpload, match="zip bomb"):
        inspect_keras(tmp_path / "bomb.keras")
    (tmp_path / "bz.keras").write_bytes(_zip(bomb[:1], zipfile.ZIP_BZIP2))
    with pytest.raises(InvalidUpload, match="compression method 12"):
        inspect_keras(tmp_path / "bz.keras")


def test_keras_compile_config_gives_plain_compile_arguments(tmp_path: Path) -> None:
    a = tf.keras.Input((4,), name="a")
    model = tf.keras.Model(
        a, {"c": tf.keras.layers.Dense(1, name="c")(a), "d": tf.keras.layers.Dense(2, name="d")(a)}
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(),
        loss={"c": tf.keras.losses.mse, "d": "categorical_crossentropy"},
        metrics={"c": [tf.keras.metrics.mae], "d": ["accuracy"]},
    )
    model.save(tmp_path / "m.keras")
    info = inspect_keras(tmp_path / "m.keras")
    assert info.format == "keras"
    assert info.compile_args is not None
    assert info.compile_args["loss"] == {"c": "mean_squared_error", "d": "categorical_crossentropy"}
    assert info.compile_args["metrics"] == {"c": ["mean_absolute_error"], "d": ["accuracy"]}
    assert info.compile_args["optimizer"]["class_name"] == "Adam"
    assert info.metric_names == ["c_mean_absolute_error", "d_accuracy"]
    tf.keras.Model(a, tf.keras.layers.Dense(1)(a)).save(tmp_path / "raw.keras")
    assert inspect_keras(tmp_path / "raw.keras").compiled is False
