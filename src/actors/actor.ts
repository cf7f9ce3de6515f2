/**
 * An actor: one user's state as a shard holds it in memory, with what the
 * shard's actor cache needs to keep or drop it. It handles one message at a
 * time: a shard applies a user's events in stream order, one batch after the
 * other. The state is committed to LMDB with the batch that changed it;
 * dropping an actor from memory is never the persistence point.
 */
import type { UserState } from "./user-profile.js";

export interface Actor {
  state: UserState;
  /** Number of the last batch that changed this actor; it may be dropped from memory once that batch committed. */
  lastBatch: number;
  /** The event types (audience-rules.ts eventBit) of its events in batch `lastBatch` (src/shard/batch-applier.ts); 0 before. */
  batchTypes: number;
  /** Used since the eviction sweep last passed it (CLOCK second chance). */
  referenced: boolean;
  /** The live LSTM state (h then c); state.lstm holds its values as halves for LMDB (src/shard/lstm-steps.ts). */
  lstm: Float32Array | undefined;
  /** Bytes the actor cache last counted for this actor (actorBytes; ActorCache keeps the sum under its byte bound). */
  bytes: number;
  /** The state's event count (`state.n`) when `bytes` was counted. */
  bytesAtN: number;
}
