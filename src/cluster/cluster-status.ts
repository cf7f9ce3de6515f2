/**
 * `portrait cluster status`: the nodes, the partitions and the age of their
 * leases, read from the lease bucket (<PREFIX>_LEASES) by any client. Ages
 * are the time since NATS stored each key's last write, on this machine's
 * clock against the server's (the nodes themselves judge expiry on their own
 * clocks: src/bus/leases.ts).
 */
import type { NatsConnection } from "nats";
import type { Subjects } from "../bus/subjects.js";
import { ConfigError } from "../errors.js";

export interface ClusterStatus {
  bucket: string;
  nodes: { node: string; heartbeatAgeMs: number; partitions: number[] }[];
  partitions: { partition: number; node: string; epoch: number; leaseAgeMs: number }[];
}

export async function clusterStatus(nc: NatsConnection, s: Subjects): Promise<ClusterStatus> {
  const bucket = `${s.eventStream.slice(0, -"_EVENTS".length)}_LEASES`;
  const jsm = await nc.jetstreamManager();
  try {
    await jsm.streams.info(`KV_${bucket}`);
  } catch {
    throw new ConfigError(`no lease bucket ${bucket}: no engine runs with --cluster under prefix ${s.prefix}`);
  }
  const kv = await nc.jetstream().views.kv(bucket, { bindOnly: true });
  const now = Date.now();
  const nodes = new Map<string, { node: string; heartbeatAgeMs: number; partitions: number[] }>();
  const partitions: ClusterStatus["partitions"] = [];
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  for (const k of keys) {
    const e = await kv.get(k);
    if (e === null || e.operation !== "PUT") continue;
    const age = Math.max(0, now - e.created.getTime());
    if (k.startsWith("node.")) {
      const node = k.slice(5);
      nodes.set(node, { node, heartbeatAgeMs: age, partitions: nodes.get(node)?.partitions ?? [] });
    } else if (k.startsWith("p.")) {
      const v = JSON.parse(new TextDecoder().decode(e.value)) as { node: string; epoch: number };
      partitions.push({ partition: Number(k.slice(2)), node: v.node, epoch: v.epoch, leaseAgeMs: age });
    }
  }
  partitions.sort((a, b) => a.partition - b.partition);
  for (const p of partitions) {
    if (p.node === "") continue;
    const n = nodes.get(p.node) ?? { node: p.node, heartbeatAgeMs: -1, partitions: [] };
    n.partitions.push(p.partition);
    nodes.set(p.node, n);
  }
  return { bucket, nodes: [...nodes.values()].sort((a, b) => (a.node < b.node ? -1 : 1)), partitions };
}
