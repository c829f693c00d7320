"""A cluster evaluator's copy of the chief's checkpoints on bucket storage
(worker/checkpoint_follower.py): real TensorFlow checkpoints, published as the chief
publishes them, into a bucket that is a local folder here."""

from pathlib import Path

import pytest

from k2e.blobstore import LocalBlobStore
from worker.checkpoint_follower import CheckpointFollower, pull_newest
from worker.sync import BucketDir, publish_checkpoint

tf = pytest.importorskip("tensorflow")


def _chief(bucket: BucketDir, model_dir: Path, steps: list[int], keep: int) -> None:
    """Save a checkpoint at each of ``steps`` in ``model_dir`` (the Saver keeps ``keep``),
    each published as the chief publishes it."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        v = tf.compat.v1.Variable(0.0, name="v")
        session.run(v.initializer)
        saver = tf.compat.v1.train.Saver(max_to_keep=keep, save_relative_paths=True)
        for step in steps:
            session.run(v.assign(float(step)))
            saver.save(session, str(model_dir / "model.ckpt"), global_step=step)
            assert publish_checkpoint(bucket, model_dir, step)


def _value(checkpoint: str) -> float:
    return float(tf.train.load_variable(checkpoint, "v"))


def test_the_newest_checkpoint_is_copied_and_the_ones_the_chief_dropped_go(
    tmp_path: Path,
) -> None:
    chief, mine = tmp_path / "chief", tmp_path / "evaluator"
    mine.mkdir()
    bucket = BucketDir(LocalBlobStore(tmp_path / "bucket"), "default", "jobs/j1")
    assert pull_newest(bucket, mine, None) is None  # nothing published yet

    _chief(bucket, chief, [10], keep=2)
    assert pull_newest(bucket, mine, None) == "model.ckpt-10"
    assert tf.train.latest_checkpoint(str(mine)) == str(mine / "model.ckpt-10")
    assert _value(str(mine / "model.ckpt-10")) == 10.0

    # Nothing new: nothing copied again.
    (mine / "model.ckpt-10.index").unlink()
    assert pull_newest(bucket, mine, "model.ckpt-10") == "model.ckpt-10"
    assert not (mine / "model.ckpt-10.index").exists()

    _chief(bucket, chief, [20, 30], keep=2)
    assert pull_newest(bucket, mine, "model.ckpt-10") == "model.ckpt-30"
    assert tf.train.latest_checkpoint(str(mine)) == str(mine / "model.ckpt-30")
    assert _value(str(mine / "model.ckpt-30")) == 30.0
    # The chief keeps 20 and 30: 10 leaves the evaluator's folder as it left the chief's.
    assert not list(mine.glob("model.ckpt-10.*"))


def test_the_follower_copies_each_new_checkpoint_until_stopped(tmp_path: Path) -> None:
    chief, mine = tmp_path / "chief", tmp_path / "evaluator"
    bucket = BucketDir(LocalBlobStore(tmp_path / "bucket"), "default", "jobs/j1")
    _chief(bucket, chief, [5], keep=5)
    follower = CheckpointFollower(bucket, mine, poll_s=0.05).start()
    try:
        for _ in range(200):
            if tf.train.latest_checkpoint(str(mine)):
                break
            follower._stop.wait(0.05)
    finally:
        follower.stop()
    assert follower.newest == "model.ckpt-5"
    assert tf.train.latest_checkpoint(str(mine)) == str(mine / "model.ckpt-5")
