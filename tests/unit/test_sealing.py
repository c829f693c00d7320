"""The inspection child once confined (k2e.vetting.sealing): the upload alone is readable,
a module or file it did not load up front is refused and named, on any machine (not only
where k2e lives in a folder that ``nobody`` cannot enter). Run in a child process of its
own: a sealed process stays sealed."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SEALED = """
import codecs, json, sys
from k2e.vetting.sealing import Seal, prepare

prepare()
upload, other = sys.argv[1], sys.argv[2]
seal = Seal()
seal.close([upload])
found = {}
with open(upload, "rb") as f:
    found["upload"] = f.read()
try:
    open(other, "rb")
except PermissionError as exc:
    found["other"] = str(exc)
try:
    import xml.dom.minidom  # noqa: F401
except ModuleNotFoundError as exc:
    found["module"] = str(exc)
try:
    codecs.lookup("k2e-no-such-codec")
except LookupError:
    found["codec"] = "unknown"
found["upload"] = found["upload"].decode()
found["fault"] = seal.fault()
print(json.dumps(found))
"""


def test_a_sealed_child_reads_the_upload_alone_and_names_what_it_was_refused(
    tmp_path: Path,
) -> None:
    upload, other = tmp_path / "upload.h5", tmp_path / "other.json"
    upload.write_text("the upload")
    other.write_text("{}")
    done = subprocess.run(
        [sys.executable, "-c", SEALED, str(upload), str(other)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found = json.loads(done.stdout)
    assert found["upload"] == "the upload"
    assert "opened after the inspection child's confinement" in found["other"]
    assert "xml" in found["module"]
    assert found["codec"] == "unknown"
    # What the inspection needed besides the upload; a codec a file names is the file's.
    assert found["fault"] == f"the file {other}; the module xml"
