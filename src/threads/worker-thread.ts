/**
 * The worker side of a comlink worker thread: exposes its API to the main
 * thread (with the error transfer that keeps codes), and the fault-injection
 * stall the tests use.
 */
import * as Comlink from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { parentPort } from "node:worker_threads";
import { registerErrorTransfer } from "./comlink-errors.js";

/** Serves `api` to the thread's parent; `file` names the entry in the error when run outside a worker thread. */
export function exposeWorker(api: object, file: string): void {
  if (parentPort === null) throw new Error(`${file} must run in a worker thread`);
  registerErrorTransfer();
  Comlink.expose(api, nodeEndpoint(parentPort));
}

/**
 * Fault injection, tests only: blocks this thread for `ms` now, in the turn of
 * the message that asked for it, so whatever was sent after it waits.
 */
export function stallThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
