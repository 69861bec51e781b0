"""The live page in a real browser: headless Chromium from Debian's packages, driven by
Selenium through Debian's chromedriver, and the page read as a person sees it.

`LivePage.sample()` reads in one script (which no event of the page can interleave with)
the document tables and the sequence and epoch the page says they equal. `History` knows
what the store held at every sequence, because the test is the store's only writer: each
sample must be the store at the sequence it names, so a page that showed a state the store
never had (half a catch-up, a stale document after a RESYNC) fails whenever it is looked at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.helpers.clients import Client, delete, get, list_ids, put
from tests.helpers.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, and nothing that reaches outside this machine.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1150",
)
# Set, the tests fail instead of skipping where Chromium or its driver is missing (.ci/run).
REQUIRE_BROWSER = "PEAT_REQUIRE_BROWSER"
# Set to a path (relative to the repository), the RESYNC test saves its screenshot there too.
SCREENSHOT_TO = "PEAT_SCREENSHOT_TO"
# How long the page may take to show what the store holds.
PAGE_TIMEOUT = 20.0

T = TypeVar("T")
# {collection: {doc_id: (sequence, document)}}
Documents = dict[str, dict[str, tuple[int, Any]]]


def missing_browser() -> list[str]:
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]


def open_browser(user_data_dir: Path) -> WebDriver:
    """Headless Chromium with a fresh profile. Both binaries are given, so Selenium Manager
    downloads nothing."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.set_script_timeout(PAGE_TIMEOUT)
    return driver


# One synchronous read of the page: nothing the page does can come between its parts.
_SAMPLE = """
const state = document.getElementById("copy-state");
const documents = {};
for (const section of document.querySelectorAll("#collections > section")) {
  const rows = {};
  for (const row of section.querySelectorAll("tbody > tr")) {
    const cell = (name) => row.querySelector("td." + name).textContent;
    rows[cell("doc-id")] = [cell("seq"), cell("json")];
  }
  documents[section.dataset.collection] = rows;
}
return {
  epoch: state.dataset.epoch || "",
  sequence: state.dataset.sequence,
  ready: state.dataset.ready === "true",
  documents: documents,
  connection: document.getElementById("connection").textContent,
};
"""


@dataclass(frozen=True)
class Sample:
    """What the page showed at one moment."""

    epoch: str
    sequence: int
    ready: bool
    documents: Documents
    connection: str


class LivePage:
    """The page at `url`, in `driver`."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url
        driver.get(url)

    def sample(self) -> Sample:
        raw = self.driver.execute_script(_SAMPLE)
        documents = {
            collection: {
                doc_id: (int(sequence), json.loads(text))
                for doc_id, (sequence, text) in rows.items()
            }
            for collection, rows in raw["documents"].items()
        }
        return Sample(
            raw["epoch"], int(raw["sequence"]), raw["ready"], documents, raw["connection"]
        )

    def connection(self) -> str:
        return str(self.driver.find_element(By.ID, "connection").text)

    def wait(self, condition: Callable[[], T], what: str, timeout: float = PAGE_TIMEOUT) -> T:
        """`wait_until`, failing with what the page shows at the time."""
        try:
            return wait_until(condition, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.console()}") from None

    def wait_for_connection(self, state: str) -> None:
        self.wait(lambda: self.connection() == state, f"the page to show {state!r}")

    def notices(self, kind: str) -> list[str]:
        """The texts of the notices of one kind (resync, snapshot, catch-up, resumed), newest
        first."""
        texts = self.driver.execute_script(
            "return [...document.querySelectorAll(`#notices li[data-kind='${arguments[0]}']`)]"
            ".map((item) => item.innerText);",
            kind,
        )
        return [str(text) for text in texts]

    def wait_for_notice(self, kind: str, count: int = 1) -> list[str]:
        """Wait for `count` notices of `kind`; their texts, newest first."""

        def enough() -> list[str] | None:
            notices = self.notices(kind)
            return notices if len(notices) >= count else None

        notices = self.wait(enough, f"{count} {kind!r} notices")
        assert notices is not None
        return notices

    def feed(self) -> list[tuple[int, str, str]]:
        """The change feed's lines, newest first: (sequence, event type, what changed)."""
        lines = self.driver.execute_script(
            "return [...document.querySelectorAll('#feed-lines > tr')]"
            ".map((row) => [...row.cells].map((cell) => cell.textContent));"
        )
        return [(int(sequence), kind, what) for sequence, kind, what in lines]

    def status(self, name: str) -> str:
        """A field of the node status panel (head_sequence, epoch ...), as shown."""
        return str(self.driver.find_element(By.CSS_SELECTOR, f'dd[data-field="{name}"]').text)

    def click_pause(self) -> None:
        """The Pause/Resume button."""
        self.driver.find_element(By.ID, "pause").click()

    def console(self) -> str:
        """What the page says and logged so far, for failure messages: its connection, its
        notices, the newest lines of its feed and its console messages."""
        notices = self.driver.execute_script(
            "return [...document.querySelectorAll('#notices li')].map((item) => item.innerText);"
        )
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return "\n".join(
            [
                f"connection: {self.connection()}",
                "notices:",
                *(f"  {notice}" for notice in notices),
                "feed:",
                *(f"  {line}" for line in self.feed()[:20]),
                "browser console:",
                *(f"  {entry['message']}" for entry in entries),
            ]
        )

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), f"no screenshot saved to {path}"


