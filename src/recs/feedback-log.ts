/**
 * Logged feedback (README "The feedback loop"): the replies this engine
 * served, and the training log of impressions and clicks on them.
 *
 * Every recommend reply is kept here (main thread, bounded: the newest
 * `maxRequests`, none older than `windowMs`) with its exploration pool and
 * what it showed with which propensity, while someone may log feedback on
 * it: always with `keep: "always"`; with `keep: "when-asked"` (the engine's
 * choice when exploration is off, engine option feedbackKeep "auto") only
 * once logged feedback arrived within the last `windowMs`, so an engine whose
 * clients log no feedback keeps no reply (each is ~4.6 KiB of main heap). A rec_impression / rec_click that
 * carries rec_propensity is judged against it after its batch was applied
 * (the partition consumer calls `judge` before it acknowledges the batch):
 *
 * - UNKNOWN_REC_REQUEST: no reply with that rec_request_id was served within
 *   the window (or by this engine since it started), or the item was not in it;
 * - PROPENSITY_MISMATCH: the propensity differs from the one served;
 * - CLICK_WITHOUT_IMPRESSION: a click on an item of the reply whose
 *   impression was not logged before it.
 * Those are dead-lettered (the profile applied them as any rec_impression /
 * rec_click: only the training log leaves them out). The others are written
 * to the training log, the JetStream stream <PREFIX>_FEEDBACK, before the
 * batch is acknowledged (each record with a Nats-Msg-Id, so a redelivered
 * batch does not log twice inside the duplicate window):
 *
 * - `<prefix>.feedback.served`: a ServedRecord, once per reply, at its first
 *   logged impression;
 * - `<prefix>.feedback.impression` and `<prefix>.feedback.click`: a
 *   FeedbackRecord each.
 * The stream keeps feedbackRetentionMs (default 7 days) and at most
 * feedbackMaxBytes (default 256 MiB), the oldest records going first.
 */
import type { JetStreamClient } from "nats";
import type { DeadLetter, LoggedFeedback } from "../bus/event-batch.js";
import type { Subjects } from "../bus/subjects.js";
import type { CandidateSource } from "./sources.js";

/** A candidate of a reply's exploration pool, in the served ranker's order. */
export interface ServedPoolItem {
  itemId: string;
  /** Each finding source's normalised score (the feedback ranker's features). */
  scores: Partial<Record<CandidateSource, number>>;
  prior: number;
  /**
   * e(a): the probability that an exploring reply shows it in any given slot
   * (src/recs/exploration.ts), so its propensity in slot j is
   * (1 - share) [its pool index = j] + share e(a). Absent in records logged
   * before exploration over the candidate sources: 1 / pool size.
   */
  explore?: number;
}

/** A served reply, as the training log keeps it. */
export interface ServedRecord {
  requestId: string;
  /** Wall-clock time the reply was served, ms. (No user id: the training log is kept out of a user's data, README "Forgetting a user"). */
  servedAtMs: number;
  /** The reply's model_version: the ranker that ordered the pool ("ranking source:sknn", "ranking ranker@v1", a DeepFM version). */
  policy: string;
  /** Exploration share in force, and whether this reply explored. */
  share: number;
  explored: boolean;
  /** Slots shown (the reply's item count). */
  k: number;
  /** The ranker's exploration pool R, the ranker's order (its first k are the greedy slate). */
  pool: ServedPoolItem[];
  /**
   * The candidates outside R that a candidate source's arm could show
   * (engine option explorationSourceShare > 0), in the ranker's order; absent
   * when there are none. Their propensity is share e(a) in every slot.
   */
  extra?: ServedPoolItem[];
  /** The exploration arm an exploring reply drew from ("ranker" or a candidate source); absent on a greedy reply. */
  arm?: string;
  /** What the reply showed: slot = index in the reply. */
  shown: Array<{ itemId: string; slot: number; propensity: number }>;
}

/** A logged impression or click in the training log. */
export interface FeedbackRecord {
  requestId: string;
  itemId: string;
  slot: number;
  propensity: number;
  /** The event's timestamp_ms and event_id. */
  timestampMs: number;
  eventId: string;
}

export interface FeedbackLogOptions {
  /** How long after a reply its feedback is accepted, ms. Default 1 hour. */
  windowMs: number;
  /** Most replies kept for judging (oldest dropped first). Default 20000 (a reply with its pool of 20 takes about 4 KB). */
  maxRequests: number;
  /**
   * "always": every reply is kept. "when-asked": replies are kept only while
   * logged feedback arrived within the last `windowMs` (the first logged
   * feedback after a quiet window names a reply that was not kept:
   * UNKNOWN_REC_REQUEST). Default "always".
   */
  keep?: "always" | "when-asked";
}

