"""Where a cluster chief's checkpoints are written (worker/cluster_saver.py): the training
graph the chief's Estimator builds under TF_CONFIG (its replica device setter, variables
on the parameter server), with the Saver its checkpoint hook uses. No server is started:
device placement is the graph's own."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from k2e.examples.seed_data import seed_multi_io_data  # noqa: E402
from k2e.examples.seed_models import seed_multi_io_model  # noqa: E402
from worker.cluster_saver import chief_saves, save_devices, unsharded_saver  # noqa: E402

CLUSTER = {
    "chief": ["127.0.0.1:2220"],
    "worker": ["127.0.0.1:2221"],
    "ps": ["127.0.0.1:2222"],
}
CHIEF = "/job:chief/task:0"


def _training_graph(
    model_dir: Path, checkpoint_format: str, cluster_saving: bool, monkeypatch: Any
) -> dict[str, set[str]]:
    """The save ops' devices of the Saver the chief's training saves with."""
    task = {"type": "chief", "index": 0}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": task}))
    config = tf.estimator.RunConfig(model_dir=str(model_dir), keep_checkpoint_max=3)
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=seed_multi_io_model(), config=config, checkpoint_format=checkpoint_format
    )
    model_fn = chief_saves(estimator.model_fn) if cluster_saving else estimator.model_fn
    data = seed_multi_io_data(n=8)
    features = {k: data[k] for k in ("input_a", "input_b")}
    labels = {k: data[k] for k in ("dense_2", "dense_3")}
    with tf.Graph().as_default() as graph, graph.device(estimator._device_fn):
        tf.compat.v1.train.get_or_create_global_step()
        batch = tf.compat.v1.data.Dataset.from_tensor_slices((features, labels)).batch(4)
        x, y = tf.compat.v1.data.make_one_shot_iterator(batch).get_next()
        spec = model_fn(x, y, tf.estimator.ModeKeys.TRAIN, estimator.config)
        saver = spec.scaffold.saver
        if saver is None:  # what Estimator._train_with_estimator_spec adds
            saver = tf.compat.v1.train.Saver(sharded=True, defer_build=True)
        saver.build()
        if cluster_saving:
            assert saver._max_to_keep == (3 if checkpoint_format == "saver" else 5)
        return save_devices(graph.as_graph_def(), saver.saver_def)


@pytest.mark.parametrize("checkpoint_format", ["checkpoint", "saver"])
def test_the_sharded_saver_writes_a_shard_on_the_parameter_server(
    tmp_path: Path, checkpoint_format: str, monkeypatch: Any
) -> None:
    """The measured fact: the library's Saver has the parameter server write a shard."""
    devices = _training_graph(tmp_path, checkpoint_format, False, monkeypatch)
    print(f"{checkpoint_format}, sharded: {devices}")
    assert "/job:ps/task:0/device:CPU:0" in devices["SaveV2"]
    assert devices["MergeV2Checkpoints"] == {"/job:ps/task:0/device:CPU:0"}


@pytest.mark.parametrize("checkpoint_format", ["checkpoint", "saver"])
def test_a_cluster_members_saver_writes_every_checkpoint_on_the_chief(
    tmp_path: Path, checkpoint_format: str, monkeypatch: Any
) -> None:
    devices = _training_graph(tmp_path, checkpoint_format, True, monkeypatch)
    print(f"{checkpoint_format}, chief_saves: {devices}")
    assert devices["SaveV2"] == {CHIEF}
    assert set().union(*devices.values()) == {CHIEF}


def test_the_unsharded_saver_keeps_what_the_default_saver_keeps() -> None:
    config = tf.estimator.RunConfig(keep_checkpoint_max=7, keep_checkpoint_every_n_hours=2)
    with tf.Graph().as_default():
        tf.compat.v1.Variable(np.zeros(2), name="v")
        saver = unsharded_saver(None, config)
        assert (saver._max_to_keep, saver._keep_checkpoint_every_n_hours) == (7, 2)
        assert not saver._sharded
        assert saver._save_relative_paths
