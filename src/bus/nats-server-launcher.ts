/**
 * Starts and supervises a local nats-server child process with JetStream.
 *
 * Used by the CLI (an embedded server when nothing answers at the NATS URL)
 * and by the tests (one real server per test file). The server always gets a
 * generated config file in a private temp dir; readiness is detected from the
 * ports file the server writes (`ports_file_dir`), then confirmed by the
 * NATS INFO line on the client port and by the monitoring `/healthz`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, closeSync, constants as fsConstants, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { ErrorCode, PortraitError } from "../errors.js";
import { terminateServer, trackChild, type ExitInfo } from "./server-process.js";

export interface NatsServerOptions {
  /** Path or name of the binary; default: lookup of "nats-server" on PATH, then /usr/sbin/nats-server, /usr/local/bin/nats-server. */
  binary?: string;
  /** Client port; -1 or undefined = a free port chosen by the server and read back. */
  port?: number;
  /** Host to bind; default "127.0.0.1". The monitoring port binds the same host. */
  host?: string;
  /** JetStream store dir (the server keeps its data in `<storeDir>/jetstream`); default a fresh temp dir that stop() removes. A given dir is never removed. */
  storeDir?: string;
  /** Extra config text appended to the generated config. Must not redefine host/port/http/jetstream/ports_file_dir, nor authorization/tls when `auth`/`tls` are given. */
  extraConfig?: string;
  /** Users the server accepts (an `authorization` block); default none: any client may connect and do anything. */
  auth?: NatsServerAuth;
  /** Serve TLS only (a `tls` block); default plain TCP. */
  tls?: NatsServerTls;
  /** Max ms to wait for readiness (default 10000). */
  readyTimeoutMs?: number;
  /** Called with each line the server prints (default: ignored). Not called with `outliveParent`: the lines go to `<work dir>/nats-server.log`. */
  onLog?: (line: string) => void;
  /**
   * Let the server outlive this process when it dies without stopping it (a
   * crash, SIGKILL): it runs in its own process group, writes its log to a
   * file rather than a pipe that would close with us, and is not killed by
   * the exit hook. stop() still stops it. Default false.
   */
  outliveParent?: boolean;
}

/** What a user may publish and subscribe to (nats-server `permissions`); a list is the `allow` list. */
export interface NatsPermissions {
  /** Subjects the user may publish to (wildcards * and >). */
  publish?: string[] | { allow?: string[]; deny?: string[] };
  /** Subjects the user may subscribe to; "subject queue" restricts to a queue group. */
  subscribe?: string[] | { allow?: string[]; deny?: string[] };
  /** May publish to the reply subject of a request it received (once), whatever `publish` says. */
  allow_responses?: boolean;
}

export interface NatsServerAuth {
  /** User/password pairs; `pass` is written in clear into the private config file. */
  users?: Array<{ user: string; pass: string; permissions?: NatsPermissions }>;
  /** Users identified by their nkey public key ("U..."); they sign with the matching seed. */
  nkeys?: Array<{ nkey: string; permissions?: NatsPermissions }>;
}

export interface NatsServerTls {
  /** PEM certificate of the server (must name the host clients connect to, e.g. IP:127.0.0.1). */
  certFile: string;
  /** PEM private key of certFile. */
  keyFile: string;
  /** PEM CA that signed client certificates; needed with verify. */
  caFile?: string;
  /** Require and verify a client certificate (mutual TLS). Default false. */
  verify?: boolean;
}

