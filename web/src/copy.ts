// The page's copy of the store, without any I/O: peat_sync.client.copy.ConsistentCopy in
// TypeScript, so the page can never drift from the store where the Python Mirror would not.
//
// The copy only ever shows the store as it was at one sequence. Live changes apply one by
// one, since each leaves the copy equal to the store at its sequence. A catch-up or a snapshot
// (after a restart, a RESYNC or a lost connection) is collected first and applied all at once
// at its CATCH_UP_END, because its intermediate states do not belong to any one sequence.

import { ChangeType, type DocumentChange } from "./gen/sidecar_pb.js";

/** A document as the copy holds it: its JSON text, and the sequence it was last changed at. */
export interface StoredDocument {
  readonly json: string;
  readonly sequence: bigint;
}

/** A document of the copy that changed; `document` is undefined when it was deleted. */
export interface AppliedChange {
  readonly collection: string;
  readonly docId: string;
  readonly document: StoredDocument | undefined;
}

/** A snapshot or catch-up that the copy has just applied as one unit. */
export interface CompletedBatch {
  readonly snapshot: boolean;
  /** The sequence the copy stood at before (a catch-up's CATCH_UP_BEGIN). */
  readonly from: bigint;
  /** The sequence the copy equals now (the CATCH_UP_END). */
  readonly to: bigint;
  /** The document events the batch carried. */
  readonly events: number;
}

export interface Applied {
  readonly changes: readonly AppliedChange[];
  readonly completed?: CompletedBatch;
}

const NOTHING: Applied = { changes: [] };

/** A document's place: its collection and doc_id. */
type Key = [collection: string, docId: string];

export function isChange(event: DocumentChange): boolean {
  return event.changeType === ChangeType.UPSERT || event.changeType === ChangeType.DELETE;
}

/**
 * `collection → doc_id → document`, equal to the store at `sequence` once `ready`.
 *
 * Feed it every event of a subscription that asks for snapshots and resumes an interrupted
 * catch-up from its start (see `Follower`), in order; `apply` says what each event changed.
 */
export class ConsistentCopy {
  readonly documents = new Map<string, Map<string, StoredDocument>>();
  sequence = 0n;
  /** The epoch of the newest control event. */
  epoch = "";
  /** The epoch `sequence` belongs to: after a RESYNC from another epoch, the copy holds the
   * old store's documents until the new store's snapshot is complete. */
  sequenceEpoch = "";
  ready = false;
  // A catch-up or snapshot being collected, until its CATCH_UP_END.
  private pending: DocumentChange[] | undefined;
  private pendingIsSnapshot = false;
  private pendingFrom = 0n;

  /** Whether a snapshot or catch-up is being collected (the copy shows the sequence before). */
  get collecting(): boolean {
    return this.pending !== undefined;
  }

  apply(event: DocumentChange): Applied {
    if (event.epoch) {
      this.epoch = event.epoch;
    }
    if (this.pending !== undefined && event.changeType !== ChangeType.CATCH_UP_END) {
      this.collect(event);
      return NOTHING;
    }
    let changed: Key[] = [];
    let completed: CompletedBatch | undefined;
    switch (event.changeType) {
      case ChangeType.UPSERT:
      case ChangeType.DELETE:
        if (this.set(event.collection, event.docId, event.jsonData, event.sequence)) {
          changed.push([event.collection, event.docId]);
        }
        break;
      case ChangeType.SNAPSHOT_BEGIN:
      case ChangeType.CATCH_UP_BEGIN:
        this.begin(event);
        return NOTHING;
      case ChangeType.CATCH_UP_END:
        if (this.pending !== undefined) {
          completed = {
            snapshot: this.pendingIsSnapshot,
            from: this.pendingFrom,
            to: event.sequence,
            events: this.pending.length,
          };
          changed = this.applyPending();
        }
        this.ready = true;
        break;
      case ChangeType.HEARTBEAT:
        break;
      case ChangeType.RESYNC:
        return NOTHING; // a snapshot follows
      default:
        return NOTHING; // a control event of a later version: it can be ignored
    }
    // Every change to the collections up to here has been applied (a heartbeat says so of
    // the changes to other collections). In a new epoch, the sequence may be lower.
    this.sequence = event.sequence;
    this.sequenceEpoch = this.epoch;
    const changes = changed.map(([collection, docId]) => ({
      collection,
      docId,
      document: this.get(collection, docId),
    }));
    return completed === undefined ? { changes } : { changes, completed };
  }

  private begin(event: DocumentChange): void {
    this.pending = [];
    this.pendingIsSnapshot = event.changeType === ChangeType.SNAPSHOT_BEGIN;
    this.pendingFrom = this.sequence;
  }

  /**
   * Keep an event of a catch-up or snapshot until its CATCH_UP_END.
   *
   * Any other control event means the stream was lost and a new one opened, resuming from
   * where the copy stands: what was collected is void, and the new stream says what comes
   * instead.
   */
  private collect(event: DocumentChange): void {
    if (isChange(event)) {
      this.pending?.push(event);
    } else if (
      event.changeType === ChangeType.SNAPSHOT_BEGIN ||
      event.changeType === ChangeType.CATCH_UP_BEGIN
    ) {
      this.begin(event);
    } else {
      // RESYNC: a snapshot follows; HEARTBEAT: exact changes follow.
      this.pending = undefined;
    }
  }

  private applyPending(): Key[] {
    const pending = this.pending ?? [];
    this.pending = undefined;
    // The latest state of each document, in the order of its last event.
    const latest = new Map<string, [string, string, string | undefined, bigint]>();
    for (const event of pending) {
      const key = keyOf(event.collection, event.docId);
      latest.delete(key);
      latest.set(key, [event.collection, event.docId, event.jsonData, event.sequence]);
    }
    if (this.pendingIsSnapshot) {
      // The snapshot is the whole of the collections: what it lacks is gone, and what it
      // repeats unchanged is not a change.
      for (const [collection, documents] of this.documents) {
        for (const docId of documents.keys()) {
          const key = keyOf(collection, docId);
          if (!latest.has(key)) {
            latest.set(key, [collection, docId, undefined, 0n]);
          }
        }
      }
      for (const [key, [collection, docId, json, sequence]] of latest) {
        const held = this.get(collection, docId);
        if (json !== undefined && held?.json === json && held.sequence === sequence) {
          latest.delete(key);
        }
      }
    }
    const changed: Key[] = [];
    for (const [collection, docId, json, sequence] of latest.values()) {
      if (this.set(collection, docId, json, sequence)) {
        changed.push([collection, docId]);
      }
    }
    return changed;
  }

  get(collection: string, docId: string): StoredDocument | undefined {
    return this.documents.get(collection)?.get(docId);
  }

  /** Make the copy hold `json` for one document (undefined: no document). False when there
   * was nothing to delete. */
  private set(
    collection: string,
    docId: string,
    json: string | undefined,
    sequence: bigint,
  ): boolean {
    let documents = this.documents.get(collection);
    if (json !== undefined) {
      if (documents === undefined) {
        documents = new Map();
        this.documents.set(collection, documents);
      }
      documents.set(docId, { json, sequence });
      return true;
    }
    const deleted = documents?.delete(docId) ?? false;
    if (documents !== undefined && documents.size === 0) {
      this.documents.delete(collection);
    }
    return deleted;
  }
}

function keyOf(collection: string, docId: string): string {
  return JSON.stringify([collection, docId]);
}
