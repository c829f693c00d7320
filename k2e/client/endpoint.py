"""Where the client finds the API and its key.

The URL: ``K2E_URL``, else the user's config file, else ``http://127.0.0.1:8000`` (where
``make run`` serves). The key: ``K2E_API_KEY``, else the config file, else, for an API on
this machine (a loopback URL), the admin key ``make run`` wrote to
``$K2E_DATA_DIR/admin.key`` (``./data/admin.key`` by default).
"""

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from k2e.compat import tomllib

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None
    # Where each value came from, for `k2e config` and error messages.
    url_source: str
    key_source: str


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$K2E_CONFIG``, else ``$XDG_CONFIG_HOME/k2e/config.toml`` (``~/.config`` by default)."""
    env = os.environ if env is None else env
    if env.get("K2E_CONFIG"):
        return Path(env["K2E_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "k2e" / "config.toml"


def read_config_file(path: Path) -> dict[str, str]:
    """The file's ``url`` and ``api_key`` (absent file: nothing)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {key: str(data[key]) for key in ("url", "api_key") if data.get(key)}


def write_config_file(path: Path, url: str, api_key: str | None) -> None:
    """Write the file readable by its owner only: it holds a secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON strings are valid TOML basic strings for the printable text a URL or key holds.
    lines = [f"url = {json.dumps(url)}"]
    if api_key:
        lines.append(f"api_key = {json.dumps(api_key)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    path.chmod(0o600)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_admin_key_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("K2E_DATA_DIR") or "data") / "admin.key"


def resolve_config(
    url: str | None = None, api_key: str | None = None, env: dict[str, str] | None = None
) -> ClientConfig:
    """The URL and key, from the arguments first, then the sources above in order."""
    env = dict(os.environ) if env is None else env
    path = config_path(env)
    stored = read_config_file(path)
    if url:
        url_source = "argument"
    elif env.get("K2E_URL"):
        url, url_source = env["K2E_URL"], "K2E_URL"
    elif stored.get("url"):
        url, url_source = stored["url"], str(path)
    else:
        url, url_source = DEFAULT_URL, "default"
    key_source = "argument" if api_key else "none"
    if not api_key and env.get("K2E_API_KEY"):
        api_key, key_source = env["K2E_API_KEY"], "K2E_API_KEY"
    elif not api_key and stored.get("api_key"):
        api_key, key_source = stored["api_key"], str(path)
    elif not api_key and is_loopback(url):
        key_file = local_admin_key_path(env)
        try:
            api_key = key_file.read_text().strip() or None
            key_source = str(key_file) if api_key else "none"
        except OSError:
            pass
    return ClientConfig(url.rstrip("/"), api_key, url_source, key_source)
