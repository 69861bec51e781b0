// The page's subscription: peat_sync.client.subscription.ResilientSubscription in TypeScript.
//
// It remembers the last position the server vouched for and the store's epoch, and each new
// stream resumes from there; the server then replays, catches up, or sends a RESYNC followed
// by a snapshot. After a lost connection it reconnects with capped exponential backoff and
// jitter. Nothing is skipped without an event that says so.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";

import {
  ChangeType,
  type DocumentChange,
  type PeatSidecar,
  SubscribeRequestSchema,
} from "./gen/sidecar_pb.js";

/** Backoff of the Python client: the n-th retry in a row waits between half and all of
 * `initial * 2**n` seconds, capped at `maximum`; the jitter spreads the reconnections of
 * many pages after a server restart. */
export const BACKOFF_INITIAL = 0.1;
export const BACKOFF_MAXIMUM = 10;
// Three heartbeat intervals of a server on its default (10 s): a stream silent for longer has
// lost its server, even when no TCP reset ever arrives.
export const SILENCE_TIMEOUT = 30;

export function backoffDelay(attempt: number): number {
  const ceiling = Math.min(BACKOFF_MAXIMUM, BACKOFF_INITIAL * 2 ** Math.min(attempt, 32));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export type ConnectionState =
  | { readonly kind: "connecting" }
  | { readonly kind: "live" }
  | {
      readonly kind: "reconnecting";
      readonly reason: string;
      readonly delay: number;
      readonly attempt: number;
    }
  | { readonly kind: "paused" };

export interface FollowerEvents {
  /** Each event of the stream, in order; once it returns, the event counts as applied. */
  event(change: DocumentChange): void;
  state(state: ConnectionState): void;
}

/**
 * Follows the change feed of every collection with snapshots, and resumes an interrupted
 * catch-up from its start (the copy applies a catch-up only at its CATCH_UP_END).
 *
 * `position` and `epoch` are what a new stream resumes from; `pause()` closes the stream and
 * keeps them, `resume()` opens a new one from there.
 */
export class Follower {
  position: bigint | undefined;
  epoch: string | undefined;
  reconnections = 0;
  private holdingPosition = false; // in a snapshot or catch-up: the position stays put
  private failures = 0;
  private paused = false;
  private stream: AbortController | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly client: Client<typeof PeatSidecar>,
    private readonly listener: FollowerEvents,
  ) {}

  pause(): void {
    this.paused = true;
    this.stream?.abort();
    this.wake?.();
    this.listener.state({ kind: "paused" });
  }

  resume(): void {
    this.paused = false;
    this.failures = 0;
    this.wake?.();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Follow the feed for as long as the page lives. */
  async run(): Promise<never> {
    for (;;) {
      if (this.paused) {
        await this.sleep(Infinity);
        continue;
      }
      const reason = await this.follow();
      if (this.paused) {
        continue;
      }
      const delay = backoffDelay(this.failures);
      this.failures += 1;
      this.reconnections += 1;
      this.listener.state({ kind: "reconnecting", reason, delay, attempt: this.failures });
      await this.sleep(delay * 1000);
    }
  }

  /** One stream, until it fails or ends; the reason it was lost. */
  private async follow(): Promise<string> {
    const request = create(SubscribeRequestSchema, {
      collections: [], // empty: every collection
      snapshot: true, // the page holds a copy: a stream that cannot resume brings a snapshot
      controlEvents: true, // this page reads them all
      ...(this.position === undefined ? {} : { sinceSequence: this.position }),
      ...(this.epoch === undefined ? {} : { epoch: this.epoch }),
    });
    const stream = new AbortController();
    this.stream = stream;
    this.holdingPosition = false;
    let silent = false;
    let timer = 0;
    const listen = (): void => {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => {
        silent = true;
        stream.abort();
      }, SILENCE_TIMEOUT * 1000);
    };
    this.listener.state({ kind: "connecting" });
    listen();
    try {
      let first = true;
      for await (const batch of this.client.subscribeBatched(request, { signal: stream.signal })) {
        listen();
        if (first) {
          first = false;
          this.failures = 0;
          this.listener.state({ kind: "live" });
        }
        for (const change of batch.changes) {
          // Applied first: an event the listener failed on is not a resume point.
          this.listener.event(change);
          this.track(change);
        }
      }
      return "the server ended the stream";
    } catch (error) {
      if (silent) {
        return `no event or heartbeat for ${SILENCE_TIMEOUT} s`;
      }
      const failure = ConnectError.from(error);
      return `${Code[failure.code] ?? failure.code}: ${failure.rawMessage}`;
    } finally {
      window.clearTimeout(timer);
      this.stream = undefined;
    }
  }

  /** Track the resume point the event vouches for. */
  private track(event: DocumentChange): void {
    if (event.epoch) {
      this.epoch = event.epoch;
    }
    switch (event.changeType) {
      case ChangeType.SNAPSHOT_BEGIN:
        this.holdingPosition = true; // no resume point until the snapshot is complete
        this.position = undefined;
        break;
      case ChangeType.CATCH_UP_BEGIN:
        this.holdingPosition = true; // the copy applies it whole: resume from its start
        this.position = event.sequence;
        break;
      case ChangeType.CATCH_UP_END:
        this.holdingPosition = false;
        this.position = event.sequence;
        break;
      case ChangeType.RESYNC:
        this.position = undefined; // the snapshot that follows brings the copy back
        break;
      case ChangeType.UPSERT:
      case ChangeType.DELETE:
      case ChangeType.HEARTBEAT:
        if (!this.holdingPosition) {
          this.position = event.sequence;
        }
        break;
      default:
        break; // a control event of a later version: it can be ignored
    }
  }

  private sleep(milliseconds: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        window.clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = Number.isFinite(milliseconds) ? window.setTimeout(done, milliseconds) : 0;
      this.wake = done;
    });
  }
}
