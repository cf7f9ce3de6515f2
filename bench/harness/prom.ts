/** Reading prom-client histograms and counters of an engine, and differences between two snapshots. */
import type { Registry } from "prom-client";

export { INGEST_STAGES, QUERY_STAGES } from "../../src/obs/metrics.js";

export interface PromHist { buckets: Array<[number, number]>; sum: number; count: number }

export async function promHist(reg: Registry, name: string, labels: Record<string, string> = {}): Promise<PromHist> {
  const out: PromHist = { buckets: [], sum: 0, count: 0 };
  const m = reg.getSingleMetric(name);
  if (m === undefined) return out;
  const { values } = await m.get();
  const byLe = new Map<number, number>();
  for (const v of values) {
    if (!Object.entries(labels).every(([k, x]) => String(v.labels[k]) === x)) continue;
    const n = (v as { metricName?: string }).metricName ?? "";
    if (n.endsWith("_bucket")) {
      const le = v.labels.le === "+Inf" ? Infinity : Number(v.labels.le);
      byLe.set(le, (byLe.get(le) ?? 0) + v.value);
    } else if (n.endsWith("_sum")) out.sum += v.value;
    else if (n.endsWith("_count")) out.count += v.value;
  }
  out.buckets = [...byLe].sort((a, b) => a[0] - b[0]);
  return out;
}

/** Every series of a counter or gauge, keyed by its label values joined with "/" ("total" without labels). */
export async function promCounter(reg: Registry, name: string): Promise<Record<string, number>> {
  const m = reg.getSingleMetric(name);
  const out: Record<string, number> = {};
  if (m === undefined) return out;
  for (const v of (await m.get()).values) out[Object.values(v.labels).join("/") || "total"] = v.value;
  return out;
}

export function histDelta(a: PromHist, b: PromHist): PromHist {
  return {
    buckets: b.buckets.map(([le, c], i) => [le, c - (a.buckets[i]?.[1] ?? 0)]),
    sum: b.sum - a.sum,
    count: b.count - a.count,
  };
}

export const histMean = (h: PromHist) => (h.count > 0 ? h.sum / h.count : NaN);

/** A quantile from cumulative Prometheus buckets, interpolated linearly inside its bucket. */
export function bucketQuantile(h: PromHist, q: number): number {
  if (h.count === 0) return NaN;
  const rank = q * h.count;
  let prevLe = 0;
  let prevC = 0;
  for (const [le, c] of h.buckets) {
    if (c >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevC)) / Math.max(1e-9, c - prevC);
    }
    prevLe = le;
    prevC = c;
  }
  return prevLe;
}
