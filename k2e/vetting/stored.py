"""The inspection POST /models stored beside an upload, trusted again only for the same bytes.

A worker used to inspect every model file again in a fresh sandbox process (~0.6 s per
job) although the API had inspected the same bytes at upload. The upload's sha256 is
recorded in the job store (k2e.catalog), apart from the storage volume that holds the file
and its ``summary.json``: a file whose digest still matches that record is the file the
sandbox vetted, so its stored inspection describes it. The stored configs are vetted
again in-process (cheap, pure Python) because ``summary.json`` lives on the volume too.
"""

from pathlib import Path

from k2e.errors import InvalidUpload
from k2e.storage import file_sha256
from k2e.vetting.configs import VetPolicy, vet_model_config
from k2e.vetting.inspection import H5Summary


def verified_inspection(
    path: Path, stored: dict | None, recorded_sha256: str | None, policy: VetPolicy
) -> H5Summary | None:
    """The stored inspection if ``path`` still has the recorded digest and the stored
    configs pass ``policy``; None (inspect the file again) otherwise."""
    if stored is None or not recorded_sha256:
        return None
    try:
        summary = H5Summary.model_validate(stored)
    except ValueError:
        return None
    if file_sha256(path) != recorded_sha256:
        return None
    try:
        if summary.training_config is not None:
            vet_model_config(summary.training_config, policy, "training_config")
        if summary.compile_args is not None:
            vet_model_config(summary.compile_args, policy, "compile_args")
    except InvalidUpload:
        return None  # the sandbox's inspection gives the user its own answer
    return summary
