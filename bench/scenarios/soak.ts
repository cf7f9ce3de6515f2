/**
 * soak: the mixed load held for minutes (30 when asked, short by default),
 * the engine's RSS sampled every few seconds; memory is flat when the slope
 * over the second half is near zero.
 */
import { MIXED_HEADER, mixedFlags, mixedRows, mixedWindow, summary } from "./mixed.js";
import { pctMs } from "../harness/open-loop.js";
import { slope } from "../harness/proc-stats.js";
import { f0, f2, num, type Scenario } from "./scenario.js";

export const soak: Scenario = {
  name: "soak",
  summary: "the mixed load for --minutes (default 2; 30 for the real soak), engine RSS over time and its slope",
  flags: {
    ...mixedFlags,
    minutes: { default: "2", smoke: "0.1", help: "minutes of load (30 for the soak the issue asks for)" },
    "ingest-fraction": { default: "0.4", help: "ingest rate, as a fraction of the live capacity" },
    "profile-rate": { default: "500", smoke: "100", help: "profile requests per second" },
    "recommend-rate": { default: "50", smoke: "10", help: "recommendation requests per second" },
  },
  async run(ctx) {
    const minutes = num(ctx, "minutes", 0.05, 240, false);
    const w = await mixedWindow(ctx, "bsoak", minutes * 60, ctx.smoke ? 1000 : 5000);
    const half = w.samples.filter((s) => s.t >= (minutes * 60) / 2);
    const slopeMiBPerMin = slope(half.map((s) => [s.t / 60, s.rssMiB]));
    const rss = w.samples.map((s) => s.rssMiB);
    const meanHalf = half.reduce((a, s) => a + s.rssMiB, 0) / Math.max(1, half.length);
    // Flat: the second half's trend would add less than 5 % of its mean RSS over an hour.
    const flat = Number.isFinite(slopeMiBPerMin) && Math.abs(slopeMiBPerMin) * 60 < 0.05 * meanHalf;
    return {
      title: `soak, ${minutes} min`,
      header: MIXED_HEADER,
      rows: [
        ...mixedRows(w),
        ["engine RSS", `first ${f0(rss[0] ?? NaN)} / max ${f0(Math.max(...rss))} / last ${f0(rss.at(-1) ?? NaN)} MiB`, "-", "-", "-", "-", "-"],
        ["RSS slope, second half", `${f2(slopeMiBPerMin)} MiB/min (${flat ? "flat" : "NOT flat"}: ${f2(Math.abs(slopeMiBPerMin) * 60)} MiB/h vs 5 % of ${f0(meanHalf)} MiB)`, "-", "-", "-", "-", "-"],
      ],
      notes: [
        `Live capacity ${f0(w.capacity)} events/s; ingest at ${ctx.flags["ingest-fraction"]} of it (${w.ingestRate}/s), profile ${ctx.flags["profile-rate"]}/s, recommend ${ctx.flags["recommend-rate"]}/s, 4 freshness probes, for ${minutes} min; RSS sampled every ${ctx.smoke ? 1 : 5} s.`,
        `Freshness p99 over the soak: ${f2(pctMs(w.probes.freshness, 99))} ms. State before: ${w.loaded.events} events (all prepared events cover ${w.loaded.users} users).`,
        `RSS (MiB) per sample: ${w.samples.map((s) => f0(s.rssMiB)).join(" ")}`,
      ],
      raw: { ...w, profile: summary(w.profile), recommend: summary(w.recommend), probes: { probes: w.probes.probes, failed: w.probes.failed, p99: pctMs(w.probes.freshness, 99) }, slopeMiBPerMin, flat },
      chart: {
        series: [{ name: "engine RSS MiB", points: w.samples.map((s) => [s.t / 60, s.rssMiB]) }],
        options: { title: `soak: engine RSS over ${minutes} min`, xLabel: "minutes", yLabel: "MiB", logY: false },
      },
    };
  },
};
