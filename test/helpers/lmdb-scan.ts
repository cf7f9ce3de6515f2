/** Raw scans of an engine's LMDB, for tests that check what it keeps (forget, pseudonymisation, identity). */
import { open } from "lmdb";
import { join } from "node:path";
import { expect } from "vitest";

/**
 * Occurrences of each needle (UTF-8) in every key and value of every database
 * of the LMDB environment under `<dataDir>/lmdb`, read as raw bytes: the main
 * database (whose keys name the named databases) and each named database.
 * Checks that the databases `mustHold` exist and that something was read.
 */
export function scanLmdb(dataDir: string, needles: string[], mustHold: string[] = ["meta", "profiles"]): Record<string, number> {
  const env = open({ path: join(dataDir, "lmdb"), encoding: "binary", keyEncoding: "binary", compression: false });
  const hits: Record<string, number> = Object.fromEntries(needles.map((n) => [n, 0]));
  const bytes = needles.map((n) => Buffer.from(n, "utf8"));
  const check = (b: unknown) => {
    const buf = Buffer.isBuffer(b) ? b : Buffer.from(b as Uint8Array);
    bytes.forEach((n, i) => {
      for (let at = buf.indexOf(n); at >= 0; at = buf.indexOf(n, at + 1)) hits[needles[i]!]!++;
    });
  };
  try {
    const names: string[] = [];
    for (const { key, value } of env.getRange({})) {
      check(key);
      check(value);
      // lmdb-js stores database names NUL-terminated.
      names.push(Buffer.from(key as Uint8Array).toString("utf8").replace(/\0$/, ""));
    }
    expect(names).toEqual(expect.arrayContaining(mustHold));
    let entries = 0;
    for (const name of names) {
      const db = env.openDB({ name, encoding: "binary", keyEncoding: "binary" });
      for (const { key, value } of db.getRange({})) {
        check(key);
        check(value);
        entries++;
      }
    }
    expect(entries).toBeGreaterThan(0);
  } finally {
    void env.close();
  }
  return hits;
}
