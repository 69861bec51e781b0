// What the page shows: the node's status, the copy's documents, the change feed and the
// notices. Every string from the server reaches the page as text (textContent), never as
// markup.

import type { ConsistentCopy, CompletedBatch, StoredDocument } from "./copy.js";
import type { ConnectionState } from "./follower.js";
import {
  ChangeType,
  type DocumentChange,
  type GetStatusResponse,
  NodePhase,
  ResyncReason,
} from "./gen/sidecar_pb.js";

/** Change feed lines kept on the page. */
export const FEED_LINES = 200;
/** Notices kept on the page. */
export const NOTICES = 8;
/** Rows shown per collection: the first by doc_id; the rest are counted, not shown. */
export const ROWS_PER_COLLECTION = 1000;
/** The documents are redrawn at most this often (ms), however fast changes come. */
const REDRAW_INTERVAL = 100;

type Child = Node | string;

export interface ResumePoint {
  readonly position: bigint | undefined;
  readonly epoch: string | undefined;
}

/** An element with attributes and children; strings become text nodes. */
function el(
  tag: string,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElement {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

function byId(id: string): HTMLElement {
  const element = document.getElementById(id);
  if (element === null) {
    throw new Error(`index.html has no #${id}`);
  }
  return element;
}

/** `NodePhase.READY` → `ready`, `ChangeType.CATCH_UP_END` → `catch up end`; a value this
 * proto does not know yet, as its number. */
function enumName(names: Record<number, string>, value: number): string {
  return (names[value] ?? String(value)).toLowerCase().replaceAll("_", " ");
}

export function changeTypeName(type: ChangeType): string {
  return enumName(ChangeType, type);
}

function time(): string {
  return new Date().toLocaleTimeString(undefined, { hour12: false });
}

export class View {
  private readonly collections = byId("collections");
  private readonly feed = byId("feed-lines");
  private readonly notices = byId("notices");
  private readonly connection = byId("connection");
  private readonly connectionDetail = byId("connection-detail");
  private readonly copyState = byId("copy-state");
  private readonly pauseButton = byId("pause");
  private readonly dirty = new Set<string>();
  private readonly changed = new Set<string>();
  private redraw = 0;
  // The snapshot or catch-up being collected: its kind, and its events, summed up in one
  // feed line at its CATCH_UP_END.
  private collectingSnapshot = false;
  private collected = 0;

  /** `resumePoint` tells where the subscription would resume, shown with the documents. */
  constructor(
    private readonly copy: ConsistentCopy,
    private readonly resumePoint: () => ResumePoint,
  ) {}

  onPause(toggle: () => void): void {
    this.pauseButton.addEventListener("click", toggle);
  }

  // Status --------------------------------------------------------------------------------

  status(status: GetStatusResponse | undefined, error?: string): void {
    const fields: Record<string, string> = status === undefined
      ? {}
      : {
          node_id: status.nodeId,
          phase: enumName(NodePhase, status.phase),
          head_sequence: status.headSequence.toString(),
          epoch: status.epoch,
          subscribers: status.subscribers.toString(),
          lag_events: status.lagEvents.toString(),
          replay_floor: status.replayFloor.toString(),
          catch_up_floor: status.catchUpFloor.toString(),
          mode: status.shared ? `shared (stream ${status.stream})` : "single node",
        };
    for (const dd of document.querySelectorAll<HTMLElement>("#status dd[data-field]")) {
      dd.textContent = fields[dd.dataset["field"] ?? ""] ?? "–";
    }
    byId("status-error").textContent = error ?? "";
    if (status !== undefined) {
      byId("node-id").textContent = status.nodeId;
    }
  }

  // Connection ----------------------------------------------------------------------------

  connectionState(state: ConnectionState): void {
    this.connection.dataset["state"] = state.kind;
    this.connection.textContent = state.kind;
    this.pauseButton.textContent = state.kind === "paused" ? "Resume" : "Pause";
    switch (state.kind) {
      case "connecting":
        this.connectionDetail.textContent = "Opening the change feed…";
        break;
      case "live":
        this.connectionDetail.textContent = "Following every change as it is committed.";
        break;
      case "reconnecting":
        this.connectionDetail.textContent =
          `Lost the change feed (${state.reason}). Reconnecting in ${state.delay.toFixed(1)} s ` +
          `(attempt ${state.attempt}); the copy below stays as it was until the stream resumes.`;
        break;
      case "paused":
        this.connectionDetail.textContent =
          "Paused: the copy below is frozen. Resume picks up from its sequence.";
        break;
    }
  }

  /** Show the copy's sequence and the resume point as they are now, soon after. */
  refresh(): void {
    this.scheduleDraw();
  }

  // Events --------------------------------------------------------------------------------

  /** An event the copy has applied; `collecting` tells whether the copy was collecting a
   * snapshot or catch-up when it arrived. */
  event(event: DocumentChange, collecting: boolean): void {
    const type = event.changeType;
    if (type === ChangeType.HEARTBEAT) {
      return; // no change: the copy's position says it
    }
    if (collecting && (type === ChangeType.UPSERT || type === ChangeType.DELETE)) {
      this.collected += 1; // summed up at CATCH_UP_END
      return;
    }
    switch (type) {
      case ChangeType.UPSERT:
      case ChangeType.DELETE:
        this.feedLine(event, `${event.collection} / ${event.docId}`);
        break;
      case ChangeType.SNAPSHOT_BEGIN:
      case ChangeType.CATCH_UP_BEGIN:
        this.collectingSnapshot = type === ChangeType.SNAPSHOT_BEGIN;
        this.collected = 0;
        this.feedLine(event, event.message);
        break;
      case ChangeType.RESYNC: {
        const reason = enumName(ResyncReason, event.resyncReason);
        this.feedLine(event, `${reason}: ${event.message}`);
        this.notice(
          "resync",
          `RESYNC (${reason}) at sequence ${event.sequence}: the server cannot bring this copy ` +
            "up to date change by change, so the copy is being re-listed from a new snapshot.",
          event.message,
        );
        break;
      }
      case ChangeType.CATCH_UP_END:
        this.feedLine(
          event,
          this.collectingSnapshot
            ? `snapshot of ${this.collected} documents, applied as one update`
            : `catch-up of ${this.collected} changed documents, applied as one update`,
        );
        break;
      default:
        this.feedLine(event, event.message);
    }
  }

  /** A snapshot or catch-up the copy applied whole. */
  completed(batch: CompletedBatch, changes: number, first: boolean): void {
    if (batch.snapshot && first) {
      return; // the page's first snapshot is no news
    }
    if (batch.snapshot) {
      this.notice(
        "snapshot",
        `Re-listed: the snapshot at sequence ${batch.to} replaced the copy ` +
          `(${batch.events} documents received, ${changes} changed, added or removed).`,
      );
    } else {
      this.notice(
        "catch-up",
        `Caught up from sequence ${batch.from} to ${batch.to}: the latest state of ` +
          `${batch.events} changed documents was applied as one update ` +
          "(intermediate states were skipped).",
      );
    }
  }

  private feedLine(event: DocumentChange, text: string): void {
    const type = changeTypeName(event.changeType);
    const line = el(
      "tr",
      { class: `type-${type.replaceAll(" ", "-")}` },
      el("td", { class: "seq" }, event.sequence.toString()),
      el("td", { class: "type" }, type),
      el("td", { class: "what" }, text),
    );
    this.feed.prepend(line);
    while (this.feed.childElementCount > FEED_LINES) {
      this.feed.lastElementChild?.remove();
    }
  }

  notice(kind: string, text: string, detail?: string): void {
    document.getElementById("no-notices")?.remove();
    const item = el(
      "li",
      { class: `notice notice-${kind}`, "data-kind": kind },
      el("time", {}, time()),
      " ",
      text,
    );
    if (detail) {
      item.append(el("div", { class: "detail" }, detail));
    }
    this.notices.prepend(item);
    while (this.notices.childElementCount > NOTICES) {
      this.notices.lastElementChild?.remove();
    }
  }

  // Documents -----------------------------------------------------------------------------

  /** Mark a document changed; the documents are redrawn soon after. */
  documentChanged(collection: string, docId: string): void {
    this.dirty.add(collection);
    this.changed.add(JSON.stringify([collection, docId]));
    this.scheduleDraw();
  }

  private scheduleDraw(): void {
    if (this.redraw === 0) {
      this.redraw = window.setTimeout(() => this.drawDocuments(), REDRAW_INTERVAL);
    }
  }

  /**
   * Draw the copy: the documents of every collection that changed, and the sequence and
   * epoch the copy equals, in one step, so that what the page shows is always the store at
   * the sequence it names.
   */
  private drawDocuments(): void {
    this.redraw = 0;
    this.drawCopyState();
    const sections = new Map<string, HTMLElement>();
    for (const section of this.collections.querySelectorAll<HTMLElement>(":scope > section")) {
      sections.set(section.dataset["collection"] ?? "", section);
    }
    for (const collection of this.dirty) {
      const documents = this.copy.documents.get(collection);
      const old = sections.get(collection);
      if (documents === undefined) {
        old?.remove();
        sections.delete(collection);
        continue;
      }
      const section = this.collectionSection(collection, documents);
      if (old === undefined) {
        sections.set(collection, section);
        // In order of name: before the first section whose name sorts after this one.
        const after = [...sections.keys()].sort().find((name) => name > collection);
        const next = after === undefined ? null : (sections.get(after) ?? null);
        this.collections.insertBefore(section, next);
      } else {
        old.replaceWith(section);
        sections.set(collection, section);
      }
    }
    this.dirty.clear();
    this.changed.clear();
    byId("no-documents").hidden = this.copy.documents.size > 0;
  }

  private drawCopyState(): void {
    const documents = [...this.copy.documents.values()].reduce((n, docs) => n + docs.size, 0);
    const state = !this.copy.ready
      ? "waiting for the first snapshot"
      : this.copy.collecting
        ? `equal to the store at sequence ${this.copy.sequence}; an update is arriving`
        : `equal to the store at sequence ${this.copy.sequence}`;
    const { position: resume, epoch } = this.resumePoint();
    const position = resume === undefined ? "none (the next stream brings a snapshot)" : resume;
    this.copyState.dataset["sequence"] = this.copy.sequence.toString();
    this.copyState.dataset["epoch"] = this.copy.sequenceEpoch;
    this.copyState.dataset["ready"] = String(this.copy.ready);
    this.copyState.textContent =
      `${documents} documents in ${this.copy.documents.size} collections, ${state}. ` +
      `Resume point: ${position}${epoch === undefined ? "" : `, epoch ${epoch}`}.`;
  }

  private collectionSection(
    collection: string,
    documents: Map<string, StoredDocument>,
  ): HTMLElement {
    const ids = [...documents.keys()].sort();
    const rows = ids.slice(0, ROWS_PER_COLLECTION).map((docId) => {
      const doc = documents.get(docId) as StoredDocument;
      const changed = this.changed.has(JSON.stringify([collection, docId]));
      return el(
        "tr",
        { "data-doc-id": docId, ...(changed ? { class: "changed" } : {}) },
        el("td", { class: "doc-id" }, docId),
        el("td", { class: "seq" }, doc.sequence.toString()),
        el("td", { class: "json" }, el("code", {}, doc.json)),
      );
    });
    const hidden = ids.length - rows.length;
    return el(
      "section",
      { class: "collection", "data-collection": collection },
      el("h3", {}, collection, " ", el("span", { class: "count" }, `${ids.length}`)),
      el(
        "table",
        {},
        el(
          "thead",
          {},
          el("tr", {}, el("th", {}, "doc_id"), el("th", {}, "sequence"), el("th", {}, "document")),
        ),
        el("tbody", {}, ...rows),
      ),
      ...(hidden > 0 ? [el("p", { class: "more" }, `${hidden} more documents, not shown`)] : []),
    );
  }
}
