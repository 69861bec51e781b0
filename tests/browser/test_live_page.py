"""The live page at the server's HTTP address, in headless Chromium: it shows the node's
status, every collection's documents and the change feed, and its copy stays equal to the
store through deletes, restarts, catch-ups and RESYNCs.

The documents are written through gRPC; the page follows them over the Connect protocol.
Every look at the page checks that it shows the store as it was at the sequence it names
(`Writer.check`), and each test ends with the page equal to what ListDocuments and
GetDocument read.
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from peat_sync.bench.launcher import ServerProcess
from tests.browser.live_page import (
    PAGE_TIMEOUT,
    LivePage,
    Writer,
    frozen,
    screenshot_to,
    wait_for_store,
)
from tests.helpers.clients import GrpcioApi, GrpcioClient, status
from tests.helpers.servers import StartServer, stop_and_start
from tests.helpers.waiting import wait_until

# The burst written while the page's script is busy: about 8 MB, more than a browser and the
# loopback sockets buffer for a stream nobody reads.
BURST_WRITES = 100
PAD = 80_000
# Keeps the page's script busy (so it reads nothing) until the store has purged the tombstones
# up to a sequence, asking GetStatus in Connect's JSON with synchronous requests: true once
# purged, false after a timeout (ms).
BUSY_UNTIL_PURGED = """
const [sequence, timeout] = arguments;
const deadline = Date.now() + timeout;
while (Date.now() < deadline) {
  const request = new XMLHttpRequest();
  request.open("POST", "/peat.sidecar.v1.PeatSidecar/GetStatus", false);
  request.setRequestHeader("Content-Type", "application/json");
  request.send("{}");
  if (Number(JSON.parse(request.responseText).catchUpFloor ?? 0) >= sequence) {
    return true;
  }
  const pause = Date.now() + 20;
  while (Date.now() < pause) {}
}
return false;
"""

# Markup in a doc_id and in a document: the page must show it as text.
HOSTILE_ID = "<img src=x onerror=window.injected=1>"
HOSTILE = {"note": "<script>window.injected = 1</script><b>bold?</b>", "quote": "\"'&"}


def connect(server: ServerProcess, api: GrpcioApi) -> GrpcioClient:
    return GrpcioClient(server.address, api)


def open_page(browser: WebDriver, server: ServerProcess, query: str = "") -> LivePage:
    assert server.http_url, f"the server serves no HTTP:\n{server.log}"
    return LivePage(browser, server.http_url + query)


def test_the_page_serves_its_files(server: ServerProcess, browser: WebDriver) -> None:
    """`/` is the page, whose script and stylesheet load: the script fills in the status."""
    page = open_page(browser, server)
    assert browser.title == "peat-sync · live"
    page.wait(lambda: page.status("phase") == "ready", "the status to show the phase")


@pytest.mark.parametrize("wire", ["binary", "json"])
def test_the_page_shows_what_is_written_and_drops_what_is_deleted(
    start_server: StartServer,
    browser: WebDriver,
    grpcio_api: GrpcioApi,
    tmp_path: Path,
    wire: str,
) -> None:
    """Documents written before the page opened come in its snapshot, later ones live; a
    delete removes the row; the feed lists each change with its sequence; markup in doc_ids
    and documents is shown as text; the status panel shows the head. Over Connect's binary
    and JSON encodings alike."""
    server = start_server()
    client = connect(server, grpcio_api)
    try:
        writer = Writer(client, status(client)["epoch"])
        writer.put("nodes", "uav-1", {"name": "UAV 1", "status": 1, "readiness": 0.9})
        writer.put("tracks", "t-17", {"classification": "vehicle", "confidence": 0.8})
        page = open_page(browser, server, "?format=json" if wire == "json" else "")
        wait_for_store(page, writer)
        page.wait_for_connection("live")

        updated = writer.put("nodes", "uav-1", {"name": "UAV 1", "status": 2, "readiness": 0.4})
        writer.put("tracks", HOSTILE_ID, HOSTILE)
        writer.put("commands", "c-1", {"target_id": "uav-1", "command_type": "move"})
        wait_for_store(page, writer)
        deleted = writer.delete("tracks", "t-17")
        shown = wait_for_store(page, writer)
        assert "t-17" not in shown.documents["tracks"]

        feed = page.feed()
        assert (deleted, "delete", "tracks / t-17") in feed
        assert (updated, "upsert", "nodes / uav-1") in feed
        # Markup stays text: no element made of it, no script run, the text shown whole.
        assert browser.find_elements(By.CSS_SELECTOR, "#collections img, #collections b") == []
        assert browser.execute_script("return window.injected") is None
        row = browser.find_element(By.CSS_SELECTOR, 'section[data-collection="tracks"] tbody tr')
        assert HOSTILE_ID in row.text
        assert HOSTILE["note"] in row.text
        page.wait(
            lambda: (
                (page.status("head_sequence"), page.status("epoch")) == (str(deleted), writer.epoch)
            ),
            "the status panel to show the head and the epoch",
        )
        page.screenshot(tmp_path / "live-page.png")
    finally:
        client.close()


def test_the_page_rides_through_restarts_equal_to_the_store(
    start_unix_server: StartServer, browser: WebDriver, grpcio_api: GrpcioApi
) -> None:
    """While the server is down the page says it is reconnecting and keeps its copy; back,
    it resumes from its sequence (no RESYNC, no re-list) and follows the changes made since,
    after a graceful restart and after `kill -9`."""
    server = start_unix_server()
    client = connect(server, grpcio_api)
    writer = Writer(client, status(client)["epoch"])
    try:
        for number in range(1, 4):
            writer.put("nodes", f"uav-{number}", {"status": 1})
        page = open_page(browser, server)
        wait_for_store(page, writer)

        assert server.stop(signal.SIGTERM) == 0, server.log
        page.wait_for_connection("reconnecting")
        detail = browser.find_element(By.ID, "connection-detail").text
        assert "Lost the change feed" in detail
        writer.check(page.sample())
        server.start()
        page.wait_for_notice("resumed")
        writer.put("nodes", "uav-2", {"status": 3})
        writer.delete("nodes", "uav-3")
        wait_for_store(page, writer)

        stop_and_start(server, "kill -9")
        writer.put("tracks", "t-1", {"classification": "person"})
        writer.delete("nodes", "uav-1")
        wait_for_store(page, writer)
        page.wait_for_notice("resumed", count=2)
        assert page.notices("resync") == []
        assert page.notices("snapshot") == []
    finally:
        client.close()


def test_a_new_store_at_the_same_address_is_a_resync_and_a_new_copy(
    start_unix_server: StartServer, browser: WebDriver, grpcio_api: GrpcioApi
) -> None:
    """The server comes back on a wiped data dir: the page's position belongs to another
    epoch, so it gets RESYNC (unknown epoch) and re-lists, and shows none of the old store's
    documents."""
    server = start_unix_server()
    client = connect(server, grpcio_api)
    writer = Writer(client, status(client)["epoch"])
    try:
        writer.put("nodes", "old-1", {"status": 1})
        writer.put("tracks", "old-2", {"classification": "air"})
        page = open_page(browser, server)
        wait_for_store(page, writer)

        assert server.stop(signal.SIGTERM) == 0, server.log
        shutil.rmtree(server.data_dir)
        server.start()
        client.close()
        client = connect(server, grpcio_api)
        writer.new_store(client, status(client)["epoch"])
        writer.put("nodes", "new-1", {"status": 2})

        [resync] = page.wait_for_notice("resync")
        assert "unknown epoch" in resync
        shown = wait_for_store(page, writer)
        assert shown.documents == {"nodes": {"new-1": (1, {"status": 2})}}
        page.wait_for_notice("snapshot")
    finally:
        client.close()


def test_a_catch_up_patches_the_copy_and_a_resync_re_lists_it(
    start_server: StartServer, browser: WebDriver, grpcio_api: GrpcioApi, tmp_path: Path
) -> None:
    """Paused (its stream closed), the page misses more changes than the replay log keeps
    (`--replay-log-size 2`): resumed, it gets a catch-up, applied as one update, and says so.
    Paused again, it misses a delete whose tombstone is then purged (`--tombstone-retention
    0`), and more changes than the replay log keeps: resumed, it gets RESYNC (history
    compacted), says the copy is re-listed, and the snapshot that follows leaves it equal to
    the store, without the deleted document."""
    server = start_server("--replay-log-size", "2", "--tombstone-retention", "0")
    client = connect(server, grpcio_api)
    try:
        writer = Writer(client, status(client)["epoch"])
        writer.put("nodes", "uav-1", {"name": "UAV 1", "status": 1, "readiness": 0.92})
        writer.put("nodes", "uav-2", {"name": "UAV 2", "status": 1, "readiness": 0.75})
        writer.put("tracks", "t-1", {"classification": "vehicle", "confidence": 0.81})
        writer.put("commands", "c-1", {"target_id": "uav-1", "command_type": "survey"})
        page = open_page(browser, server)
        before = wait_for_store(page, writer)
        page.wait_for_connection("live")

        page.click_pause()
        page.wait_for_connection("paused")
        frozen(
            page,
            writer,
            lambda: [
                writer.put("nodes", "uav-2", {"name": "UAV 2", "status": 2, "readiness": 0.5}),
                writer.put("nodes", "uav-2", {"name": "UAV 2", "status": 3, "readiness": 0.2}),
                writer.put("tracks", "t-2", {"classification": "person", "confidence": 0.66}),
                writer.put("commands", "c-1", {"target_id": "uav-1", "command_type": "rtb"}),
            ],
        )
        page.click_pause()
        [catch_up] = page.wait_for_notice("catch-up")
        assert f"from sequence {before.sequence} " in catch_up
        wait_for_store(page, writer)
        assert page.notices("resync") == []

        page.click_pause()
        page.wait_for_connection("paused")
        deleted = frozen(
            page,
            writer,
            lambda: [
                writer.delete("tracks", "t-1"),
                writer.put("tracks", "t-3", {"classification": "air", "confidence": 0.93}),
                writer.put("nodes", "uav-3", {"name": "UAV 3", "status": 1, "readiness": 1.0}),
            ],
        )[0]
        wait_until(
            lambda: status(client)["catch_up_floor"] >= deleted,
            timeout=PAGE_TIMEOUT,
            what="the delete's tombstone to be purged",
        )
        page.click_pause()
        [resync] = page.wait_for_notice("resync")
        assert "history compacted" in resync
        assert "re-listed" in resync
        page.wait_for_notice("snapshot")
        shown = wait_for_store(page, writer)
        assert "t-1" not in shown.documents["tracks"]
        # The status panel is polled: the picture shows it once it has caught up too.
        wait_until(
            lambda: page.status("head_sequence") == str(shown.sequence),
            timeout=PAGE_TIMEOUT,
            what="the status panel to show the head",
        )

        page.screenshot(tmp_path / "live-page.png")
        readme = screenshot_to()
        if readme is not None:
            page.screenshot(readme)
    finally:
        client.close()


def test_a_page_that_stops_reading_is_healed_and_equal_to_the_store(
    start_server: StartServer, browser: WebDriver, grpcio_api: GrpcioApi
) -> None:
    """The page's script is kept busy (it reads nothing) while a burst of large writes fills
    what the browser and the sockets buffer, on a server whose subscriber buffer holds 4
    events and replay log 8: the server detaches the page's subscriber (a lag). Deletes
    follow, and their tombstones are purged (`--tombstone-retention 0`) before the page reads
    again: it gets RESYNC (slow consumer) and a snapshot, and shows the store."""
    server = start_server(
        "--broadcast-buffer-size", "4", "--replay-log-size", "8", "--tombstone-retention", "0"
    )
    client = connect(server, grpcio_api)
    try:
        writer = Writer(client, status(client)["epoch"])
        for number in range(10):
            writer.put("burst", f"d{number}", {"n": number})
        page = open_page(browser, server)
        wait_for_store(page, writer)

        def burst() -> None:
            for number in range(BURST_WRITES):
                writer.put("bulk", f"b{number % 20:02d}", {"n": number, "pad": "x" * PAD})
            # Deletes the page misses, being stalled by now.
            for number in range(10):
                writer.delete("burst", f"d{number}")

        # The sequence of the last delete: the page reads again once its tombstone is purged.
        last_delete = 10 + BURST_WRITES + 10
        busy = threading.Thread(target=burst)
        busy.start()
        purged = browser.execute_script(BUSY_UNTIL_PURGED, last_delete, PAGE_TIMEOUT * 1000)
        busy.join(PAGE_TIMEOUT)
        assert not busy.is_alive(), "the burst did not end"
        assert purged, f"the tombstones up to {last_delete} were not purged: {status(client)}"
        assert status(client)["lag_events"] >= 1, f"no lag:\n{server.log}"
        shown = wait_for_store(page, writer)
        assert set(shown.documents) == {"bulk"}
        [resync] = page.wait_for_notice("resync")
        assert "slow consumer" in resync
    finally:
        client.close()
