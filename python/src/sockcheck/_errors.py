"""The error and the warning the package raises."""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["SockcheckError", "SockcheckFallbackWarning"]


class SockcheckError(Exception):
    """A failed sockcheck call.

    ``code`` says what went wrong, as the npm package's codes do:

    - ``SOCKCHECK_USAGE``: bad input (sockcheck's exit status 2, or a value
      the module refused before running it).
    - ``SOCKCHECK_STATE``: the state directory could not be used (exit 3;
      ``state_dir`` names it when sockcheck did).
    - ``SOCKCHECK_FAILED``: any other failure (exit 3, a signal, ...).
    - ``SOCKCHECK_NO_FREE_ADDRESS`` / ``SOCKCHECK_NO_FREE_PORT``: an acquire
      found nothing free; ``candidates`` says why, per address or port.
    - ``SOCKCHECK_NOT_RUN``: the binary could not be started, or no binary
      was found and ``SOCKCHECK_FALLBACK=0`` forbids the fallback.
    - ``SOCKCHECK_TIMEOUT``: sockcheck did not answer in time and was killed.
    - ``SOCKCHECK_BAD_OUTPUT``: sockcheck's output was not what was expected.
    - ``SOCKCHECK_NOT_LEASED``: a release of something not leased.
    """

    code: str
    exit_status: Optional[int]
    stderr: str
    argv: list[str]
    candidates: list[dict[str, Any]]
    report: Optional[dict[str, Any]]
    state_dir: Optional[str]
    source: Optional[str]

    def __init__(
        self,
        message: str,
        *,
        code: str = "SOCKCHECK_FAILED",
        exit_status: Optional[int] = None,
        stderr: str = "",
        argv: Sequence[str] = (),
        candidates: Sequence[dict[str, Any]] = (),
        report: Optional[dict[str, Any]] = None,
        state_dir: Optional[str] = None,
        source: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.exit_status = exit_status
        self.stderr = stderr
        self.argv = list(argv)
        self.candidates = list(candidates)
        self.report = report
        self.state_dir = state_dir
        self.source = source

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class SockcheckFallbackWarning(UserWarning):
    """No sockcheck binary is used: the plain-Python fallback runs instead."""
