"""What a member sees of a job's messages: no Python tracebacks, no server paths.

A worker's log lines and a failed job's error carry what Python and TensorFlow wrote:
tracebacks (``File "/srv/.../training.py", line 42, in run``), TensorFlow's "defined at
(most recent call last)" node stacks, absolute paths. Admins see them as written; a
member sees the error's type, message and reason, with the frames left out and paths
shown relative to its tenant's folder (or by their last part).
"""

import re

# "Traceback (most recent call last):" and TensorFlow's "... defined at (most recent call
# last):" introduce frames; each frame is a `File "...", line N` line and the source lines
# indented under it.
_TRACEBACK_HEAD = re.compile(r"^\s*Traceback \(most recent call last\):\s*$")
_DEFINED_AT = re.compile(r"\s*defined at \(most recent call last\):")
_FRAME = re.compile(r'^(\s*)File "')  # a log line cut at its length limit may end mid-frame
# An absolute path of two parts or more, not inside a URL or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w./:~-])/(?:[\w.+@=-]+/)+([\w.+@=-]*)")
# "started by host:pid:nonce": members see "started" (no host or pid in their answers).
_OWNER = re.compile(r"^started by \S+")


def without_tracebacks(text: str) -> str:
    """``text`` without traceback headers and frames (the exception lines stay)."""
    if "File " not in text and "most recent call last" not in text:
        return text
    kept: list[str] = []
    frame_indent: int | None = None
    for line in text.split("\n"):
        if frame_indent is not None:
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent > frame_indent:
                continue  # the frame's source line (or its ^^^^ marker)
            frame_indent = None
        frame = _FRAME.match(line)
        if frame is not None:
            frame_indent = len(frame.group(1))
            continue
        if _TRACEBACK_HEAD.match(line):
            continue
        kept.append(_DEFINED_AT.sub("", line))
    return "\n".join(kept).strip("\n")


def member_text(text: str, roots: tuple[str, ...]) -> str:
    """A message as a member sees it. ``roots``: folders (ending in "/") whose paths are
    shown relative to them, the tenant's own first."""
    text = _OWNER.sub("started", without_tracebacks(text))
    for root in roots:
        text = text.replace(root, "")
    return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(1), text)
