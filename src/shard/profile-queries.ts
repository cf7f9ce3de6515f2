/**
 * The reads of a shard: profile and recommendation-context queries, answered
 * from the actors in memory or LMDB's committed state, between batches. A
 * query whose deadline passed before it got here is answered OVERLOADED
 * without work (main has already replied OVERLOADED at the deadline).
 */
import type { CompiledProfileOptions } from "../actors/profile-options.js";
import { newUserState, profileView } from "../actors/user-profile.js";
import type { QueryDeadline, RecContext, ReplyEncoding } from "../contracts.js";
import { BadRequestError, OverloadedError, toWire, unknownUserWire, type WireError } from "../errors.js";
import type { ChurnModel } from "../models/churn-model.js";
import { deepFmUserFeatures } from "../models/deepfm-features.js";
import type { LstmRuntime } from "../models/lstm-runtime.js";
import type { Logger } from "../obs/logger.js";
import { pb } from "../wire/proto.js";
import { membershipsOf } from "../actors/audience-state.js";
import type { ActorCache } from "./actor-cache.js";
import type { CategoryLabels } from "./category-labels.js";
import type { ClockReader } from "./engine-clock.js";
import { storedLstmState } from "./lstm-steps.js";
import { wirePredictions, type Predictions } from "./predictions.js";
import type { Pseudonymise } from "./pseudonym.js";
import type { AliasEntry } from "../store/profile-store.js";
import type { ShardProfileResult, ShardRecContextResult } from "./shard-protocol.js";

const encoder = new TextEncoder();

export interface ProfileQueriesDeps {
  shard: number;
  actors: ActorCache;
  profile: CompiledProfileOptions;
  key: Pseudonymise;
  /** The engine clock (engine-clock.ts): "now" for a query that names no time. */
  clock: ClockReader;
  /** Category names, for the profile's categories. */
  labels: CategoryLabels;
  /**
   * The models the shard runs now, swapped between messages (shard.worker.ts
   * setModels): a query reads them once, at its start, so a reply is produced
   * entirely by the versions it names. `lstmVersions` also holds LSTM
   * versions kept for recommendations pinned to an earlier ranker pairing.
   * `predictions` holds the prediction models of the same set with their
   * verdicts (predictions.ts), rebuilt on every swap.
   */
  models: {
    readonly lstm: LstmRuntime | undefined; readonly churn: ChurnModel | undefined; readonly lstmVersions: ReadonlyMap<string, LstmRuntime>;
    readonly predictions: Predictions;
  };
  log: Logger;
  /** The alias entry of a key (README "Identity"), undefined when it is none. */
  aliasOf: (key: string) => AliasEntry | undefined;
}

/** Who a query asks for: `asked` the id the client gave, `key` the id the state is kept under when the caller resolved an alias already. */
export interface QueryFor {
  asked: string;
  key: string;
}

export class ProfileQueries {
  readonly #d: ProfileQueriesDeps;

  constructor(d: ProfileQueriesDeps) {
    this.#d = d;
  }

