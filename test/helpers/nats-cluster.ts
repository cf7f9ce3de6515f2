/**
 * A real 3-node nats-server cluster with JetStream on loopback (README
 * "Scale-out"): free route ports, one temp store per node, all started at
 * once (each waits for the others to elect a meta leader), with the short
 * ping settings of README's recipe. stop() ends all.
 */
import { createServer } from "node:net";
import type { NatsServerHandle } from "../../src/bus/nats-server-launcher.js";
import { startTestNats } from "./nats.js";

export interface TestNatsCluster {
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

export async function startTestNatsCluster(size = 3): Promise<TestNatsCluster> {
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) routePorts.push(await freePort());
  const name = `pc${process.pid}x${Date.now() % 100000}`;
  const nodes = await Promise.all(routePorts.map((port, i) => startTestNats([
    `server_name: ${name}-n${i}`,
    // A paused engine (SIGSTOP) stops answering pings: dropped after about 3 s, so the queue group stops handing it queries (README "Scale-out").
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
