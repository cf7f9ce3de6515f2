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

export interface NatsConnectOptions {
  /** Server URL(s), comma-separated. */
  url: string;
  /** Connection name shown by the server (`nats server report connections`). */
  name: string;
  user?: string | undefined;
  pass?: string | undefined;
  token?: string | undefined;
  /** File holding a user nkey seed ("SU..."); the connection signs the server's nonce with it. Default none. */
  nkeySeedFile?: string | undefined;
  /** A `.creds` file (user JWT and seed) for decentralized (operator) auth. Default none. */
  credsFile?: string | undefined;
  /** PEM file of the CA(s) to trust for the server's certificate; default the system's CAs. Setting any tls* option requires TLS. */
  tlsCaFile?: string | undefined;
  /** PEM client certificate, for servers that verify clients (mutual TLS); needs tlsKeyFile. Default none. */
  tlsCertFile?: string | undefined;
  /** PEM private key of tlsCertFile. Default none. */
  tlsKeyFile?: string | undefined;
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
    servers: o.url.split(",").map((s) => s.trim()),
    name: o.name,
    maxReconnectAttempts: o.maxReconnectAttempts ?? -1,
    reconnectTimeWait: 250,
    timeout: o.timeoutMs ?? 5000,
    pingInterval: 10_000,
    // nats.js otherwise builds an Error per request for async stack traces: a third of a publisher's CPU.
    noAsyncTraces: true,
  };
  if (o.nkeySeedFile !== undefined && o.credsFile !== undefined) throw new ConfigError("give an nkey seed file or a creds file, not both");
  if (o.user !== undefined) opts.user = o.user;
  if (o.pass !== undefined) opts.pass = o.pass;
  if (o.token !== undefined) opts.token = o.token;
  if (o.nkeySeedFile !== undefined) opts.authenticator = nkeyAuthenticator(readNkeySeed(o.nkeySeedFile));
  if (o.credsFile !== undefined) opts.authenticator = credsAuthenticator(readSecretFile("creds file", o.credsFile));
  if ((o.tlsCertFile === undefined) !== (o.tlsKeyFile === undefined)) throw new ConfigError("a TLS client certificate needs its key, and a key its certificate: give both tlsCertFile and tlsKeyFile");
  if (o.tlsCaFile !== undefined || o.tlsCertFile !== undefined) {
    // Read here rather than by nats.js so that a bad path is a clear CONFIG error, not a handshake failure.
    const tls: NonNullable<ConnectionOptions["tls"]> = {};
    if (o.tlsCaFile !== undefined) tls.ca = Buffer.from(readSecretFile("TLS CA file", o.tlsCaFile)).toString("utf8");
    if (o.tlsCertFile !== undefined && o.tlsKeyFile !== undefined) {
      tls.cert = Buffer.from(readSecretFile("TLS certificate file", o.tlsCertFile)).toString("utf8");
      tls.key = Buffer.from(readSecretFile("TLS key file", o.tlsKeyFile)).toString("utf8");
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
  if (o.user !== undefined) parts.push(`user ${JSON.stringify(o.user)}${o.pass !== undefined ? " with a password" : ""}`);
  if (o.token !== undefined) parts.push("a token");
  if (o.nkeySeedFile !== undefined) parts.push(`the nkey seed in ${o.nkeySeedFile}`);
  if (o.credsFile !== undefined) parts.push(`the creds file ${o.credsFile}`);
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
    return new PortraitError(ErrorCode.AUTH_FAILED, `NATS at ${o.url} refused the connection with ${credentialsUsed(o)}: ${message}`, { cause: err });
  }
  if (code === "TLS" || code === "SERVER_OPTION_NOT_AVAILABLE" || TLS_ERROR_RE.test(`${message} ${inner}`)) {
    const hint = o.tlsCaFile === undefined
      ? "if the server's certificate is signed by a private CA, pass that CA (--tls-ca / natsTlsCaFile)"
      : `check that ${o.tlsCaFile} signed the server's certificate and that the certificate names this host`;
    return new PortraitError(ErrorCode.AUTH_FAILED, `TLS with NATS at ${o.url} failed: ${message}${inner.trim() ? ` (${inner.trim()})` : ""}; ${hint}; ` +
      "a server that verifies clients also needs --tls-cert and --tls-key", { cause: err });
  }
  if (code === "TIMEOUT" && (o.tlsCaFile !== undefined || o.tlsCertFile !== undefined)) {
    // A server that verifies clients closes a connection without a certificate after the handshake; nats.js only sees silence.
    return new PortraitError(ErrorCode.TIMEOUT, `NATS at ${o.url} did not complete the connection over TLS within ${o.timeoutMs ?? 5000} ms` +
      (o.tlsCertFile === undefined ? "; if the server verifies client certificates (tls { verify: true }), pass --tls-cert and --tls-key" : ""), { cause: err });
  }
  if (code === "CONNECTION_REFUSED" || code === "TIMEOUT") {
    // Nothing listens there (or it does not answer): the same "is it running?" as a query nobody answers.
    return new PortraitError(ErrorCode.NO_RESPONDERS, `no NATS server answers at ${o.url} (${code}); is it running, and is --nats right?`, { cause: err });
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
