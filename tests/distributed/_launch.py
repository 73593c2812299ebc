"""Launching ``torchrun ... -m s2dnas`` from the distributed tests (2 gloo processes on 127.0.0.1)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the repository: tests._models (the shared toy model) is imported from here
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT = 180  # seconds; a deadlock fails the test instead of hanging the suite


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This environment without torchrun's variables; one thread, loopback gloo, this folder and the
    repository root on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update({"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "HOME": str(tmp / "home"),
                "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    env.update(extra)
    return env


def start_torchrun(args: list[str], *, env: dict[str, str], cwd: Path,
                   module: str = "s2dnas") -> subprocess.Popen[str]:
    """Start ``torchrun --nproc_per_node=2 -m MODULE ARGS`` on 127.0.0.1 (output piped)."""
    cmd = [str(TORCHRUN), "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", module, *args]
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop a torchrun job as a scheduler would: SIGTERM to torchrun, which stops its workers.

    The workers run in sessions of their own, so a SIGKILL of torchrun's group would leave them
    running; SIGKILL only if torchrun has not exited within a minute.
    """
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()


def torchrun(args: list[str], *, env: dict[str, str], cwd: Path,
             module: str = "s2dnas") -> subprocess.CompletedProcess[str]:
    """Run ``torchrun --nproc_per_node=2 -m MODULE ARGS`` to the end; the job is stopped on timeout."""
    proc = start_torchrun(args, env=env, cwd=cwd, module=module)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        out, err = stop(proc)
        pytest.fail(f"torchrun timed out after {TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
