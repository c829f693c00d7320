"""The export verifier (worker/verify.py) on real SavedModels: an export of the seed
model passes; the same export with one variable edited fails, and a failed check becomes
the job's `export_mismatch` error in the job store."""

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from k2e.jobs.job_store import NewJob  # noqa: E402
from k2e.jobs.leases import JobLeases  # noqa: E402
from k2e.schemas import JobStatus, TensorInfo  # noqa: E402
from tests.support import keras_models  # noqa: E402
from worker import export  # noqa: E402
from worker.verify import (  # noqa: E402
    estimator_predictions,
    generated_examples,
    mismatch_error,
    verify_export,
)

INPUTS = [
    TensorInfo(name="input_a", shape=[None, 16]),
    TensorInfo(name="input_b", shape=[None, 16]),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """The seed model's uploaded weights exported as a job exports them, with examples
    and the Estimator's own predictions on them."""
    model_dir = tmp_path_factory.mktemp("model_dir")
    tf.keras.backend.clear_session()
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=keras_models.seed_multi_io_model(), model_dir=str(model_dir)
    )
    checkpoint = str(model_dir / "keras" / "keras_model.ckpt")
    receiver = export.serving_input_fn(INPUTS, parse_examples=False)
    written = export.export_to_staging(estimator, model_dir, receiver, checkpoint)
    features = generated_examples(INPUTS, n=20)
    predictions = estimator_predictions(estimator, features, checkpoint)
    return written, features, predictions


def _corrupted_copy(source: Path, into: Path) -> Path:
    """A copy of the SavedModel whose dense_2 kernel has one entry changed by 0.5."""
    target = into / "corrupted"
    shutil.copytree(source, target)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(target))
        (kernel,) = [v for v in tf.compat.v1.global_variables() if v.name == "dense_2/kernel:0"]
        value = session.run(kernel)
        value[0, 0] += 0.5
        kernel.load(value, session)
        # The SavedModel's own saver writes the variables back under the same keys.
        saver = meta.saver_def
        prefix = str(target / "variables" / "variables")
        session.run(saver.save_tensor_name, {saver.filename_tensor_name: prefix})
    return target


def test_an_export_of_the_same_weights_verifies(exported) -> None:
    path, features, predictions = exported
    check = verify_export(path, features, predictions, tolerance=1e-6, examples_from="generated")
    assert check.verified is True
    assert check.examples == 20
    assert check.max_abs_diff <= 1e-6
    assert check.signatures == ["serving_default"]
    assert mismatch_error(check, 1e-6) is None


def test_an_export_with_edited_variables_fails_verification(exported, tmp_path) -> None:
    path, features, predictions = exported
    corrupted = _corrupted_copy(path, tmp_path)
    # The variables file now differs from the export's in exactly one number, by 0.5.
    before = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    after = tf.train.load_checkpoint(str(corrupted / "variables" / "variables"))
    keys = set(before.get_variable_to_shape_map())
    assert keys == set(after.get_variable_to_shape_map())
    changed = [
        np.abs(after.get_tensor(k) - before.get_tensor(k)).max()
        for k in sorted(keys)
        if np.asarray(before.get_tensor(k)).dtype.kind == "f"
    ]
    assert sorted(changed)[-2:] == [0.0, pytest.approx(0.5)]

    check = verify_export(corrupted, features, predictions, tolerance=1e-4, examples_from="eval")
    assert check.verified is False
    assert check.max_abs_diff > 1e-3
    error = mismatch_error(check, 1e-4)
    assert error is not None
    assert error.reason == "export_mismatch"
    assert "K2E_EXPORT_TOLERANCE" in error.message
    assert "20 eval examples" in error.message


def test_predictions_of_other_shapes_fail_verification(exported) -> None:
    path, features, predictions = exported
    wrong = {k: v[:, :1] for k, v in predictions.items()}
    check = verify_export(path, features, wrong, tolerance=1.0, examples_from="eval")
    assert check.verified is False
    assert check.max_abs_diff == float("inf")


def test_a_failed_verification_is_the_jobs_export_mismatch(exported, tmp_path) -> None:
    path, features, predictions = exported
    corrupted = _corrupted_copy(path, tmp_path)
    check = verify_export(corrupted, features, predictions, tolerance=1e-4, examples_from="eval")
    store = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_schema()
    job_id = str(uuid.uuid4())
    store.create(NewJob(job_id, "default", {}, "cpu", f"jobs/{job_id}", None))
    error = mismatch_error(check, 1e-4)
    job = store.finish(job_id, JobStatus.failed, error=error)
    assert job is not None
    assert job.status == JobStatus.failed
    assert job.error is not None
    assert job.error.reason == "export_mismatch"
    assert np.isfinite(check.max_abs_diff)
    assert f"{check.max_abs_diff:.6g}" in job.error.message