export interface NatsServerHandle {
  /** "nats://<host>:<port>"; stable across restart(). */
  readonly url: string;
  /** Client port; stable across restart(). */
  readonly port: number;
  /** "http://<host>:<port>" of the monitoring endpoint (varz, jsz, healthz); may change on restart(). */
  readonly monitorUrl: string;
  /** Pid of the current server process; changes on restart(). */
  readonly pid: number;
  /** The JetStream store_dir given to the server. */
  readonly storeDir: string;
  /** Where the server writes its log with `outliveParent` (undefined: its lines go to onLog). */
  readonly logFile: string | undefined;
  /** SIGTERM then wait for exit (SIGKILL after 5 s); idempotent; removes temp dirs it created (not a caller-given storeDir). */
  stop(): Promise<void>;
  /** Send a signal to the current process without cleanup (e.g. "SIGKILL", "SIGSTOP", "SIGCONT") — for fault tests. */
  signal(sig: NodeJS.Signals): void;
  /** Stop then start again on the SAME port and SAME storeDir (JetStream data survives); resolves when ready again. Works after the process died (e.g. signal("SIGKILL")); rejects after stop(). */
  restart(): Promise<void>;
  /** Resolves when the current process exits (with its exit code or signal). Note nats-server 2.9 exits with code 1 on SIGTERM, 0 on SIGINT. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}


const DEFAULT_READY_TIMEOUT_MS = 10_000;
const KILL_AFTER_MS = 5_000;
const LOG_TAIL_LINES = 50;
const POLL_MS = 20;
const FALLBACK_BINARIES = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"];


function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Absolute path of the nats-server binary. A `binary` with a slash is taken
 * as a path; a bare name is searched on PATH. Without `binary`, "nats-server"
 * is searched on PATH, then in the usual install locations.
 * @throws PortraitError(NATS_SERVER_NOT_FOUND)
 */
export function findNatsServerBinary(binary?: string): string {
  const looked: string[] = [];
  const name = binary ?? "nats-server";
  if (name.includes("/")) {
    const p = resolve(name);
    looked.push(p);
    if (isExecutableFile(p)) return p;
  } else {
    for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
      if (!dir) continue;
      const p = resolve(dir, name);
      looked.push(p);
      if (isExecutableFile(p)) return p;
    }
    if (binary === undefined) {
      for (const p of FALLBACK_BINARIES) {
        looked.push(p);
        if (isExecutableFile(p)) return p;
      }
    }
  }
  const where = name.includes("/") ? `at ${looked[0]}` : binary === undefined ? `on PATH or at ${FALLBACK_BINARIES.join(", ")}` : "on PATH";
  throw new PortraitError(
    ErrorCode.NATS_SERVER_NOT_FOUND,
    `nats-server binary not found: no executable ${JSON.stringify(name)} ${where}. ` +
      `Install it with "apt-get install nats-server" (Debian/Ubuntu) or from https://github.com/nats-io/nats-server/releases, ` +
      `then put it on PATH or pass its path.`,
  );
}

function parseNatsUrl(url: string): { host: string; port: number } {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `nats://${url}`;
  const u = new URL(withScheme);
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1") || "127.0.0.1";
  return { host, port: u.port ? Number(u.port) : 4222 };
}

function probeOne(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((done) => {
    let buf = "";
    let settled = false;
    const socket = netConnect({ host, port });
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      done(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      buf += chunk;
      if (buf.length >= 5) finish(buf.startsWith("INFO ") || buf.startsWith("INFO\t"));
    });
    socket.on("error", () => finish(false));
    socket.on("close", () => finish(false));
  });
}

/**
 * True when something answers the NATS protocol (an INFO line) at url within
 * timeoutMs (default 500). A comma-separated server list is true if any answers.
 */
export async function probeNats(url: string, timeoutMs = 500): Promise<boolean> {
  const targets = url.split(",").map((s) => s.trim()).filter(Boolean);
  const results = await Promise.all(
    targets.map((t) => {
      try {
        const { host, port } = parseNatsUrl(t);
        return probeOne(host, port, timeoutMs);
      } catch {
        return Promise.resolve(false);
      }
    }),
  );
  return results.some(Boolean);
}

function hostForUrl(host: string): string {
  // A wildcard bind is reachable through loopback; IPv6 literals need brackets.
  const h = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return h.includes(":") ? `[${h}]` : h;
}

