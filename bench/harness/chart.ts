/** A dependency-free SVG line chart: latency percentiles against throughput, one line per series. */

export interface ChartSeries { name: string; points: Array<[number, number]> }

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Log scale on y (latencies spread over decades). Default true. */
  logY?: boolean;
  width?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function niceTicks(lo: number, hi: number, n: number): number[] {
  if (!(hi > lo)) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n));
  const err = (hi - lo) / n / step;
  const s = step * (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1);
  const out: number[] = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-9; v += s) out.push(v);
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1000 ? `${+(v / 1000).toPrecision(3)}k` : `${+v.toPrecision(3)}`);

export function lineChartSvg(series: ChartSeries[], o: ChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 420;
  const m = { l: 70, r: 150, t: 40, b: 50 };
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const logY = o.logY ?? true;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => (logY ? Math.log10(Math.max(1e-3, p[1])) : p[1]));
  const x0 = 0;
  const x1 = Math.max(1, ...xs) * 1.05;
  let y0 = logY ? Math.floor(Math.min(0, ...ys)) : 0;
  let y1 = logY ? Math.ceil(Math.max(1, ...ys)) : Math.max(1, ...ys) * 1.1;
  if (y1 <= y0) y1 = y0 + 1;
  if (!logY) y0 = 0;
  const X = (v: number) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (v: number) => H - m.b - (((logY ? Math.log10(Math.max(1e-3, v)) : v) - y0) / (y1 - y0)) * (H - m.t - m.b);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(o.title)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}${logY ? " (log)" : ""}</text>`,
  ];
  for (const t of niceTicks(x0, x1, 6)) out.push(`<line x1="${X(t)}" y1="${H - m.b}" x2="${X(t)}" y2="${H - m.b + 4}" stroke="black"/><text x="${X(t)}" y="${H - m.b + 17}" text-anchor="middle">${fmt(t)}</text>`);
  const yTicks = logY ? Array.from({ length: y1 - y0 + 1 }, (_, i) => 10 ** (y0 + i)) : niceTicks(0, y1, 6);
  for (const t of yTicks) {
    out.push(`<line x1="${m.l}" y1="${Y(t)}" x2="${W - m.r}" y2="${Y(t)}" stroke="#ddd"/><text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end">${fmt(t)}</text>`);
  }
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    const ok = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    if (ok.length > 0) out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${ok.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ")}"/>`);
    for (const [x, y] of ok) out.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3" fill="${c}"/>`);
    out.push(`<rect x="${W - m.r + 12}" y="${m.t + i * 20}" width="14" height="4" fill="${c}"/><text x="${W - m.r + 32}" y="${m.t + i * 20 + 6}">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n");
}
