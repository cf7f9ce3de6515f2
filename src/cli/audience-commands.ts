/**
 * `portrait audience create|list|show|delete|count|members|export|report|starters`:
 * the audience endpoints over request-reply (README "Audiences").
 */
import { InvalidArgumentError, type Command } from "commander";
import { createWriteStream, readFileSync } from "node:fs";
import { once } from "node:events";
import { parseDefinition, type AudienceDefinition } from "../actors/audience-rules.js";
import { STARTER_NAMES, starterAudience } from "../actors/audience-starters.js";
import type { PortraitClient } from "../client/portrait-client.js";
import { BadRequestError } from "../errors.js";
import { progress } from "./progress.js";

export interface AudienceCliDeps {
  /** Adds the connection flags (NATS URL, security, partitions, prefix) to a command. */
  clientFlags(cmd: Command): Command;
  withClient<T>(flags: unknown, name: string, work: (client: PortraitClient) => Promise<T>): Promise<T>;
}

const EXPORT_FIELDS = ["userId", "sinceMs", "since", "holdout"] as const;

function share(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 0.5) throw new InvalidArgumentError("must be a number in [0, 0.5]");
  return n;
}

function csvCell(v: unknown): string {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Waits for the backfill the engine runs after a change, with a progress bar. */
async function followBackfill(client: PortraitClient, id: string): Promise<number> {
  let bar: ReturnType<typeof progress> | undefined;
  // The engine picks the change up from its KV watch: give it a moment to start.
  await new Promise((r) => setTimeout(r, 300));
  for (;;) {
    const s = await client.audienceShow(id);
    if (!s.backfill.running) {
      bar?.stop();
      return s.count;
    }
    bar ??= progress(`backfill ${id}`, s.backfill.total);
    bar.update(s.backfill.scanned);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export function registerAudienceCommands(program: Command, deps: AudienceCliDeps): void {
  const aud = program.command("audience").description("real-time audiences: create, list, show, delete, count, members, export, starters");

  deps.clientFlags(aud.command("create")
    .description("create or replace an audience from a JSON definition (file, or - for stdin) or a starter; waits for its backfill with a progress bar")
    .argument("[file]", "JSON definition file, or - for stdin")
    .option("--starter <name>", `a starter audience: ${STARTER_NAMES.join(", ")}`)
    .option("--category <id>", "the category of the category-lovers starter")
    .option("--holdout <share>", "holdout share in [0, 0.5] (overrides the definition's)", share)
    .option("--no-wait", "do not wait for the backfill"))
    .action(async (file: string | undefined, f: { starter?: string; category?: string; holdout?: number; wait: boolean }) => {
      let def: AudienceDefinition;
      if (f.starter !== undefined) {
        const s = starterAudience(f.starter, f.category !== undefined ? { category: f.category } : {});
        if (s === undefined) throw new BadRequestError(`unknown starter ${JSON.stringify(f.starter)}; the starters are ${STARTER_NAMES.join(", ")}`);
        def = s;
      } else if (file !== undefined) {
        const text = readFileSync(file === "-" ? 0 : file, "utf8");
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch (err) {
          throw new BadRequestError(`${file} is not JSON: ${(err as Error).message}`);
        }
        def = parseDefinition(json);
      } else {
        throw new BadRequestError("give a definition file (or -) or --starter NAME");
      }
      if (f.holdout !== undefined) def = { ...def, holdoutShare: f.holdout };
      await deps.withClient(f, "portrait-cli", async (client) => {
        const r = await client.audienceCreate(def);
        console.log(`${r.replaced ? "replaced" : "created"} audience ${def.id}`);
        if (f.wait) console.log(`${def.id}: ${await followBackfill(client, def.id)} members`);
      });
    });

  deps.clientFlags(aud.command("list").description("list the audiences with their member counts").option("--json", "print JSON"))
    .action(async (f: { json?: boolean }) => {
      await deps.withClient(f, "portrait-cli", async (client) => {
        const r = await client.audienceList();
        if (f.json) return console.log(JSON.stringify(r));
        for (const a of r.audiences) console.log(`${a.definition.id.padEnd(32)} ${String(a.count).padStart(9)}  ${a.definition.name ?? ""}`);
        if (r.backfill.running) console.log(`(backfill running: ${r.backfill.scanned}/${r.backfill.total} profiles)`);
      });
    });

  deps.clientFlags(aud.command("show").description("print an audience's definition, count and backfill state").argument("<id>"))
    .action(async (id: string, f: unknown) => {
      await deps.withClient(f, "portrait-cli", async (client) => console.log(JSON.stringify(await client.audienceShow(id), null, 2)));
    });

  deps.clientFlags(aud.command("delete").description("delete an audience (its members exit with reason \"deleted\")").argument("<id>"))
    .action(async (id: string, f: unknown) => {
      await deps.withClient(f, "portrait-cli", async (client) => {
        await client.audienceDelete(id);
        console.log(`deleted audience ${id}`);
      });
    });

  deps.clientFlags(aud.command("count").description("the exact member count (maintained counters)").argument("<id>"))
    .action(async (id: string, f: unknown) => {
      await deps.withClient(f, "portrait-cli", async (client) => console.log(await client.audienceCount(id)));
    });

  deps.clientFlags(aud.command("members").description("print members, one per line").argument("<id>")
    .option("--limit <n>", "at most this many", (v) => Number(v), 100))
    .action(async (id: string, f: { limit: number }) => {
      await deps.withClient(f, "portrait-cli", async (client) => {
        let n = 0;
        for await (const m of client.audienceMembersAll(id)) {
          console.log(`${m.userId}\t${new Date(m.sinceMs).toISOString()}${m.holdout ? "\tholdout" : ""}`);
          if (++n >= f.limit) break;
        }
      });
    });

  deps.clientFlags(aud.command("export").description("stream every member to a file or stdout, with a progress bar").argument("<id>")
    .option("--format <format>", "csv or ndjson", "csv")
    .option("--fields <list>", `comma-separated: ${EXPORT_FIELDS.join(", ")}`, "userId,since,holdout")
    .option("--out <file>", "write here instead of stdout"))
    .action(async (id: string, f: { format: string; fields: string; out?: string }) => {
      if (f.format !== "csv" && f.format !== "ndjson") throw new BadRequestError("--format must be csv or ndjson");
      const fields = f.fields.split(",").filter((x) => x !== "");
      for (const x of fields) if (!(EXPORT_FIELDS as readonly string[]).includes(x)) throw new BadRequestError(`unknown field ${JSON.stringify(x)}; the fields are ${EXPORT_FIELDS.join(", ")}`);
      await deps.withClient(f, "portrait-cli", async (client) => {
        const out = f.out !== undefined ? createWriteStream(f.out) : process.stdout;
        const write = async (line: string) => {
          if (!out.write(line)) await once(out, "drain");
        };
        const total = await client.audienceCount(id);
        const bar = progress(`export ${id}`, total);
        if (f.format === "csv") await write(`${fields.join(",")}\n`);
        let n = 0;
        for await (const m of client.audienceMembersAll(id, 5000)) {
          const row: Record<string, unknown> = { userId: m.userId, sinceMs: m.sinceMs, since: new Date(m.sinceMs).toISOString(), holdout: m.holdout };
          await write(f.format === "csv" ? `${fields.map((x) => csvCell(row[x])).join(",")}\n` : `${JSON.stringify(Object.fromEntries(fields.map((x) => [x, row[x]])))}\n`);
          if (++n % 1000 === 0) bar.update(n);
        }
        bar.update(n);
        bar.stop();
        if (f.out !== undefined) {
          out.end();
          await once(out, "finish");
          console.error(`exported ${n} members of ${id} to ${f.out}`);
        }
      });
    });

  deps.clientFlags(aud.command("report").description("uplift: contacted members vs holdout, purchase rate and revenue per member after entering, with 95% intervals").argument("<id>")
    .option("--days <n>", "days from entering", (v) => Number(v), 30)
    .option("--json", "print JSON"))
    .action(async (id: string, f: { days: number; json?: boolean }) => {
      await deps.withClient(f, "portrait-cli", async (client) => {
        const r = await client.audienceReport(id, f.days);
        if (f.json) return console.log(JSON.stringify(r));
        const row = (name: string, g: typeof r.contacted) =>
          console.log(`${name.padEnd(10)} ${String(g.members).padStart(8)} members  purchase rate ${(100 * g.purchaseRate).toFixed(2)}%  revenue/member ${g.revenuePerMember.toFixed(2)}`);
        console.log(`${id}, ${r.days} days from entering:`);
        row("contacted", r.contacted);
        row("holdout", r.holdout);
        const ci = (u: typeof r.revenueUplift, pct: boolean) => u === null ? "n/a (needs members in both groups)"
          : pct ? `${(100 * u.estimate).toFixed(2)} pts [${(100 * u.low).toFixed(2)}, ${(100 * u.high).toFixed(2)}]` : `${u.estimate.toFixed(2)} [${u.low.toFixed(2)}, ${u.high.toFixed(2)}]`;
        console.log(`uplift    purchase rate ${ci(r.purchaseRateUplift, true)}; revenue/member ${ci(r.revenueUplift, false)} (95%)`);
        console.log(`(${r.note})`);
      });
    });

  aud.command("starters").description("list the starter audiences (create one with: audience create --starter NAME)")
    .action(() => {
      for (const name of STARTER_NAMES) {
        const d = starterAudience(name, { category: "<category>" })!;
        console.log(`${name.padEnd(18)} ${d.description ?? ""}`);
      }
    });
}