@dataclass
class History:
    """Every change the test committed to one store (one epoch), by sequence."""

    changes: list[tuple[int, str, str, str | None]] = field(default_factory=list)

    def record(self, sequence: int, collection: str, doc_id: str, json_data: str | None) -> None:
        assert not self.changes or sequence > self.changes[-1][0], (sequence, self.changes[-1])
        self.changes.append((sequence, collection, doc_id, json_data))

    @property
    def head(self) -> int:
        return self.changes[-1][0] if self.changes else 0

    def at(self, sequence: int) -> Documents:
        """The store at `sequence`."""
        documents: Documents = {}
        for committed, collection, doc_id, json_data in self.changes:
            if committed > sequence:
                break
            if json_data is None:
                documents.get(collection, {}).pop(doc_id, None)
                if collection in documents and not documents[collection]:
                    del documents[collection]
            else:
                documents.setdefault(collection, {})[doc_id] = (committed, json.loads(json_data))
        return documents


class Writer:
    """Puts and deletes through gRPC, each recorded in the `History` of the store's epoch."""

    def __init__(self, client: Client, epoch: str) -> None:
        self.client = client
        self.histories: dict[str, History] = {epoch: History()}
        self.epoch = epoch
        self.collections: set[str] = set()

    def new_store(self, client: Client, epoch: str) -> None:
        """The server now has another store (a wiped data dir): a new epoch, a new history."""
        assert epoch not in self.histories, f"epoch {epoch} again"
        self.client = client
        self.epoch = epoch
        self.histories[epoch] = History()

    def put(self, collection: str, doc_id: str, document: Any) -> int:
        json_data = json.dumps(document)
        sequence = put(self.client, collection, doc_id, json_data)
        self.histories[self.epoch].record(sequence, collection, doc_id, json_data)
        self.collections.add(collection)
        return sequence

    def delete(self, collection: str, doc_id: str) -> int:
        sequence = delete(self.client, collection, doc_id)
        assert sequence, f"{collection}/{doc_id} was not there to delete"
        self.histories[self.epoch].record(sequence, collection, doc_id, None)
        return sequence

    def store(self) -> Documents:
        """The store's documents, as ListDocuments and GetDocument show them."""
        documents: Documents = {}
        for collection in sorted(self.collections):
            for doc_id in list_ids(self.client, collection):
                json_data, sequence = get(self.client, collection, doc_id)
                assert json_data is not None, f"{collection}/{doc_id} is listed but absent"
                documents.setdefault(collection, {})[doc_id] = (sequence, json.loads(json_data))
        return documents

    def check(self, sample: Sample) -> Sample:
        """The page must show the store as it was at the sequence it names."""
        history = self.histories.get(sample.epoch)
        if sample.ready:
            assert history is not None, f"the page shows epoch {sample.epoch!r}: no such store"
            if sample.sequence > history.head:
                return sample  # a write the server committed, not yet recorded here
            expected = history.at(sample.sequence)
            assert sample.documents == expected, (
                f"the page shows a state the store never had at sequence {sample.sequence}:\n"
                f"page:  {sample.documents}\nstore: {expected}"
            )
        return sample


def wait_for_store(page: LivePage, writer: Writer, timeout: float = PAGE_TIMEOUT) -> Sample:
    """Wait until the page shows exactly what ListDocuments and GetDocument read from the
    store now; every sample on the way must be the store at its own sequence."""
    store = writer.store()
    last: list[Sample] = []

    def shows_the_store() -> bool:
        sample = writer.check(page.sample())
        last[:] = [sample]
        return sample.ready and sample.epoch == writer.epoch and sample.documents == store

    try:
        wait_until(shows_the_store, timeout=timeout, what="the page to show the store")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\npage:  {last}\nstore: {store}\n{page.console()}") from None
    return last[0]


def frozen(page: LivePage, writer: Writer, during: Callable[[], T]) -> T:
    """Run `during` and check the page's copy did not move meanwhile (it is paused)."""
    before = writer.check(page.sample())
    result = during()
    after = writer.check(page.sample())
    assert (after.sequence, after.documents) == (before.sequence, before.documents)
    return result


def screenshot_to() -> Path | None:
    """Where PEAT_SCREENSHOT_TO asks for a copy of a screenshot, relative to the repository."""
    target = os.environ.get(SCREENSHOT_TO)
    if not target:
        return None
    return Path(__file__).resolve().parent.parent.parent / target
