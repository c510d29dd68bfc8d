"""Finding and running the sockcheck binary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ._errors import SockcheckError

__all__ = ["find_binary", "Result", "run", "failure", "parse_json"]

#: Added to an operation's own wait for the child's watchdog.
MARGIN_SECONDS = 30.0


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _scripts_dirs() -> list[str]:
    """Where pip puts a wheel's executables for this interpreter: the
    scheme's scripts dir (a venv's bin/), then the user scheme's."""
    dirs: list[str] = []
    try:
        dirs.append(sysconfig.get_path("scripts"))
    except KeyError:
        pass
    try:
        dirs.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    except KeyError:
        pass
    return [d for d in dict.fromkeys(dirs) if d]


def find_binary() -> Optional[tuple[str, str]]:
    """The sockcheck binary and where it was found: ``("wheel", path)`` (the
    one this package's wheel installed beside the interpreter's scripts),
    ``("env", path)`` (``$SOCKCHECK_BIN``) or ``("path", path)`` (``PATH``).
    ``None`` when there is none."""
    if sys.platform.startswith("linux"):
        for d in _scripts_dirs():
            candidate = os.path.join(d, "sockcheck")
            if _executable(candidate) and not _is_python_script(candidate):
                return ("wheel", candidate)
    env = os.environ.get("SOCKCHECK_BIN", "").strip()
    if env:
        return ("env", env)
    on_path = shutil.which("sockcheck")
    if on_path and not _is_python_script(on_path):
        return ("path", on_path)
    return None


def _is_python_script(path: str) -> bool:
    """A console-script shim is not the binary (running it would come back here)."""
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except OSError:
        return True
    return head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]


_commands: dict[str, frozenset[str]] = {}


def has_command(bin_path: str, sub: str) -> bool:
    """Whether this binary has the command ``sub`` (from its ``--help``
    listing, read once per binary): an older binary has no ``acquire-port``."""
    if bin_path not in _commands:
        names: set[str] = set()
        try:
            p = subprocess.run([bin_path, "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               errors="replace", timeout=MARGIN_SECONDS, check=False)
            listing = p.stdout.split("Commands:", 1)[1] if "Commands:" in p.stdout else ""
            for line in listing.splitlines():
                if not line.strip():
                    if names:
                        break
                    continue
                if line.startswith("  ") and not line.startswith("   "):
                    names.add(line.split()[0])
        except (OSError, subprocess.TimeoutExpired):
            pass
        _commands[bin_path] = frozenset(names)
    return sub in _commands[bin_path]


@dataclass
class Result:
    argv: list[str]
    status: int
    stdout: str
    stderr: str


def run(bin_path: str, args: Sequence[str], sub: str, timeout: Optional[float]) -> Result:
    """Run sockcheck; every exit status is returned, callers judge it."""
    argv = [bin_path, *args]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           errors="replace", timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise SockcheckError(
            f"sockcheck {sub}: no answer after {timeout:.0f}s; killed",
            code="SOCKCHECK_TIMEOUT", argv=argv, stderr=_text(e.stderr),
        ) from None
    except OSError as e:
        raise SockcheckError(
            f"sockcheck {sub}: cannot run {bin_path} ({e.strerror or e}); "
            "reinstall the sockcheck wheel, set SOCKCHECK_BIN or put sockcheck on PATH",
            code="SOCKCHECK_NOT_RUN", argv=argv,
        ) from e
    return Result(argv, p.returncode, p.stdout, p.stderr)


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data if isinstance(data, str) else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


_STATE_DIR = re.compile(r"state directory (\S+?):? ")


def failure(sub: str, r: Result, table: Optional[dict[int, tuple[str, str]]] = None) -> SockcheckError:
    """The error for an unexpected exit status."""
    stderr = r.stderr.strip()
    state_dir: Optional[str] = None
    if r.status < 0:
        code, what = "SOCKCHECK_FAILED", f"killed by signal {-r.status}"
    elif table and r.status in table:
        code, what = table[r.status]
    elif r.status == 2:
        code, what = "SOCKCHECK_USAGE", "bad usage"
    elif r.status == 3 and re.search(r"\bstate directory\b", stderr):
        code, what = "SOCKCHECK_STATE", "the state directory failed"
        m = _STATE_DIR.search(stderr)
        state_dir = m.group(1) if m else None
    else:
        code, what = "SOCKCHECK_FAILED", f"exit status {r.status}"
    return SockcheckError(
        f"sockcheck {sub}: {what}: {_last_line(stderr) or '(no message)'}",
        code=code, exit_status=r.status, stderr=stderr, argv=r.argv, state_dir=state_dir,
        source="sockcheck",
    )


def parse_json(sub: str, r: Result) -> dict[str, Any]:
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise SockcheckError(
            f"sockcheck {sub}: unexpected output: {r.stdout.strip()[:200] or '(none)'}",
            code="SOCKCHECK_BAD_OUTPUT", exit_status=r.status, stderr=r.stderr.strip(), argv=r.argv,
            source="sockcheck",
        )
    return doc
