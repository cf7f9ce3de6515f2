/**
 * Errors thrown across a comlink call keep their code: comlink's own "throw"
 * handler copies only name, message and stack, so a PortraitError from a
 * worker would reach the main thread as a plain Error. This one sends
 * `toWire(err)` and the worker's stack, and rebuilds the error with
 * `fromWire`. The handler table is per thread: both ends register it (the
 * worker client and `exposeWorker` do).
 */
import * as Comlink from "comlink";
import { fromWire, toWire, type WireError } from "../errors.js";

interface ThrownWire {
  error: WireError;
  stack: string | undefined;
}

let registered = false;

export function registerErrorTransfer(): void {
  if (registered) return;
  registered = true;
  const base = Comlink.transferHandlers.get("throw")!;
  Comlink.transferHandlers.set("throw", {
    // Comlink marks a thrown value with a private symbol; its own check finds it.
    canHandle: base.canHandle,
    serialize: (thrown: unknown): [ThrownWire, []] => {
      const { value } = thrown as { value: unknown };
      return [{ error: toWire(value), stack: value instanceof Error ? value.stack : undefined }, []];
    },
    deserialize: (wire: unknown): never => {
      const { error, stack } = wire as ThrownWire;
      const err = fromWire(error);
      if (stack !== undefined) err.stack = stack;
      throw err;
    },
  });
}
