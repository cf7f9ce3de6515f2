/** Cluster mode's partition assignment (src/bus/partition-assignment.ts): pure, no NATS. */
import { describe, expect, it } from "vitest";
import { assignPartitions } from "../src/bus/partition-assignment.js";

function counts(owners: (string | undefined)[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const o of owners) if (o !== undefined) m.set(o, (m.get(o) ?? 0) + 1);
  return m;
}

describe("cluster - partition assignment", () => {
  it("cluster - every partition has one owner, none has more than ceil(P/N), and the answer does not depend on the list's order", () => {
    const cases: [number, string[]][] = [[16, ["a", "b", "c"]], [64, Array.from({ length: 16 }, (_, i) => `n${i}`)], [7, ["x", "y"]], [4, ["a", "b", "c", "d", "e"]]];
    for (const [p, nodes] of cases) {
      const owners = assignPartitions(p, nodes);
      expect(owners.every((o) => o !== undefined && nodes.includes(o))).toBe(true);
      for (const n of counts(owners).values()) expect(n).toBeLessThanOrEqual(Math.ceil(p / nodes.length));
      expect(assignPartitions(p, [...nodes].reverse())).toEqual(owners);
    }
    expect(assignPartitions(4, [])).toEqual([undefined, undefined, undefined, undefined]);
  });

  it("cluster - a node joining moves few partitions, and those it takes are the ones that move", () => {
    const nodes = Array.from({ length: 8 }, (_, i) => `node-${i}`);
    const before = assignPartitions(64, nodes);
    const after = assignPartitions(64, [...nodes, "node-new"]);
    const moved = before.filter((o, p) => after[p] !== o).length;
    const taken = after.filter((o) => o === "node-new").length;
    expect(taken).toBeGreaterThanOrEqual(Math.floor(64 / 9));
    // A reshuffle would move most of 64; balanced rendezvous moves about what the new node takes, plus a few for the caps.
    expect(moved).toBeLessThanOrEqual(2 * Math.ceil(64 / 9) + 4);
    // A node leaving: only its partitions and a few for the caps move.
    const left = assignPartitions(64, nodes.slice(1));
    const movedOnLeave = before.filter((o, p) => left[p] !== o).length;
    expect(movedOnLeave).toBeLessThanOrEqual(2 * before.filter((o) => o === "node-0").length + 4);
  });
});
