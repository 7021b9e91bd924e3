"""The one lifecycle of the local services, on a stand-in process (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.services import process
from runtime.services.layout import ServicePaths

MARKER = "segflow-test-standin"


def standin(
    tmp_path: Path, ready_file: Path, *, exits: bool = False
) -> tuple[ServicePaths, process.Service, process.Launch]:
    paths = ServicePaths.at(tmp_path, tmp_path / "var")
    port = 1  # nothing listens on port 1: the pid file alone says whether it runs
    service = process.Service("standin", MARKER, "127.0.0.1", (port,), ready_file.exists)
    code = (
        "import sys; sys.exit(3)"
        if exits
        else (f"import pathlib, time; pathlib.Path({str(ready_file)!r}).touch(); time.sleep(60)")
    )

    def prepare() -> list[str]:
        return [sys.executable, "-c", code, MARKER]

    return paths, service, prepare


def test_start_waits_until_ready_then_status_and_stop_know_it(tmp_path: Path) -> None:
    paths, service, prepare = standin(tmp_path, tmp_path / "ready")
    assert process.start(paths, service, prepare, timeout=30) is True
    st = process.status(paths, service)
    assert st.running and st.ready and st.managed and st.pid is not None
    assert process.start(paths, service, prepare, timeout=30) is False  # already running
    assert process.stop(paths, service, timeout=5) is True
    assert not process.is_alive(st.pid)
    assert not process.status(paths, service).running
    assert process.stop(paths, service, timeout=5) is False


def test_a_process_that_dies_while_starting_is_an_error_naming_its_log(tmp_path: Path) -> None:
    paths, service, prepare = standin(tmp_path, tmp_path / "never", exits=True)
    with pytest.raises(process.ServiceError, match=r"exited while starting; see .*standin\.log"):
        process.start(paths, service, prepare, timeout=30)


def test_a_process_never_ready_is_killed_at_the_deadline(tmp_path: Path) -> None:
    paths, service, prepare = standin(tmp_path, tmp_path / "ready")
    never = process.Service(service.name, MARKER, service.host, service.ports, lambda: False)
    with pytest.raises(process.ServiceError, match="not ready after 1 s"):
        process.start(paths, never, prepare, timeout=1)
    pid = int(paths.pid_file("standin").read_text())
    assert not process.is_alive(pid)
