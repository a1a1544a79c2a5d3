"""`dashboard`: the Optuna dashboard of a real finished study, loaded in headless Chromium; the
errors for a study that never ran and for a port already taken."""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line the process prints, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return process.stdout.readline()


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile; the page's scripts get 20 s of virtual time."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--window-size=1400,1000", "--virtual-time-budget=20000", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def dashboard(finished_study):
    """The dashboard of the finished study, served by the CLI; yields the URL it printed."""
    project, name = finished_study
    port = _free_port()
    process = subprocess.Popen(project.command("dashboard", "--study", name, "--port", str(port)), cwd=project.root,
                               env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(process, timeout=180)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/dashboard/studies/\d+", line)
        assert match and int(match.group(1)) == port, f"printed {line!r}"
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make test` installs it)")
def test_dashboard_shows_the_study_and_its_trials_in_a_browser(dashboard, tmp_path):
    dom = _chromium(tmp_path / "profile", "--dump-dom", f"{dashboard}/trials")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "finished" in dom.stdout
    shown = set(re.findall(r"Trial (\d+)", dom.stdout))
    assert shown == {str(number) for number in range(8)}, shown
    screenshot = tmp_path / "dashboard.png"
    shot = _chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", dashboard)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000  # a rendered page, not a blank one
    print(f"dashboard screenshot: {screenshot}")


def test_dashboard_of_a_study_that_never_ran_says_how_to_run_it(project):
    name = project.tiny("never-ran")
    result = project.run("dashboard", "--study", name, "--port", str(_free_port()), timeout=180)
    assert result.returncode == 2
    assert "no study 'never-ran'" in result.stderr and "optimize --study never-ran" in result.stderr


def test_dashboard_on_a_taken_port_names_the_port_and_what_to_do(finished_study):
    project, name = finished_study
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = project.run("dashboard", "--study", name, "--port", str(port), timeout=180)
    assert result.returncode == 1, result.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
