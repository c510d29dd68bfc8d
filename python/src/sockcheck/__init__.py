"""sockcheck for Python test suites: lease loopback addresses and TCP ports
that no other process (of any user, binary or fallback) gets at the same
time, check who holds an address, and the pytest plugin (fixtures
``sockcheck_port`` and ``sockcheck_address``).

Every call runs the sockcheck binary: the one this package's wheel installed
beside the interpreter's scripts, else ``$SOCKCHECK_BIN``, else ``sockcheck``
on PATH. Without one (another OS, or ``SOCKCHECK_FALLBACK=1``) the same API
runs a plain-Python fallback and says so once (SockcheckFallbackWarning);
``SOCKCHECK_FALLBACK=0`` forbids it.
"""

from __future__ import annotations

from ._api import Lease, PortLease, acquire, acquire_port, backend, check
from ._binary import find_binary
from ._errors import SockcheckError, SockcheckFallbackWarning

__all__ = [
    "Lease",
    "PortLease",
    "SockcheckError",
    "SockcheckFallbackWarning",
    "acquire",
    "acquire_port",
    "backend",
    "check",
    "find_binary",
]

try:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("sockcheck")
    except PackageNotFoundError:
        __version__ = "0+unknown"
except ImportError:  # pragma: no cover
    __version__ = "0+unknown"
