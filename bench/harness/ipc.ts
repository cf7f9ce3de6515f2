/**
 * The benchmark's processes: the load generator forks children (engine,
 * publishers, a trivial responder) that each serve a table of commands over
 * Node's IPC channel. Separate processes are what a deployment looks like: in
 * one process the generator's timers would share the engine's main thread and
 * the sender would be late exactly when the engine is busy.
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export type Handlers = Record<string, (args: never) => unknown>;
interface Call { id: number; cmd: string; args: unknown }
interface Reply { id: number; ok: boolean; result?: unknown; error?: string }

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Serves `handlers` to the parent over the IPC channel; exits when the parent goes away. */
export function serve(handlers: Handlers): void {
  process.on("disconnect", () => process.exit(0));
  process.on("message", (m: Call) => {
    void (async () => {
      let reply: Reply;
      try {
        const h = handlers[m.cmd];
        if (h === undefined) throw new Error(`unknown command ${m.cmd}`);
        reply = { id: m.id, ok: true, result: await h(m.args as never) };
      } catch (err) {
        reply = { id: m.id, ok: false, error: (err as Error)?.stack ?? String(err) };
      }
      process.send!(reply);
    })();
  });
  process.send!({ id: 0, ok: true, result: "up" } satisfies Reply);
}

/** The roles entry file beside this one: roles.ts under tsx or vitest, roles.js when compiled. */
function rolesFile(): string {
  const self = fileURLToPath(import.meta.url);
  return self.endsWith(".ts") ? self.replace(/ipc\.ts$/, "roles.ts") : self.replace(/ipc\.js$/, "roles.js");
}

/** A child process running one role of bench/harness/roles; `call` sends it a command and awaits the reply. */
export class Child {
  readonly proc: ChildProcess;
  readonly up: Promise<void>;
  #next = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(readonly role: string, execArgv: string[] = []) {
    const file = rolesFile();
    // A .ts roles file needs tsx's loader whatever started us (tsx, vitest); compiled files need nothing.
    const loader = file.endsWith(".ts") ? ["--import", "tsx"] : [];
    this.proc = fork(file, [], {
      env: { ...process.env, PORTRAIT_BENCH_ROLE: role },
      execArgv: [...loader, ...execArgv],
      stdio: ["ignore", process.stderr, process.stderr, "ipc"],
    });
    let upResolve!: () => void;
    let upReject!: (e: Error) => void;
    this.up = new Promise((res, rej) => ((upResolve = res), (upReject = rej)));
    this.up.catch(() => undefined);
    this.proc.on("message", (m: Reply) => {
      if (m.id === 0) return upResolve();
      const p = this.#pending.get(m.id);
      if (p === undefined) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${role}: ${m.error}`));
    });
    this.proc.on("exit", (code, signal) => {
      upReject(new Error(`${role} process exited before it was up (${code ?? signal})`));
      for (const p of this.#pending.values()) p.reject(new Error(`${role} process exited (${code ?? signal})`));
      this.#pending.clear();
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  async call<T>(cmd: string, args: unknown = {}, timeoutMs = 120_000): Promise<T> {
    await this.up;
    const id = this.#next++;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<T>((resolve, reject) => {
        this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(new Error(`${this.role}: ${cmd} took more than ${timeoutMs} ms`));
        }, timeoutMs);
        this.proc.send({ id, cmd, args } satisfies Call);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** Asks the child to stop, then kills it (this child only) if it has not exited in time. */
  async stop(timeoutMs = 20_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.proc.once("exit", () => r()));
    await this.call("stop", {}, timeoutMs).catch(() => undefined);
    await Promise.race([exited, sleep(timeoutMs)]);
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
  }
}
