// Piscina entry of deepfm.worker used only when the pool runs from the
// TypeScript sources (tests, `npx tsx`): piscina imports its worker file by
// path, and a worker thread does not inherit the tsx loader, so register it in
// this thread first. Compiled pools (dist/) load deepfm.worker.js directly.
// The top-level await also makes piscina's require() attempt fail over to import().
import { register } from "tsx/esm/api";

register();
const worker = await import(new URL("./deepfm.worker.ts", import.meta.url).href);
export default worker.default;
