"""The temporary directory of one ``run-local``: its store, subscriber file and env file.

Created private (mode 0700, files 0600: they hold a signing secret and the API
token) and removed, with everything in it, when the run ends.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

STORE_FILE = "webhooks.db"
ENV_FILE = "env"


class RunDirectory:
    """A private temporary directory, removed by :meth:`remove` (or on leaving ``with``)."""

    def __init__(self, parent: Path | None = None) -> None:
        # mkdtemp creates it with mode 0700.
        self.path = Path(tempfile.mkdtemp(prefix="webhooks-local-", dir=parent))

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.remove()

    @property
    def database_url(self) -> str:
        """The SQLite endpoint store (its key file is created beside it)."""
        return f"sqlite:///{self.path / STORE_FILE}"

    @property
    def env_file(self) -> Path:
        """The file a second shell sources."""
        return self.path / ENV_FILE

    def write_env_file(self, variables: Mapping[str, str], *, unset: Iterable[str] = ()) -> Path:
        """``export NAME=value`` lines (shell-quoted) a second shell can ``source``.

        ``unset`` names variables that, left over in that shell, would point the
        tools somewhere else (another key, other broker credentials).
        """
        lines = [
            "# The run-local demo's environment; removed when run-local stops.",
            f"#   source {shlex.quote(str(self.env_file))}",
        ]
        names = sorted(set(unset) - set(variables))
        if names:
            lines.append("unset " + " ".join(names))
        lines += [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
        _write_private(self.env_file, "\n".join(lines) + "\n")
        return self.env_file

    def remove(self) -> None:
        """Delete the directory and everything in it (nothing if it is gone already)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
