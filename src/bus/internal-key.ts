/**
 * The deployment's internal key (src/wire/internal-mac.ts): 32 random bytes
 * in the KV bucket <PREFIX>_ENGINE, key `internal-mac-key`, created by the
 * first engine that starts (a create, so two engines starting at once agree
 * on one) and read by every later one. Publishers must not be able to read
 * the bucket (README "Least-privilege permissions"). Never logged.
 */
import { randomBytes } from "node:crypto";
import type { JetStreamClient } from "nats";
import { ErrorCode, PortraitError } from "../errors.js";

const KEY = "internal-mac-key";
const KEY_BYTES = 32;

export async function internalKey(js: JetStreamClient, bucket: string, replicas = 1): Promise<Uint8Array> {
  const kv = await js.views.kv(bucket, { history: 1, replicas });
  try {
    await kv.create(KEY, randomBytes(KEY_BYTES));
  } catch {
    // It exists (another engine, or an earlier start): read below.
  }
  const e = await kv.get(KEY);
  if (e === null || e.value.byteLength !== KEY_BYTES) {
    throw new PortraitError(ErrorCode.INTERNAL, `KV bucket ${bucket} holds no valid ${KEY} (${e === null ? "missing" : `${e.value.byteLength} bytes`}); delete the key to have a new one made`);
  }
  return e.value;
}
