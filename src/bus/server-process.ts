/**
 * Lifecycle of a server child process (nats-server for the embedded engine
 * and the tests, redis-server for the benchmarks): killed when this Node
 * process exits without stopping it, and stopped with SIGTERM then SIGKILL.
 */
import type { ChildProcess } from "node:child_process";
import { createServer } from "node:net";

export type ExitInfo = { code: number | null; signal: NodeJS.Signals | null };

export interface RunningServer {
  child: ChildProcess;
  exited: Promise<ExitInfo>;
  isExited: () => boolean;
}

// Children still alive; killed if the Node process exits without stopping them.
// ("exit" does not fire when Node dies of a signal, but then the children
// usually get the same terminal signal through the shared process group.)
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kills `child` if this process exits while it still runs. */
export function trackChild(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of liveChildren) {
        try {
          c.kill("SIGKILL");
        } catch {
          // already gone
        }
      }
    });
  }
  liveChildren.add(child);
  child.once("exit", () => liveChildren.delete(child));
}

/** A port that was free on 127.0.0.1 a moment ago (the OS picks it; another process may take it before it is bound). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error("could not get a free port"))));
    });
  });
}

/** SIGTERM (and SIGCONT, for a SIGSTOPped server), then SIGKILL after `killAfterMs`; resolves once it exited. */
export async function terminateServer(r: RunningServer, killAfterMs: number): Promise<void> {
  if (r.isExited()) return;
  r.child.kill("SIGTERM");
  r.child.kill("SIGCONT");
  let timer: NodeJS.Timeout | undefined;
  const killer = new Promise<void>((res) => {
    timer = setTimeout(() => {
      if (!r.isExited()) r.child.kill("SIGKILL");
      res();
    }, killAfterMs);
  });
  await Promise.race([r.exited, killer]);
  clearTimeout(timer);
  await r.exited;
}
