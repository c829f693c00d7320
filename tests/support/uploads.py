"""Uploads through the API that must succeed (201), returning the upload's record."""

from pathlib import Path
from typing import Any


def upload(client: Any, path: str, name: str, content: bytes) -> dict:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()


def upload_dataset(client: Any, path: Path) -> dict:
    """Upload the dataset file at ``path`` under its own name."""
    response = client.post("/datasets", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()