/** The `authorization` and `tls` blocks; the config format accepts JSON values, and quoted strings are taken literally. */
function securityConfig(auth: NatsServerAuth | undefined, tls: NatsServerTls | undefined): string {
  const out: string[] = [];
  if (auth !== undefined) {
    const users = [
      ...(auth.users ?? []).map((u) => ({ user: u.user, password: u.pass, ...(u.permissions ? { permissions: u.permissions } : {}) })),
      ...(auth.nkeys ?? []).map((u) => ({ nkey: u.nkey, ...(u.permissions ? { permissions: u.permissions } : {}) })),
    ];
    if (users.length === 0) throw new PortraitError(ErrorCode.CONFIG, "options.auth needs at least one user or nkey");
    out.push(`authorization ${JSON.stringify({ users }, null, 2)}`);
  }
  if (tls !== undefined) {
    if (tls.verify && tls.caFile === undefined) throw new PortraitError(ErrorCode.CONFIG, "options.tls.verify needs options.tls.caFile to verify client certificates");
    out.push(`tls ${JSON.stringify({
      cert_file: resolve(tls.certFile),
      key_file: resolve(tls.keyFile),
      ...(tls.caFile !== undefined ? { ca_file: resolve(tls.caFile) } : {}),
      verify: tls.verify ?? false,
      // The default 0.5 s is tight for a handshake on a busy 2-core machine.
      timeout: 5,
    }, null, 2)}`);
  }
  return out.join("\n");
}

function configText(host: string, port: number, storeDir: string, workDir: string, extra: string | undefined): string {
  return [
    `host: ${JSON.stringify(host)}`,
    `port: ${port}`,
    `http: ${JSON.stringify(`${hostForUrl(host)}:-1`)}`,
    `ports_file_dir: ${JSON.stringify(workDir)}`,
    `jetstream {`,
    `  store_dir: ${JSON.stringify(storeDir)}`,
    `}`,
    extra ?? "",
    "",
  ].join("\n");
}

interface PortsFile {
  nats?: string[];
  monitoring?: string[];
}

/** The ports file is named `<argv0 base>_<pid>.ports`; match on the pid only. */
function readPortsFile(workDir: string, pid: number): PortsFile | undefined {
  const suffix = `_${pid}.ports`;
  let name: string | undefined;
  try {
    name = readdirSync(workDir).find((f) => f.endsWith(suffix));
  } catch {
    return undefined;
  }
  if (!name) return undefined;
  try {
    return JSON.parse(readFileSync(join(workDir, name), "utf8")) as PortsFile;
  } catch {
    return undefined; // caught mid-write; poll again
  }
}

async function healthy(monitorUrl: string, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(`${monitorUrl}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Running {
  child: ChildProcess;
  pid: number;
  port: number;
  monitorUrl: string;
  exited: Promise<ExitInfo>;
  isExited: () => boolean;
}

/**
 * Spawn the server and wait until it is ready. On any failure the child is
 * killed and the error carries the server's last log lines.
 */
async function launch(
  binary: string,
  host: string,
  port: number,
  storeDir: string,
  workDir: string,
  options: NatsServerOptions,
): Promise<Running> {
  const confPath = join(workDir, "nats-server.conf");
  const extra = [securityConfig(options.auth, options.tls), options.extraConfig ?? ""].filter(Boolean).join("\n");
  // 0600: the config may hold passwords.
  writeFileSync(confPath, configText(host, port, storeDir, workDir, extra), { mode: 0o600 });

  const tail: string[] = [];
  const onLine = (line: string): void => {
    tail.push(line);
    if (tail.length > LOG_TAIL_LINES) tail.shift();
    options.onLog?.(line);
  };

  const logFile = join(workDir, "nats-server.log");
  const logFd = options.outliveParent === true ? openSync(logFile, "a") : undefined;
  const child = logFd !== undefined
    ? spawn(binary, ["-c", confPath], { stdio: ["ignore", logFd, logFd], detached: true })
    : spawn(binary, ["-c", confPath], { stdio: ["ignore", "pipe", "pipe"] });
  if (logFd !== undefined) closeSync(logFd);
  let exitInfo: ExitInfo | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<ExitInfo>((res) => {
    // "close" (not "exit") so the last log lines are read before we report.
    child.once("close", (code, signal) => {
      exitInfo = { code, signal };
      res(exitInfo);
    });
  });
  child.once("error", (err) => {
    spawnError = err;
  });
  if (child.pid !== undefined && logFd === undefined) trackChild(child);
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on("line", onLine);
  }

  const timeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const fail = async (why: string, cause?: unknown): Promise<never> => {
    if (!exitInfo && child.pid !== undefined) {
      child.kill("SIGKILL");
      await exited;
    }
    if (logFd !== undefined) tail.push(...readFileSync(logFile, "utf8").split("\n").slice(-LOG_TAIL_LINES));
    const logs = tail.length ? `\n--- last nats-server output ---\n${tail.join("\n")}` : "";
    throw new PortraitError(ErrorCode.INTERNAL, `nats-server (${binary}) ${why}${logs}`, cause === undefined ? undefined : { cause });
  };

  let ports: PortsFile | undefined;
  let clientPort = -1;
  let monitorUrl = "";
  for (;;) {
    if (spawnError) return fail(`could not be started: ${spawnError.message}`, spawnError);
    if (exitInfo) {
      return fail(`exited before becoming ready (code ${exitInfo.code ?? "none"}, signal ${exitInfo.signal ?? "none"})`);
    }
    if (Date.now() > deadline) return fail(`did not become ready within ${timeoutMs} ms`);
    if (!ports && child.pid !== undefined) {
      ports = readPortsFile(workDir, child.pid);
      const natsUrl = ports?.nats?.[0];
      if (natsUrl) {
        clientPort = parseNatsUrl(natsUrl).port;
        monitorUrl = ports?.monitoring?.[0] ?? "";
      } else {
        ports = undefined;
      }
    }
    if (ports) {
      const remaining = Math.max(50, Math.min(500, deadline - Date.now()));
      const url = `nats://${hostForUrl(host)}:${clientPort}`;
      if ((await probeNats(url, remaining)) && (!monitorUrl || (await healthy(monitorUrl, remaining)))) break;
    }
    await Promise.race([delay(POLL_MS), exited]);
  }

  return { child, pid: child.pid as number, port: clientPort, monitorUrl, exited, isExited: () => exitInfo !== undefined };
}