  /** OVERLOADED when the query's deadline passed before this shard could start it. */
  #late(deadline: QueryDeadline | undefined): WireError | undefined {
    if (deadline === undefined) return undefined;
    const now = Date.now();
    if (now <= deadline.deadlineMs) return undefined;
    return toWire(new OverloadedError(`the query waited ${now - deadline.receivedMs} ms in the engine before shard ${this.#d.shard} could start it ` +
      `(allowed ${deadline.deadlineMs - deadline.receivedMs} ms); try again later`));
  }

  /** The user's profile; `{ alias }` when the user's key is an alias (the caller asks the primary's shard: ShardPool). */
  getProfile(userId: string, asOfMs: number, encoding: ReplyEncoding, deadline?: QueryDeadline, explain = false, resolved?: QueryFor): ShardProfileResult {
    const late = this.#late(deadline);
    if (late !== undefined) return { ok: false, error: late };
    const d = this.#d;
    try {
      const key = resolved?.key ?? d.key(userId);
      const alias = d.aliasOf(key);
      if (alias !== undefined) return { ok: false, alias: [alias[0], alias[1]] };
      const state = d.actors.state(key);
      if (state === undefined) {
        return { ok: false, error: unknownUserWire(userId) };
      }
      if (asOfMs > 0 && asOfMs < state.lastSeenMs) {
        return { ok: false, error: toWire(new BadRequestError(`asOfMs ${new Date(asOfMs).toISOString()} is before this user's last event ` +
          `(${new Date(state.lastSeenMs).toISOString()}): a profile holds every event applied and cannot be rewound; ask at or after its last event`)) };
      }
      const asOf = asOfMs > 0 ? asOfMs : Math.max(d.clock.now(), state.lastSeenMs);
      const profile = profileView(userId, state, asOf, d.profile);
      // Asked through an alias: the primary, as the engine keys it.
      if (resolved !== undefined) profile.primaryUserId = key;
      profile.audiences = membershipsOf(state);
      const models = d.models.predictions;
      const predictions = models.any ? models.of(state, asOf, explain) : undefined;
      if (predictions !== undefined) profile.predictions = predictions;
      for (const list of [profile.categories, predictions?.nextCategories, profile.reviews?.categories, profile.social?.friendsInterests]) {
        if (list !== undefined) for (const c of list) c.label = d.labels.label(c.key);
      }
      let body: Uint8Array;
      if (encoding === "json") {
        body = encoder.encode(JSON.stringify({ profile }));
      } else {
        // The view is this query's own: its predictions are swapped for their wire form in place (a spread of the whole view cost more).
        (profile as unknown as { predictions: unknown }).predictions = predictions !== undefined ? wirePredictions(predictions) : null;
        body = pb.ProfileReply.encode({ profile }).finish();
      }
      // The shard's query port transfers the body (an exact copy where this is a view into Node's shared buffer pool: ownedBytes).
      return { ok: true, body };
    } catch (err) {
      d.log.error({ err }, "profile query failed");
      return { ok: false, error: toWire(err) };
    }
  }

  /** What a recommendation needs from the user's profile (known false when the user has none). */
  /**
   * `lstmVersion`: the LSTM version the request's ranker pairing reads (the
   * running one when absent); OVERLOADED (retryable) when this shard no
   * longer holds it.
   */
  getRecContext(userId: string, asOfMs: number, deadline?: QueryDeadline, lstmVersion?: string, resolved?: QueryFor): ShardRecContextResult {
    const late = this.#late(deadline);
    if (late !== undefined) return { ok: false, error: late };
    const d = this.#d;
    const lstm = lstmVersion === undefined ? d.models.lstm : d.models.lstm?.version === lstmVersion ? d.models.lstm : d.models.lstmVersions.get(lstmVersion);
    if (lstmVersion !== undefined && lstm === undefined) {
      return { ok: false, error: toWire(new OverloadedError(`shard ${d.shard} no longer holds LSTM ${lstmVersion} (a model swap finished meanwhile); try again`)) };
    }
    try {
      const userKey = resolved?.key ?? d.key(userId);
      const alias = d.aliasOf(userKey);
      if (alias !== undefined) return { ok: false, alias: [alias[0], alias[1]] };
      const state = d.actors.state(userKey);
      const asOf = asOfMs > 0 ? asOfMs : Math.max(d.clock.now(), state?.lastSeenMs ?? 0);
      if (state === undefined) {
        return { ok: true, context: { known: false, userKey, asOfMs: asOf, recentItems: [], topCategories: [], nextCategories: [], purchasedItems: [], user: deepFmUserFeatures(newUserState(), asOf), lstmH: undefined } };
      }
      const view = profileView(userId, state, asOf, d.profile);
      let lstmH: Float32Array | undefined;
      let nextCategories: RecContext["nextCategories"] = [];
      if (lstm !== undefined) {
        const h = storedLstmState(state, lstm);
        nextCategories = lstm.predict(h, 3).nextCategories;
        lstmH = h.slice(0, lstm.hidden);
      }
      const context: RecContext = {
        known: true, userKey, asOfMs: asOf, recentItems: view.recentItems, topCategories: view.categories.slice(0, 5), nextCategories,
        purchasedItems: state.bought ?? [], user: deepFmUserFeatures(state, asOf), lstmH, lstmVersion: lstm?.version,
      };
      return { ok: true, context };
    } catch (err) {
      d.log.error({ err }, "recommendation context failed");
      return { ok: false, error: toWire(err) };
    }
  }
}
