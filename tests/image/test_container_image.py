"""peat-sync's image, built from the Containerfile (tests/image/build.py) and run as a
sidecar: the server in the image, the client on the host, a unix socket in a directory both
share, SIGTERM to stop it.

`podman run` cannot run here (its runtime refuses this sandbox's cgroups), so the image runs
under `buildah run --isolation chroot`, with the image's own entrypoint, user and
environment, and with host directories as its volumes. buildah does not pass SIGTERM on (it
kills its child), so the test signals the server process itself, as a container runtime
signals a container's first process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers.clients import GrpcioApi, GrpcioClient, get, put, status
from tests.helpers.streams import grpcio_subscription
from tests.helpers.waiting import wait_until
from tests.image.build import Built, run

UID = 10001  # the Containerfile's user
SOCKETS = "/run/peat-sync"
DATA = "/var/lib/peat-sync"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(900)  # the first test builds the image


def image_config(image: str) -> dict[str, Any]:
    inspected = run("buildah", "inspect", "--type", "image", image, timeout=60)
    config: dict[str, Any] = json.loads(inspected.stdout)["Docker"]["config"]
    return config


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


class ContainerServer:
    """`peat-sync serve` in a working container of the image, with host directories as its
    volumes: `sockets` at /run/peat-sync and `data` at /var/lib/peat-sync."""

    def __init__(self, image: str, sockets: Path, data: Path, log: Path) -> None:
        self.sockets, self.data, self.log_path = sockets, data, log
        self.name = f"peat-test-{uuid.uuid4().hex[:8]}"
        self.config = image_config(image)
        run("buildah", "from", "--name", self.name, image, timeout=120)
        # buildah run mounts a fresh volume of its own on a path the image declares a VOLUME,
        # over the one given with -v for one of the two, picked at random: the working
        # container (not the image) drops the declarations, so that the -v volumes hold.
        undeclared = [f"--volume={path}-" for path in self.config["Volumes"]]
        run("buildah", "config", *undeclared, self.name, timeout=60)
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, *command: str) -> list[str]:
        """The `buildah run` command line that runs `command` in the container."""
        volumes = [f"{self.sockets}:{SOCKETS}", f"{self.data}:{DATA}"]
        options = [option for volume in volumes for option in ("-v", volume)]
        return ["buildah", "run", "--isolation", "chroot", *options, self.name, "--", *command]

    def start(self) -> None:
        entrypoint = [*self.config["Entrypoint"], *(self.config.get("Cmd") or [])]
        earlier = len(self.log)  # of an earlier start
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(self.run(*entrypoint), stdout=log, stderr=log)
        self.process = process
        wait_until(
            lambda: "serving peat.sidecar.v1" in self.log[earlier:] or process.poll() is not None,
            timeout=START_TIMEOUT,
            what="the server in the image to serve",
        )
        assert process.poll() is None, self.log

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def server_pid(self) -> int:
        """The server's own process, below buildah's."""
        assert self.process is not None
        for pid in descendants(self.process.pid):
            try:
                # A script's process takes the script's name; buildah's has its own.
                if Path(f"/proc/{pid}/comm").read_text().strip() == "peat-sync":
                    return pid
            except OSError:  # it ended meanwhile
                continue
        raise AssertionError("no peat-sync serve process below buildah run")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        assert self.process is not None
        os.kill(self.server_pid, signum)
        return self.process.wait(STOP_TIMEOUT)

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Killed, buildah leaves its child running: kill the server and buildah's helper.
            for pid in descendants(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=120)


@pytest.fixture
def volumes(tmp_path: Path) -> tuple[Path, Path]:
    """Host directories for the image's volumes, writable by its user, as an emptyDir or a
    volume with fsGroup would be."""
    sockets, data = tmp_path / "sockets", tmp_path / "data"
    for directory in (sockets, data):
        directory.mkdir()
        os.chown(directory, UID, UID)
    return sockets, data


@pytest.fixture
def container(
    image: Built, volumes: tuple[Path, Path], tmp_path: Path
) -> Iterator[ContainerServer]:
    server = ContainerServer(image.image, *volumes, tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.remove()


def test_the_image_runs_serve_as_a_non_root_user_on_a_unix_socket(image: Built) -> None:
    config = image_config(image.image)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["peat-sync", "serve"]
    assert set(config["Volumes"]) == {SOCKETS, DATA}
    assert config["StopSignal"] == "SIGTERM"
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "peat-sync", "health"]
    env = dict(variable.split("=", 1) for variable in config["Env"])
    assert env["PEAT_SIDECAR_LISTEN"] == f"unix://{SOCKETS}/grpc.sock"
    assert env["PEAT_SIDECAR_ADDR"] == env["PEAT_SIDECAR_LISTEN"]
    assert env["PEAT_SIDECAR_DATA_DIR"] == DATA


def test_a_client_on_the_host_puts_gets_and_subscribes_through_the_shared_socket(
    container: ContainerServer, grpcio_api: GrpcioApi
) -> None:
    """The server in the image runs as its user and serves through the socket in the shared
    directory; the image's health check says it serves; SIGTERM drains (the subscriber is
    told where to resume) and the server exits 0; the data volume keeps the documents for the
    next start."""
    container.start()
    process_status = Path(f"/proc/{container.server_pid}/status").read_text()
    assert re.search(rf"^Uid:\s+{UID}\s", process_status, re.M), "it runs as the image's user"
    socket = container.sockets / "grpc.sock"
    mode = socket.stat()
    assert stat.S_ISSOCK(mode.st_mode)
    assert stat.S_IMODE(mode.st_mode) == 0o600
    assert mode.st_uid == UID

    health = container.config["Healthcheck"]["Test"][1:]
    probe = subprocess.run(container.run(*health), capture_output=True, text=True, timeout=60)
    assert (probe.returncode, probe.stdout) == (0, "serving\n"), probe.stderr

    client = GrpcioClient(f"unix://{socket}", grpcio_api)
    try:
        first = put(client, "commands", "c1", '{"state": "sent"}')
        assert get(client, "commands", "c1") == ('{"state": "sent"}', first)
        epoch = status(client)["epoch"]
        with grpcio_subscription(client, since_sequence=0) as subscription:
            assert subscription.next().sequence == first
            second = put(client, "commands", "c1", '{"state": "acknowledged"}')
            live = subscription.until(lambda event: event.sequence == second)
            assert [event.sequence for event in live][-1] == second

            assert container.stop(signal.SIGTERM) == 0
            with pytest.raises(grpc.RpcError) as ended:
                subscription.until(lambda event: False)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        advice = f"resubscribe with since_sequence={second} and epoch={epoch}"
        assert advice in (ended.value.details() or "")
    finally:
        client.close()
    drained = r"shutting down: \d+ calls under way, 1 of them subscriber streams"
    assert re.search(drained, container.log)
    assert f"stopped cleanly at sequence {second}" in container.log
    assert "Traceback" not in container.log
    assert not socket.exists(), "the socket is removed at exit"

    container.start()
    client = GrpcioClient(f"unix://{socket}", grpcio_api)
    try:
        assert get(client, "commands", "c1") == ('{"state": "acknowledged"}', second)
        assert status(client)["epoch"] == epoch
    finally:
        client.close()
    assert container.stop(signal.SIGTERM) == 0