/**
 * Start a nats-server with JetStream on 127.0.0.1 (by default on a free port)
 * and resolve once it accepts clients and reports healthy.
 * @throws PortraitError(NATS_SERVER_NOT_FOUND) when the binary is missing,
 *   PortraitError(INTERNAL) when the server exits early or is not ready in time.
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const binary = findNatsServerBinary(options.binary);
  const host = options.host ?? "127.0.0.1";
  const workDir = mkdtempSync(join(tmpdir(), "portrait-nats-"));
  // Our own store lives inside workDir, so removing workDir removes it; a caller's never does.
  const storeDir = options.storeDir === undefined ? join(workDir, "store") : resolve(options.storeDir);
  const cleanup = (): void => {
    rmSync(workDir, { recursive: true, force: true });
  };

  let current: Running;
  try {
    current = await launch(binary, host, options.port ?? -1, storeDir, workDir, options);
  } catch (err) {
    cleanup();
    throw err;
  }
  const port = current.port;
  const url = `nats://${hostForUrl(host)}:${port}`;
  let stopping: Promise<void> | undefined;
  // Serialises restart() and stop() so they never interleave.
  let queue: Promise<unknown> = Promise.resolve();

  const handle: NatsServerHandle = {
    url,
    port,
    storeDir,
    logFile: options.outliveParent === true ? join(workDir, "nats-server.log") : undefined,
    get pid() {
      return current.pid;
    },
    get monitorUrl() {
      return current.monitorUrl;
    },
    get exited() {
      return current.exited;
    },
    signal(sig) {
      if (!current.isExited()) current.child.kill(sig);
    },
    stop() {
      stopping ??= (async () => {
        await queue.catch(() => undefined);
        await terminateServer(current, KILL_AFTER_MS);
        cleanup();
      })();
      return stopping;
    },
    restart() {
      const next = queue.catch(() => undefined).then(async () => {
        if (stopping) throw new PortraitError(ErrorCode.INTERNAL, "nats-server handle was stopped; cannot restart");
        await terminateServer(current, KILL_AFTER_MS);
        current = await launch(binary, host, port, storeDir, workDir, options);
      });
      queue = next;
      return next;
    },
  };
  return handle;
}
