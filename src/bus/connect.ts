/**
 * Connecting to NATS, for the engine and the client alike. Reconnects forever
 * by default: a broker restart is a pause, not a failure.
 *
 * Authentication: user/password, token, an nkey seed file, or a `.creds` file
 * (JWT + seed); TLS: a CA to trust (for a server certificate not signed by a
 * public CA) and, for mutual TLS, a client certificate and key. A connection
 * the server refuses (bad credentials, untrusted certificate, missing client
 * certificate) fails with PortraitError(AUTH_FAILED); an unreadable key or
 * certificate file with PortraitError(CONFIG). Secrets are never put in error
 * messages or logs.
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { connect, credsAuthenticator, nkeyAuthenticator, type ConnectionOptions, type NatsConnection } from "nats";
import { ConfigError, ErrorCode, PortraitError } from "../errors.js";

/**
 * How to reach NATS and authenticate: the options the engine (EngineOptions)
 * and the client (PortraitClientOptions) share, documented once here. File
 * paths are read at connect time; their contents (seeds, keys) are never
 * logged or put in error messages.
 */
export interface NatsOptions {
  /** NATS server URL(s), comma-separated. Default "nats://127.0.0.1:4222". */
  natsUrl?: string;
  /** NATS user name, with natsPass, when the server requires one. Default none. */
  natsUser?: string;
  /** Password of natsUser. Default none. */
  natsPass?: string;
  /** NATS token, when the server requires one. Default none. */
  natsToken?: string;
  /** File holding a NATS user nkey seed ("SU..."); the connection signs the server's nonce with it. Not with natsCredsFile. Default none. */
  natsNkeySeedFile?: string;
  /** A NATS `.creds` file (user JWT + seed) for operator/JWT auth; not with natsNkeySeedFile. Default none. */
  natsCredsFile?: string;
  /** PEM CA file to trust for the NATS server's certificate (any TLS option turns TLS on). Default: the system's CAs. */
  natsTlsCaFile?: string;
  /** PEM client certificate for mutual TLS, for servers that verify clients; needs natsTlsKeyFile. Default none. */
  natsTlsCertFile?: string;
  /** PEM private key of natsTlsCertFile; both or neither. Default none. */
  natsTlsKeyFile?: string;
}

/** The defaults of NatsOptions (undefined = none); its keys are the list of NATS options. */
export const NATS_DEFAULTS = Object.freeze({
  natsUrl: "nats://127.0.0.1:4222",
  natsUser: undefined,
  natsPass: undefined,
  natsToken: undefined,
  natsNkeySeedFile: undefined,
  natsCredsFile: undefined,
  natsTlsCaFile: undefined,
  natsTlsCertFile: undefined,
  natsTlsKeyFile: undefined,
} satisfies Record<keyof NatsOptions, string | undefined>);

/** The NATS options of `o` (an engine config, client options, ...), and nothing else. */
export function natsOptionsOf(o: NatsOptions): NatsOptions {
  const out: NatsOptions = {};
  for (const k of Object.keys(NATS_DEFAULTS) as (keyof NatsOptions)[]) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

export interface NatsConnectOptions extends NatsOptions {
  /** Connection name shown by the server (`nats server report connections`). */
  name: string;
  /** Give up after this many failed reconnects; -1 = never. Default -1. */
  maxReconnectAttempts?: number;
  /** Timeout of the first connection, ms. Default 5000. */
  timeoutMs?: number;
}

function readSecretFile(what: string, path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`cannot read the ${what} ${JSON.stringify(path)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

function readNkeySeed(path: string): Uint8Array {
  const seed = Buffer.from(readSecretFile("nkey seed file", path)).toString("utf8").trim();
  if (!/^SU[A-Z2-7]{56}$/.test(seed)) throw new ConfigError(`the nkey seed file ${JSON.stringify(path)} does not hold a user nkey seed (one line starting with "SU")`);
  return new TextEncoder().encode(seed);
}

function urlOf(o: NatsOptions): string {
  return o.natsUrl ?? NATS_DEFAULTS.natsUrl;
}

function hostOf(server: string): string {
  try {
    return new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? server : `nats://${server}`).hostname.replace(/^\[(.*)\]$/, "$1");
  } catch {
    return "";
  }
}

/**
 * Builds the nats.js connection options. Exported for tests.
 * @throws ConfigError when key or certificate files are unreadable or options conflict.
 */
