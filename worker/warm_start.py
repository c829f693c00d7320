"""The checkpoint a fine-tuning job (``warm_start_from``) starts from: another job's,
read where it is kept (the storage folder, or copied from the bucket)."""

from pathlib import Path

from k2e.errors import InvalidSpec
from worker import sync
from worker.phases import JobFiles


def start_checkpoint(files: JobFiles, stored: str, scratch: Path) -> str:
    """The path of the checkpoint ``stored`` (relative to the tenant's folder), copied into
    ``scratch`` with bucket storage; InvalidSpec when it is gone."""
    if files.bucket is None:
        path = files.storage.resolve(stored)
        found: Path | None = path if Path(f"{path}.index").is_file() else None
    else:
        bucket = files.bucket
        found = sync.fetch_checkpoint(bucket.store, bucket.tenant_key(stored), scratch)
    if found is None:
        raise InvalidSpec(
            f"the checkpoint {stored} this job starts from is gone: its job was deleted, "
            "or it kept only newer checkpoints (keep_checkpoint_max)"
        )
    return str(found)
