/**
 * Which engine node should own each partition: balanced rendezvous hashing.
 * Every node computes the same answer from the same sorted list of live
 * nodes, with no coordination beyond the list.
 *
 * Each partition ranks the nodes by a hash of (partition, node); partitions
 * are taken in order and each goes to its best-ranked node that has fewer
 * than ceil(P/N) partitions. So no node owns more than ceil(P/N), and a node
 * joining or leaving moves about P/N partitions (those it wins or held), not
 * a reshuffle of all of them.
 */
import { fnv1a32String } from "../wire/partition.js";

/** A node's rank for a partition: higher wins. */
function score(partition: number, node: string): number {
  // fnv1a over "p/node", then a 32-bit finaliser (murmur3 fmix) so that nearby inputs spread.
  let h = fnv1a32String(`${partition}/${node}`);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The owner of each partition 0..partitions-1 among `nodes` (any order;
 * duplicates ignored): an array indexed by partition. Empty nodes: every
 * entry is undefined.
 */
export function assignPartitions(partitions: number, nodes: readonly string[]): (string | undefined)[] {
  const live = [...new Set(nodes)].sort();
  const out: (string | undefined)[] = new Array(partitions).fill(undefined);
  if (live.length === 0) return out;
  const cap = Math.ceil(partitions / live.length);
  const load = new Map<string, number>(live.map((n) => [n, 0]));
  for (let p = 0; p < partitions; p++) {
    const ranked = live.map((n) => [n, score(p, n)] as const).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const [node] = ranked.find(([n]) => load.get(n)! < cap)!;
    load.set(node, load.get(node)! + 1);
    out[p] = node;
  }
  return out;
}
