"""What the client's import chain (k2e.client, k2e.cli, k2e.schemas) takes from Python 3.11,
with its 3.10 equivalent: the base install (the client and the ``k2e`` command) supports
Python 3.10 to 3.13, while the API and the worker run on 3.11 only."""

import sys
from datetime import timezone
from enum import Enum

# datetime.UTC is this same object, from 3.11 on.
UTC = timezone.utc  # noqa: UP017

if sys.version_info >= (3, 11):  # noqa: UP036 (the ruff target is the server's 3.11)
    import tomllib
    from enum import StrEnum
    from typing import Self
else:  # pragma: no cover - exercised by scripts/check_client_install.sh on 3.10
    import tomli as tomllib
    from typing_extensions import Self  # noqa: UP035

    class StrEnum(str, Enum):  # noqa: UP042
        """3.11's StrEnum: members are their values, in ``str()`` and in f-strings alike."""

        def __str__(self) -> str:
            return str(self.value)

        __format__ = str.__format__


__all__ = ["UTC", "Self", "StrEnum", "tomllib"]
