"""A store the server cannot use, end to end: a full disk and an I/O error while it serves
(the writers are told what happened, it is logged and counted, and writes resume once it is
fixed), and a store file that holds no store at start-up (refused, never replaced)."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.store.sqlite import DATABASE_FILE, WAL_FILE
from tests.helpers.cli import run_cli
from tests.helpers.clients import CallFailed, GrpcioApi, GrpcioClient, get, put
from tests.helpers.metrics import scrape
from tests.helpers.servers import StartServer

# The small disk's size: room for the store, and for a filler that takes the rest.
DISK_BYTES = 4 * 1024 * 1024
BIG_DOCUMENT = '{"pad": "' + "x" * 100_000 + '"}'


class ServerOnASmallDisk(ServerProcess):
    """`peat-sync serve` with its data dir on a file system of its own: DISK_BYTES of tmpfs,
    mounted in a mount namespace of the server's (a user namespace lets any user mount it).
    The test reaches the server's files through /proc/PID/root."""

    @property
    def argv(self) -> list[str]:
        return [*_on_a_small_disk(self.data_dir), *super().argv]

    def on_disk(self, name: str) -> Path:
        return Path(f"/proc/{self.pid}/root") / self.data_dir.relative_to("/") / name


def _on_a_small_disk(mount_point: Path) -> list[str]:
    """The command that runs the command after it with a small tmpfs at `mount_point`."""
    mount = f'mount -t tmpfs -o size={DISK_BYTES} tmpfs "$0" && exec "$@"'
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, str(mount_point)]


def small_disks_can_be_mounted(directory: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*_on_a_small_disk(directory), "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def fill(path: Path) -> None:
    """Write zeros to `path` until its disk is full."""
    chunk = bytes(64 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def put_failure(client: GrpcioClient, doc_id: str) -> tuple[str, str]:
    """The status and message of a put that must fail."""
    with pytest.raises(CallFailed) as raised:
        put(client, "c", doc_id, BIG_DOCUMENT)
    return raised.value.failure.code, raised.value.failure.message


def commit_failures(server: ServerProcess) -> float:
    return scrape(server)[("peat_commit_failures_total", ())]


def error_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log.splitlines() if " ERROR " in line]


@contextmanager
def grpcio_client_of(server: ServerProcess, grpcio_api: GrpcioApi) -> Iterator[GrpcioClient]:
    client = GrpcioClient(server.address, grpcio_api)
    try:
        yield client
    finally:
        client.close()


def test_a_full_disk_is_reported_as_such_and_writes_resume_once_space_is_freed(
    tmp_path: Path, grpcio_api: GrpcioApi
) -> None:
    """On a real full disk the writer gets UNAVAILABLE saying the disk is full and naming the
    store file (not SQLite's "cannot rollback - no transaction is active"), the log says the
    same, nothing of the write is stored, and once space is freed writes go on without a
    restart, numbered on from the last acknowledged one."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if not small_disks_can_be_mounted(data_dir):
        pytest.skip("this system lets no user namespace mount a tmpfs (unshare --user --mount)")
    server = ServerOnASmallDisk(data_dir, "--metrics-listen", "tcp://127.0.0.1:0")
    try:
        server.start()
        with grpcio_client_of(server, grpcio_api) as client:
            assert put(client, "c", "before", "{}") == 1
            fill(server.on_disk("filler"))

            code, message = put_failure(client, "big")
            assert code == "UNAVAILABLE"
            full = f"the disk holding {data_dir / DATABASE_FILE} is full"
            assert message == (
                f"the store could not commit the write: {full} (SQLITE_FULL: database or disk"
                " is full): free space on it; writes succeed again once there is room, without"
                " a restart"
            )
            assert commit_failures(server) == 1

            server.on_disk("filler").unlink()
            assert put(client, "c", "after", BIG_DOCUMENT) == 2
            assert get(client, "c", "big") == (None, 0)
        (line,) = error_lines(server)
        assert f"commit of 1 changes failed, none stored: {full} (SQLITE_FULL: " in line
        assert "rollback" not in server.log
    finally:
        server.kill()


def test_an_io_error_is_reported_as_such_counted_and_writes_resume_once_fixed(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """The same care for an I/O error, here a file size limit (RLIMIT_FSIZE) that the
    store's WAL cannot grow past: UNAVAILABLE naming the error and the store file, one log
    line, a count on /metrics, and writes go on once the limit is lifted."""
    server = start_server("--metrics-listen", "tcp://127.0.0.1:0")
    wal = server.data_dir / WAL_FILE
    with grpcio_client_of(server, grpcio_api) as client:
        assert put(client, "c", "before", "{}") == 1
        _, hard = resource.prlimit(server.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (wal.stat().st_size + 1, hard))

        code, message = put_failure(client, "big")
        assert code == "UNAVAILABLE"
        failed = (
            f"an I/O error on {server.data_dir / DATABASE_FILE} (SQLITE_IOERR_WRITE: disk I/O"
            " error): check the disk, its file system and the kernel log (dmesg), then retry"
        )
        assert message == f"the store could not commit the write: {failed}"
        assert commit_failures(server) == 1

        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert put(client, "c", "after", BIG_DOCUMENT) == 2
        assert get(client, "c", "big") == (None, 0)
    (line,) = error_lines(server)
    assert line.endswith(f"commit of 1 changes failed, none stored: {failed}")
    assert "rollback" not in server.log


def test_an_empty_store_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """A store file left at 0 bytes (a crash, a bad restore, a mistake) is not turned into a
    new, empty store: the server exits 1 with one error line that names the file and says how
    to start over, and leaves the file as it is."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store_file = data_dir / DATABASE_FILE
    store_file.touch()

    result = run_cli("serve", "--listen", "tcp://127.0.0.1:0", "--data-dir", str(data_dir))

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if " ERROR " in line]
    assert line.endswith(
        f"the store file {store_file} is empty (0 bytes), so the server will not start on it:"
        " a new store is created only where there is no store file. To start over with an"
        " empty store, move the file out of the way; to keep its documents, restore it from a"
        " backup"
    )
    assert store_file.stat().st_size == 0
    assert not (data_dir / WAL_FILE).exists()
