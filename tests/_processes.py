"""Start a few local processes for the distributed-training tests, and stop
every one of them, whatever happens to the test."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports the OS had free a moment ago.

    All sockets are held open until every port is read, so the ports differ;
    the OS picks them, so pytest workers running side by side do not collide.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def xla_cpu_devices(count: int) -> str:
    """`XLA_FLAGS` for a child JAX process with `count` simulated CPU devices,
    keeping this session's own flags (the noxfile's faster CPU compiles)."""
    own = os.environ.get("XLA_FLAGS", "")
    return f"{own} --xla_force_host_platform_device_count={count}".strip()


@dataclasses.dataclass
class Process:
    """One process to start: a name for messages, its arguments (after
    `python`) and the environment variables it adds."""

    name: str
    args: Sequence[str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Finished:
    name: str
    returncode: int | None  # None: killed at the timeout
    output: str


def run(
    processes: Sequence[Process], timeout: float, grace: float = 15.0
) -> list[Finished]:
    """Runs the processes side by side and returns when all have ended.

    A process still running `timeout` seconds after the start, or `grace`
    seconds after another one failed (its peers then usually wait forever in
    a collective), is killed with its whole process group. The groups are
    killed on the way out in any case, also when the test is interrupted.
    """
    base = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        running: list[tuple[Process, subprocess.Popen, pathlib.Path]] = []
        killed: set[int] = set()
        try:
            for i, proc in enumerate(processes):
                log = pathlib.Path(tmp) / f"{i}.log"
                with log.open("w") as out:
                    popen = subprocess.Popen(
                        [sys.executable, *proc.args],
                        env={**base, **proc.env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        cwd=ROOT,
                    )
                running.append((proc, popen, log))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                codes = [p.poll() for _, p, _ in running]
                if all(c is not None for c in codes):
                    break
                if any(c not in (None, 0) for c in codes):
                    deadline = min(deadline, time.monotonic() + grace)
                time.sleep(0.1)
        finally:
            for _, popen, _ in running:
                if popen.poll() is None:
                    killed.add(popen.pid)
                with contextlib.suppress(ProcessLookupError):
                    # Also the children of one that has ended (spawned workers).
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        return [
            Finished(
                proc.name,
                None if popen.pid in killed else popen.returncode,
                log.read_text(errors="replace"),
            )
            for proc, popen, log in running
        ]


def check(finished: Sequence[Finished], tail: int = 4000) -> None:
    """Fails naming each process that did not exit with 0, with its output's
    end (where the scripts print the step they were at)."""
    failed = [f for f in finished if f.returncode != 0]
    if failed:
        parts = [
            f"--- {f.name}: "
            + ("killed (timeout)" if f.returncode is None else f"exit {f.returncode}")
            + f" ---\n{f.output[-tail:]}"
            for f in failed
        ]
        raise AssertionError("\n".join(parts))
