/**
 * The engine's operations endpoint: GET /metrics (Prometheus text),
 * GET /healthz (200 while the process runs), GET /readyz (200 when ready,
 * 503 while starting or draining), and whatever `routes` serves (the
 * dashboard: it answers true for the requests it took).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { ConfigError } from "../errors.js";

export interface OpsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Serves a request and returns true, or returns false to leave it to the next handler (then 404). */
export type Routes = (req: IncomingMessage, res: ServerResponse) => boolean;

export async function startOpsServer(host: string, port: number, registry: Registry, isReady: () => boolean, routes?: Routes): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET") {
      res.writeHead(405).end();
    } else if (path === "/metrics") {
      registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const ready = isReady();
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "not ready\n");
    } else if (routes === undefined || !routes(req, res)) {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(err.code === "EADDRINUSE"
        ? new ConfigError(`${host}:${port} is in use: choose another --http-port (0 = any free port, -1 = off)`, { cause: err })
        : err));
    server.listen(port, host, () => resolve());
  });
  let closed: Promise<void> | undefined;
  return {
    port: (server.address() as AddressInfo).port,
    close: () => (closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    })),
  };
}
