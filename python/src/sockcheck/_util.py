"""Input handling shared by the binary and the fallback: ports, durations, pools."""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
from typing import Iterable, Optional, Union

from ._errors import SockcheckError

__all__ = [
    "Ports",
    "Duration",
    "ports_arg",
    "port_list",
    "duration_arg",
    "duration_seconds",
    "pool_list",
    "canonical_address",
]

#: Ports as the API takes them: one port, a ``"9925,9926"`` / ``"9925-9927"``
#: string, or an iterable of ports.
Ports = Union[int, str, Iterable[int]]
#: A duration: seconds (a number or a timedelta), or a sockcheck duration
#: string (``"500ms"``, ``"30s"``, ``"2m"``).
Duration = Union[int, float, str, datetime.timedelta]

DEFAULT_POOL = "127.0.0.2-127.0.0.33"
DEFAULT_PORTS = (9925, 9926)


def _usage(message: str) -> SockcheckError:
    return SockcheckError(message, code="SOCKCHECK_USAGE")


def _one_port(text: object, what: str) -> int:
    if isinstance(text, bool):
        raise _usage(f"{what}: {text!r} is not a TCP port (1-65535)")
    if isinstance(text, int):
        n = text
    elif isinstance(text, str) and text.strip().isdigit():
        n = int(text.strip())
    else:
        raise _usage(f"{what}: {text!r} is not a TCP port (1-65535)")
    if not 1 <= n <= 65535:
        raise _usage(f"{what}: {n} is not a TCP port (1-65535)")
    return n


def port_list(ports: Ports, what: str = "ports") -> list[int]:
    """Every port of ``ports`` (ranges expanded, duplicates merged, in order)."""
    items: list[object]
    if isinstance(ports, (int, str)):
        items = [ports]
    else:
        items = list(ports)
    out: list[int] = []
    for item in items:
        if isinstance(item, str):
            for part in item.split(","):
                part = part.strip()
                if "-" in part:
                    lo_text, hi_text = part.split("-", 1)
                    lo, hi = _one_port(lo_text, what), _one_port(hi_text, what)
                    if lo > hi:
                        raise _usage(f"{what}: {part!r} is an empty range")
                    out.extend(range(lo, hi + 1))
                else:
                    out.append(_one_port(part, what))
        else:
            out.append(_one_port(item, what))
    if not out:
        raise _usage(f"{what}: no port given")
    return list(dict.fromkeys(out))


def ports_arg(ports: Ports, what: str = "ports") -> str:
    """The ``--ports`` value: a string is passed as written (sockcheck parses
    it and names what is wrong); anything else is checked and joined."""
    if isinstance(ports, str):
        if not ports.strip():
            raise _usage(f"{what}: no port given")
        return ports.strip()
    return ",".join(str(p) for p in port_list(ports, what))


def duration_seconds(value: Duration, what: str) -> float:
    """A duration in seconds (as sockcheck reads the string forms)."""
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise _usage(f"{what}: {value!r} is not a duration")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value.strip(), what)
    else:
        raise _usage(f"{what}: {value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise _usage(f"{what}: {value!r} is not a duration")
    return seconds


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(text: str, what: str) -> float:
    # The common forms, for the fallback's own waits; the binary takes more
    # ("1m30s", "2 minutes") and parses those itself.
    total = 0.0
    rest = text.replace(" ", "")
    if not rest:
        raise _usage(f"{what}: {text!r} is not a duration (examples: 0.5, '500ms', '30s', '2m')")
    try:
        return float(rest)
    except ValueError:
        pass
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        j = i
        while j < len(rest) and rest[j].isalpha():
            j += 1
        number, unit = rest[:i], rest[i:j]
        unit = {"sec": "s", "secs": "s", "second": "s", "seconds": "s", "min": "m", "mins": "m",
                "minute": "m", "minutes": "m", "hour": "h", "hours": "h"}.get(unit, unit)
        if not number or unit not in _UNITS:
            raise _usage(f"{what}: {text!r} is not a duration (examples: 0.5, '500ms', '30s', '2m')")
        total += float(number) * _UNITS[unit]
        rest = rest[j:]
    return total


def duration_arg(value: Duration, what: str) -> str:
    """The duration as sockcheck takes it on its command line."""
    if isinstance(value, str):
        duration_seconds(value, what)
        return value.strip()
    return f"{math.ceil(duration_seconds(value, what) * 1000)}ms"


def canonical_address(text: str, what: str = "address") -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise _usage(f"{what}: {text!r} is not an IP address") from None


def pool_list(pool: Optional[str]) -> list[str]:
    """The addresses of a pool (a range, a CIDR or a comma list), in order.
    ``None``: ``$SOCKCHECK_POOL``, else the binary's default pool."""
    what = "pool"
    if pool is None:
        env = os.environ.get("SOCKCHECK_POOL", "").strip()
        pool, what = (env, "SOCKCHECK_POOL") if env else (DEFAULT_POOL, "the default pool")
    out: list[str] = []
    for part in str(pool).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                out.extend(str(a) for a in ipaddress.ip_network(part, strict=False))
            elif "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = ipaddress.ip_address(lo_text.strip()), ipaddress.ip_address(hi_text.strip())
                if lo.version != hi.version or int(lo) > int(hi):
                    raise ValueError(part)
                if int(hi) - int(lo) > 65535:
                    raise _usage(f"{what}: {part!r} is too large a range")
                out.extend(str(ipaddress.ip_address(int(lo) + i)) for i in range(int(hi) - int(lo) + 1))
            else:
                out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise _usage(f"{what}: {part!r} is not an address, a range or a CIDR") from None
    if not out:
        raise _usage(f"{what}: no address given")
    return list(dict.fromkeys(out))
