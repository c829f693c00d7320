"""The ``k2e`` command (typer + rich) over the Python client in k2e.client."""
