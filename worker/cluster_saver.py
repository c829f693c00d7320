"""Where a cluster job's checkpoints are written: by the chief, on the chief's own disk.

In between-graph replication the variables live on the parameter servers, and the Saver
the Estimator uses is sharded: model_to_estimator's (object-based checkpoints,
``Saver(var_list=..., sharded=True)`` in its model_fn) and the Estimator's default
(``Saver(sharded=True, ...)``) alike. A sharded Saver puts one SaveV2 op on each device
that holds variables. Measured (tensorflow 2.15.1 / estimator 2.15.0, the seed example,
a chief, a worker and a parameter server; tests/unit/test_cluster_saver.py prints them):
the sharded Saver's SaveV2 ops are on ``/job:ps/task:0/device:CPU:0`` (and, for
object-based checkpoints, one more on ``/job:chief/task:0/device:CPU:0``), and its
MergeV2Checkpoints, which writes the ``.index`` and moves the shards into place, on
``/job:ps/task:0/device:CPU:0`` too. So the parameter server writes the checkpoint to the
model_dir path on ITS OWN file system, which is the chief's folder only when every node
shares one folder.

:func:`chief_saves` replaces it, in the training graph of a cluster member, by a Saver
that is not sharded, built inside the model_fn (under the Estimator's replica device
setter, which puts every op but the variables on the member's own task): its one SaveV2
op runs on ``/job:chief/task:0``, reading the variables from the parameter servers, and
the chief writes every file of every checkpoint into its own model_dir. It keeps what
the Saver it replaces would keep (var_list and object-checkpoint restore of the Keras
model_fn's; ``keep_checkpoint_max`` and ``keep_checkpoint_every_n_hours`` of the
RunConfig for the Estimator's default), so a cluster job keeps the checkpoints a
single-node job of the same spec keeps.
"""

from collections.abc import Callable
from typing import Any

from worker.tfrt import tf

SAVE_OPS = ("SaveV2", "MergeV2Checkpoints")


def chief_saves(model_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``model_fn`` whose training graphs save through one unsharded Saver."""

    def wrapped(features: Any, labels: Any, mode: str, config: Any) -> Any:
        spec = model_fn(features, labels, mode, config)
        if mode != tf.estimator.ModeKeys.TRAIN:
            return spec
        saver = unsharded_saver(spec.scaffold.saver, config)
        scaffold = tf.compat.v1.train.Scaffold(saver=saver, copy_from_scaffold=spec.scaffold)
        return spec._replace(scaffold=scaffold)

    return wrapped


def unsharded_saver(replaced: Any, config: Any) -> Any:
    """A Saver with ``sharded=False`` that saves and keeps what ``replaced`` (the model_fn's
    own Saver, or None for the Estimator's default) would."""
    if replaced is None:  # as Estimator._train_with_estimator_spec builds its default
        return tf.compat.v1.train.Saver(
            sharded=False,
            max_to_keep=config.keep_checkpoint_max,
            keep_checkpoint_every_n_hours=config.keep_checkpoint_every_n_hours,
            save_relative_paths=True,
        )
    saver = tf.compat.v1.train.Saver(
        var_list=replaced._var_list,
        sharded=False,
        max_to_keep=replaced._max_to_keep,
        keep_checkpoint_every_n_hours=replaced._keep_checkpoint_every_n_hours,
        save_relative_paths=replaced._save_relative_paths,
    )
    restore = getattr(replaced, "_object_restore_saver", None)
    if restore is not None:  # model_to_estimator's: restores object-based checkpoints too
        saver._object_restore_saver = restore
    return saver


def save_devices(graph_def: Any, saver_def: Any) -> dict[str, set[str]]:
    """The devices of the save ops (SaveV2, MergeV2Checkpoints) of the Saver ``saver_def``
    names, in ``graph_def``: {op type: devices}."""
    scope = saver_def.save_tensor_name.split("/", 1)[0] + "/"
    found: dict[str, set[str]] = {}
    for node in graph_def.node:
        if node.op in SAVE_OPS and node.name.startswith(scope):
            found.setdefault(node.op, set()).add(node.device)
    return found
