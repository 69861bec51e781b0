// The live page of a peat-sync node: its status, a copy of every collection kept equal to
// the store by the change feed, the feed itself, and what each RESYNC and catch-up did.
//
// It talks to the node that serves it, over the Connect protocol (binary; `?format=json` for
// Connect's JSON, which a browser's developer tools show as text).

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";

import { ConsistentCopy } from "./copy.js";
import { Follower } from "./follower.js";
import { PeatSidecar } from "./gen/sidecar_pb.js";
import { View } from "./view.js";

/** How often the node's status is asked for (ms). */
const STATUS_INTERVAL = 1000;

function main(): void {
  const transport = createConnectTransport({
    baseUrl: window.location.origin,
    useBinaryFormat: new URLSearchParams(window.location.search).get("format") !== "json",
  });
  const client = createClient(PeatSidecar, transport);
  const copy = new ConsistentCopy();
  const view = new View(copy, () => ({ position: follower.position, epoch: follower.epoch }));
  let snapshots = 0;
  let away = false; // lost or paused the feed, and not live again yet

  const follower: Follower = new Follower(client, {
    event(change) {
      const collecting = copy.collecting;
      const applied = copy.apply(change);
      // What the page shows must not stop the copy: a failure to show is logged, and the
      // next redraw shows the copy whole again.
      try {
        view.event(change, collecting);
        for (const { collection, docId } of applied.changes) {
          view.documentChanged(collection, docId);
        }
        if (applied.completed !== undefined) {
          const first = applied.completed.snapshot && snapshots++ === 0;
          view.completed(applied.completed, applied.changes.length, first);
        }
        view.refresh();
      } catch (error) {
        console.error("the page failed to show an event", change, error);
      }
    },
    state(state) {
      if (state.kind === "live" && away) {
        view.notice(
          "resumed",
          follower.position === undefined
            ? "Back on the change feed: the copy is re-listed from a new snapshot."
            : `Back on the change feed: resumed after sequence ${follower.position}.`,
        );
      }
      away =
        state.kind === "reconnecting" ||
        state.kind === "paused" ||
        (away && state.kind === "connecting");
      view.connectionState(state);
      view.refresh();
    },
  });
  view.onPause(() => (follower.isPaused ? follower.resume() : follower.pause()));
  view.refresh();
  void follower.run();

  const pollStatus = async (): Promise<void> => {
    try {
      view.status(await client.getStatus({}, { timeoutMs: 5000 }));
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      view.status(undefined, `status unavailable: ${reason}`);
    }
    window.setTimeout(() => void pollStatus(), STATUS_INTERVAL);
  };
  void pollStatus();
}

main();
