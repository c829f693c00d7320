"""Downloads: a tar.gz answer saved as it is, or unpacked into a folder."""

import re
import tarfile
import tempfile
from pathlib import Path

import httpx

_FILENAME = re.compile(r'filename="?([^";]+)"?')


def archive_name(response: httpx.Response, fallback: str) -> str:
    """The name the API gives the archive (Content-Disposition), reduced to a file name."""
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = Path(match.group(1)).name if match else ""
    return name or fallback


def save_archive(response: httpx.Response, dest: Path, fallback: str) -> Path:
    """Write the streamed archive into the folder ``dest``; the file appears whole or not
    at all (written under a temporary name, then renamed)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / archive_name(response, fallback)
    with tempfile.NamedTemporaryFile(dir=dest, prefix=".k2e-", delete=False) as tmp:
        try:
            for chunk in response.iter_bytes():
                tmp.write(chunk)
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    Path(tmp.name).replace(target)
    return target


def unpack_archive(response: httpx.Response, dest: Path) -> list[Path]:
    """Unpack the streamed tar.gz into ``dest``; returns the top-level entries it made.
    The ``data`` filter refuses absolute paths, ``..``, links out of ``dest`` and devices."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as spool:
        for chunk in response.iter_bytes():
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:gz") as archive:
            names = archive.getnames()
            archive.extractall(dest, filter="data")
    tops = sorted({name.split("/", 1)[0] for name in names if name and name != "."})
    return [dest / top for top in tops]