export const FEEDBACK_LOG_DEFAULTS: FeedbackLogOptions = Object.freeze({ windowMs: 3_600_000, maxRequests: 20_000, keep: "always" as const });

interface Kept {
  record: ServedRecord;
  impressed: Set<string>;
  logged: boolean;
}

/** The result of judging a batch's logged feedback. */
export interface Judged {
  deadLetters: DeadLetter[];
  impressions: number;
  clicks: number;
}

const enc = new TextEncoder();

export class FeedbackLog {
  readonly #served = new Map<string, Kept>();
  readonly #o: FeedbackLogOptions;
  readonly #js: JetStreamClient;
  readonly #s: Subjects;
  readonly #now: () => number;
  /** When logged feedback was last judged (ms; -Infinity: never). */
  #askedAtMs = Number.NEGATIVE_INFINITY;

  constructor(js: JetStreamClient, s: Subjects, o: FeedbackLogOptions = FEEDBACK_LOG_DEFAULTS, now: () => number = Date.now) {
    this.#js = js;
    this.#s = s;
    this.#o = o;
    this.#now = now;
  }

  /** Replies kept for judging. */
  get size(): number {
    return this.#served.size;
  }

  /** Whether a reply served now is kept (the recommender builds no record otherwise). */
  get keeping(): boolean {
    return this.#o.keep !== "when-asked" || this.#now() - this.#askedAtMs <= this.#o.windowMs;
  }

  /** Keeps a served reply (the recommender calls it for every reply); nothing while not `keeping`. */
  served(record: ServedRecord): void {
    if (!this.keeping) {
      this.#evict();
      return;
    }
    this.#served.set(record.requestId, { record, impressed: new Set(), logged: false });
    this.#evict();
  }

  #evict(): void {
    const oldest = this.#now() - this.#o.windowMs;
    for (const [id, k] of this.#served) {
      if (this.#served.size <= this.#o.maxRequests && k.record.servedAtMs >= oldest) break;
      this.#served.delete(id);
    }
  }

  /** Judges a batch's logged feedback, in order, and writes what passes to the training log (see the file comment). */
  async judge(logged: readonly LoggedFeedback[]): Promise<Judged> {
    if (logged.length > 0) this.#askedAtMs = this.#now();
    this.#evict();
    const deadLetters: DeadLetter[] = [];
    const writes: Array<Promise<unknown>> = [];
    let impressions = 0;
    let clicks = 0;
    const put = (subject: string, msgID: string, body: unknown) => writes.push(this.#js.publish(subject, enc.encode(JSON.stringify(body)), { msgID }));
    for (const f of logged) {
      const dead = (reason: DeadLetter["reason"], detail: string) => deadLetters.push({ index: f.index, seq: f.seq, reason, detail });
      const k = this.#served.get(f.requestId);
      if (k === undefined) {
        const why = this.#o.keep === "when-asked" ? " (replies are kept only while logged feedback arrives: engine option feedbackKeep)" : "";
        dead("UNKNOWN_REC_REQUEST", `rec_request_id ${JSON.stringify(f.requestId)} names no reply served and kept in the last ${this.#o.windowMs} ms${why}`);
        continue;
      }
      const shown = k.record.shown.find((x) => x.itemId === f.itemId);
      if (shown === undefined) {
        dead("UNKNOWN_REC_REQUEST", `item ${JSON.stringify(f.itemId)} was not in reply ${f.requestId}`);
        continue;
      }
      if (Math.abs(shown.propensity - f.propensity) > 1e-9 * shown.propensity) {
        dead("PROPENSITY_MISMATCH", `rec_propensity ${f.propensity} is not the ${shown.propensity} served for item ${f.itemId} in reply ${f.requestId}`);
        continue;
      }
      if (f.click && !k.impressed.has(f.itemId)) {
        dead("CLICK_WITHOUT_IMPRESSION", `no logged rec_impression of item ${f.itemId} in reply ${f.requestId} before this click`);
        continue;
      }
      const rec: FeedbackRecord = { requestId: f.requestId, itemId: f.itemId, slot: shown.slot, propensity: shown.propensity, timestampMs: f.timestampMs, eventId: f.eventId };
      if (!f.click) {
        if (!k.logged) {
          k.logged = true;
          put(this.#s.feedback("served"), `served:${f.requestId}`, k.record);
        }
        k.impressed.add(f.itemId);
        put(this.#s.feedback("impression"), `imp:${f.requestId}:${f.itemId}`, rec);
        impressions++;
      } else {
        put(this.#s.feedback("click"), `clk:${f.requestId}:${f.itemId}`, rec);
        clicks++;
      }
    }
    await Promise.all(writes);
    return { deadLetters, impressions, clicks };
  }
}
