/**
 * A control for `portrait eval prequential --targets next-click`: the recs
 * worker's own code (index, candidates, ranking policy) in process on
 * Yoochoose 100k train_tr -> train_valid, scored like the live engine (top 20
 * of the served order, each test click after a session's first, before it
 * is applied), in two modes:
 * - "online": the index also takes in every test click once it is scored,
 *   as the live engine does (it learns from the test sessions that came
 *   earlier); this reproduces the live engine's figures;
 * - "train only": the index holds train_tr alone, like the offline
 *   baselines; the target's own session (its clicks so far) is still the query.
 *
 *   npx tsx bench/next-click-control.ts [--datasets ../shared/data]
 */
import { parseArgs } from "node:util";
import { readDataset, resolveDataFile } from "../src/data/datasets.js";
import type { DatasetEvent } from "../src/data/types.js";
import { NEXT_CLICK_FILES } from "../src/eval/next-click.js";
import { generateCandidates } from "../src/recs/candidates.js";
import { policyScore, type RankingPolicy } from "../src/recs/ranking-policy.js";
import { createRecsIndex, observeItemEvent } from "../src/recs/recs-index.js";
import { compileRecsOptions } from "../src/recs/recs-options.js";
import type { Session } from "../src/recs/session-store.js";
import { repoRoot } from "./report.js";

const { values: a } = parseArgs({ options: { datasets: { type: "string", default: process.env.PORTRAIT_DATASETS ?? `${repoRoot()}/../shared/data` } } });

async function read(file: string): Promise<DatasetEvent[]> {
  const out: DatasetEvent[] = [];
  for await (const e of readDataset("yoochoose", resolveDataFile(a.datasets!, "yoochoose", file))) if (e.itemId) out.push(e);
  return out.map((e, i) => ({ e, i })).sort((x, y) => x.e.timestampMs - y.e.timestampMs || x.i - y.i).map((x) => x.e);
}

const POLICIES: RankingPolicy[] = [
  { name: "blend", weights: { sknn: 1, rules: 0.5, recent: 1, covisit: 0.25 }, from: "README (chosen on train_tr's last day)" },
  { name: "source:sknn", weights: {}, from: "default" },
];

const train = await read(NEXT_CLICK_FILES.train);
const test = await read(NEXT_CLICK_FILES.test);
for (const online of [true, false]) {
  const o = compileRecsOptions();
  const idx = createRecsIndex(o);
  const observe = (e: DatasetEvent) => observeItemEvent(idx, { userId: e.userId, itemId: e.itemId!, type: e.type, timestampMs: e.timestampMs });
  for (const e of train) observe(e);
  const sessions = new Map<string, { items: string[]; lastMs: number }>();
  const hits = POLICIES.map(() => ({ hr: 0, rr: 0 }));
  let n = 0;
  for (const e of test) {
    const s = sessions.get(e.userId);
    if (s !== undefined) {
      const own: Session = { id: -1, userId: e.userId, items: s.items, distinct: new Set(s.items), lastMs: s.lastMs, dead: false, tick: 0 };
      const session = online ? idx.sessions.forRequest(e.userId, e.timestampMs) : own;
      const cands = generateCandidates({
        userId: e.userId, known: true, recentItems: [...new Set([...s.items].reverse())].slice(0, 20), topCategories: [], nextCategories: [],
        purchasedItems: [], exclude: [], nowMs: e.timestampMs, ...(session !== undefined ? { session } : {}),
      }, idx, o.candidates);
      n++;
      const t = cands.findIndex((c) => c.itemId === e.itemId);
      POLICIES.forEach((p, k) => {
        if (t < 0) return;
        const sc = cands.map((c) => policyScore(p, c));
        // The served order: policy score, then prior, then item id (orderCandidates); candidates come sorted by prior, then id.
        let rank = 1;
        for (let j = 0; j < cands.length; j++) if (j !== t && (sc[j]! > sc[t]! || (sc[j] === sc[t] && j < t))) rank++;
        if (rank <= 20) {
          hits[k]!.hr++;
          hits[k]!.rr += 1 / rank;
        }
      });
    }
    if (online) observe(e);
    const x = s ?? { items: [], lastMs: 0 };
    x.items.push(e.itemId!);
    x.lastMs = e.timestampMs;
    sessions.set(e.userId, x);
  }
  POLICIES.forEach((p, k) => {
    console.log(`${online ? "online    " : "train only"}  ${p.name.padEnd(12)}  HR@20 ${(hits[k]!.hr / n).toFixed(4)}  MRR@20 ${(hits[k]!.rr / n).toFixed(4)}  (${n} targets)`);
  });
}