export function natsConnectionOptions(o: NatsConnectOptions): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: urlOf(o).split(",").map((s) => s.trim()),
    name: o.name,
    maxReconnectAttempts: o.maxReconnectAttempts ?? -1,
    reconnectTimeWait: 250,
    timeout: o.timeoutMs ?? 5000,
    pingInterval: 10_000,
    // nats.js otherwise builds an Error per request for async stack traces: a third of a publisher's CPU.
    noAsyncTraces: true,
  };
  if (o.natsNkeySeedFile !== undefined && o.natsCredsFile !== undefined) throw new ConfigError("give an nkey seed file or a creds file, not both");
  if (o.natsUser !== undefined) opts.user = o.natsUser;
  if (o.natsPass !== undefined) opts.pass = o.natsPass;
  if (o.natsToken !== undefined) opts.token = o.natsToken;
  if (o.natsNkeySeedFile !== undefined) opts.authenticator = nkeyAuthenticator(readNkeySeed(o.natsNkeySeedFile));
  if (o.natsCredsFile !== undefined) opts.authenticator = credsAuthenticator(readSecretFile("creds file", o.natsCredsFile));
  if ((o.natsTlsCertFile === undefined) !== (o.natsTlsKeyFile === undefined)) throw new ConfigError("a TLS client certificate needs its key, and a key its certificate: give both tlsCertFile and tlsKeyFile");
  if (o.natsTlsCaFile !== undefined || o.natsTlsCertFile !== undefined) {
    // Read here rather than by nats.js so that a bad path is a clear CONFIG error, not a handshake failure.
    const tls: NonNullable<ConnectionOptions["tls"]> = {};
    if (o.natsTlsCaFile !== undefined) tls.ca = Buffer.from(readSecretFile("TLS CA file", o.natsTlsCaFile)).toString("utf8");
    if (o.natsTlsCertFile !== undefined && o.natsTlsKeyFile !== undefined) {
      tls.cert = Buffer.from(readSecretFile("TLS certificate file", o.natsTlsCertFile)).toString("utf8");
      tls.key = Buffer.from(readSecretFile("TLS key file", o.natsTlsKeyFile)).toString("utf8");
    }
    // nats.js sends no server name for an IP address, and Node then checks the certificate against
    // "localhost"; with one server host, name it so that a certificate for IP:10.0.0.5 verifies.
    const hosts = new Set((opts.servers as string[]).map(hostOf));
    const [only] = hosts;
    if (hosts.size === 1 && only !== undefined && isIP(only) !== 0) (tls as Record<string, unknown>)["host"] = only;
    opts.tls = tls;
  }
  return opts;
}

function credentialsUsed(o: NatsConnectOptions): string {
  const parts: string[] = [];
  if (o.natsUser !== undefined) parts.push(`user ${JSON.stringify(o.natsUser)}${o.natsPass !== undefined ? " with a password" : ""}`);
  if (o.natsToken !== undefined) parts.push("a token");
  if (o.natsNkeySeedFile !== undefined) parts.push(`the nkey seed in ${o.natsNkeySeedFile}`);
  if (o.natsCredsFile !== undefined) parts.push(`the creds file ${o.natsCredsFile}`);
  return parts.length ? parts.join(", ") : "no credentials";
}

const TLS_ERROR_RE = /certificate|self[- ]signed|unable to verify|handshake|tls|ssl|alert/i;

/** Turns a refused connection into PortraitError(AUTH_FAILED); other errors pass through. */
export function connectError(err: unknown, o: NatsConnectOptions): unknown {
  const e = err as { code?: unknown; message?: unknown; chainedError?: { message?: unknown; code?: unknown } } | undefined;
  const code = String(e?.code ?? "");
  const message = String(e?.message ?? err);
  const inner = e?.chainedError ? `${String(e.chainedError.message ?? "")} ${String(e.chainedError.code ?? "")}` : "";
  if (code === "AUTHORIZATION_VIOLATION" || code === "AUTHENTICATION_EXPIRED" || code === "AUTHENTICATION_TIMEOUT" || /authorization violation/i.test(message)) {
    return new PortraitError(ErrorCode.AUTH_FAILED, `NATS at ${urlOf(o)} refused the connection with ${credentialsUsed(o)}: ${message}`, { cause: err });
  }
  if (code === "TLS" || code === "SERVER_OPTION_NOT_AVAILABLE" || TLS_ERROR_RE.test(`${message} ${inner}`)) {
    const hint = o.natsTlsCaFile === undefined
      ? "if the server's certificate is signed by a private CA, pass that CA (--tls-ca / natsTlsCaFile)"
      : `check that ${o.natsTlsCaFile} signed the server's certificate and that the certificate names this host`;
    return new PortraitError(ErrorCode.AUTH_FAILED, `TLS with NATS at ${urlOf(o)} failed: ${message}${inner.trim() ? ` (${inner.trim()})` : ""}; ${hint}; ` +
      "a server that verifies clients also needs --tls-cert and --tls-key", { cause: err });
  }
  if (code === "TIMEOUT" && (o.natsTlsCaFile !== undefined || o.natsTlsCertFile !== undefined)) {
    // A server that verifies clients closes a connection without a certificate after the handshake; nats.js only sees silence.
    return new PortraitError(ErrorCode.TIMEOUT, `NATS at ${urlOf(o)} did not complete the connection over TLS within ${o.timeoutMs ?? 5000} ms` +
      (o.natsTlsCertFile === undefined ? "; if the server verifies client certificates (tls { verify: true }), pass --tls-cert and --tls-key" : ""), { cause: err });
  }
  if (code === "CONNECTION_REFUSED" || code === "TIMEOUT") {
    // Nothing listens there (or it does not answer): the same "is it running?" as a query nobody answers.
    return new PortraitError(ErrorCode.NO_RESPONDERS, `no NATS server answers at ${urlOf(o)} (${code}); is it running, and is --nats right?`, { cause: err });
  }
  return err;
}

/**
 * Connects, or fails with PortraitError(AUTH_FAILED) when the server refuses
 * the credentials or the TLS handshake, PortraitError(CONFIG) when a key or
 * certificate file is unreadable; other failures are nats.js errors.
 */
export async function connectNats(o: NatsConnectOptions): Promise<NatsConnection> {
  const opts = natsConnectionOptions(o);
  try {
    return await connect(opts);
  } catch (err) {
    throw connectError(err, o);
  }
}
