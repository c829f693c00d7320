"""``?redirect=true`` on the archive downloads: a 307 to a presigned URL of the bucket,
so the bytes go from the bucket to the client without passing through the API.

An archive is several objects, a URL names one: the archive is built once into the
job's model_dir (``<model_dir>/downloads/<name>``, the same bytes the streamed response
sends) and that object is presigned. Exports and checkpoints do not change once written,
so a later request reuses it; deleting the job removes it with the model_dir, and its
bytes count in the job's ``disk_bytes`` (the tenant's storage quota).
"""

from pathlib import Path

from fastapi.responses import RedirectResponse

from k2e.errors import Conflict
from k2e.jobs.job_store import JobStore
from k2e.storage import Storage
from service.archive import Stored, TarPlan, tar_gz_stream

DOWNLOADS_DIR = "downloads"


def require_bucket(storage: Storage) -> None:
    """Conflict (409) on the local folder: there is no URL to redirect to."""
    if storage.local:
        raise Conflict(
            "`redirect=true` needs bucket storage (K2E_STORAGE_URL=s3://...): this server "
            "keeps its files in a local folder; download without `redirect`"
        )


def redirect(
    storage: Storage,
    store: JobStore,
    job_id: str,
    model_dir: Path,
    members: list[tuple[Path | Stored, str]],
    filename: str,
    expires_s: int,
) -> RedirectResponse:
    """A 307 to a presigned URL of the archive ``filename`` (``.tar`` or ``.tar.gz``)
    of ``members``, built into the bucket first unless it is there already."""
    require_bucket(storage)
    key = storage.key(model_dir / DOWNLOADS_DIR / filename)
    if storage.blobs.size(key) is None:
        tmp = storage.tmp_path(".archive")
        try:
            plan = TarPlan(members)
            blocks = tar_gz_stream(plan) if filename.endswith(".gz") else plan.blocks()
            with tmp.open("wb") as out:
                for block in blocks:
                    out.write(block)
            storage.blobs.put_file(key, tmp)
            # Counted from the listing, not added: two requests racing to build the
            # same archive store one object, and count it once.
            store.record_disk_bytes(job_id, storage.stored_bytes(model_dir))
        finally:
            tmp.unlink(missing_ok=True)
    url = storage.blobs.presign(key, expires_s)
    assert url is not None  # a bucket always signs
    return RedirectResponse(url, status_code=307)
