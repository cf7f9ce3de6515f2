/**
 * A real nats-server cluster with JetStream on loopback, for the cluster
 * tests and `portrait bench cluster` (README "Scale-out"): free route ports,
 * one temp store per node, all started at once (each waits for the others to
 * elect a meta leader), with the short ping settings of README's recipe so
 * that a paused client is dropped within about 3 s.
 */
import { createServer } from "node:net";
import { startNatsServer, type NatsServerHandle } from "../../src/bus/nats-server-launcher.js";

export interface NatsCluster {
  nodes: NatsServerHandle[];
  /** Every node's client URL, comma-separated (what engines and clients get). */
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** `start` starts one server with the extra config given (default: startNatsServer with a 20 s readiness bound). */
export async function startNatsCluster(size = 3, start: (extraConfig: string) => Promise<NatsServerHandle> = (extraConfig) => startNatsServer({ extraConfig, readyTimeoutMs: 20_000 })): Promise<NatsCluster> {
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) routePorts.push(await freePort());
  const name = `pc${process.pid}x${Date.now() % 100000}`;
  const nodes = await Promise.all(routePorts.map((port, i) => start([
    `server_name: ${name}-n${i}`,
    `ping_interval: "1s"`,
    `ping_max: 2`,
    `cluster {`,
    `  name: ${name}`,
    `  listen: "127.0.0.1:${port}"`,
    `  routes: [${routePorts.filter((_, j) => j !== i).map((p) => `"nats-route://127.0.0.1:${p}"`).join(", ")}]`,
    `}`,
  ].join("\n"))));
  return {
    nodes,
    url: nodes.map((n) => n.url).join(","),
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
    },
  };
}
