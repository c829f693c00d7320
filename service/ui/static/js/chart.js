// The loss curve: an SVG line chart drawn here (no charting library to ship or vendor).
import { number } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 960;
const H = 300;
const PAD = { left: 58, right: 14, top: 12, bottom: 34 };

function svg(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function ticks(lo, hi, count) {
  if (hi <= lo) return [lo];
  return Array.from({ length: count + 1 }, (_, i) => lo + ((hi - lo) * i) / count);
}

export class LossChart {
  constructor(figure) {
    this.points = new Map(); // step -> loss: the stream's history and a poll may overlap
    this.maxSteps = null;
    this.svg = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
    this.title = svg("title", {}, "Training loss");
    this.svg.append(this.title);
    this.layer = svg("g", {});
    this.svg.append(this.layer);
    this.caption = document.createElement("figcaption");
    figure.append(this.svg, this.caption);
    this.figure = figure;
    this.pending = false;
    this.draw();
  }

  add(step, loss) {
    if (typeof step !== "number" || typeof loss !== "number" || !isFinite(loss)) return;
    this.points.set(step, loss);
    this.schedule();
  }

  setMaxSteps(maxSteps) {
    if (maxSteps && maxSteps !== this.maxSteps) {
      this.maxSteps = maxSteps;
      this.schedule();
    }
  }

  schedule() {
    // Many events arrive at once when a stream replays its history: draw once per frame.
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const pts = [...this.points.entries()].sort((a, b) => a[0] - b[0]);
    this.figure.dataset.points = String(pts.length);
    this.layer.replaceChildren();
    const x0 = PAD.left;
    const x1 = W - PAD.right;
    const y0 = H - PAD.bottom;
    const y1 = PAD.top;
    this.layer.append(svg("line", { x1: x0, y1: y0, x2: x1, y2: y0, class: "axis" }));
    this.layer.append(svg("line", { x1: x0, y1: y0, x2: x0, y2: y1, class: "axis" }));
    if (!pts.length) {
      this.title.textContent = "Training loss: no points yet";
      this.caption.textContent = "No loss reported yet.";
      this.layer.append(svg("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2, class: "empty" }, "waiting for the first steps…"));
      return;
    }
    const losses = pts.map((p) => p[1]);
    let lo = Math.min(...losses);
    let hi = Math.max(...losses);
    if (hi - lo < 1e-12) {
      lo -= 0.5;
      hi += 0.5;
    }
    const lastStep = pts[pts.length - 1][0];
    const stepHi = Math.max(this.maxSteps || 0, lastStep, 1);
    const sx = (s) => x0 + ((x1 - x0) * s) / stepHi;
    const sy = (v) => y0 - ((y0 - y1) * (v - lo)) / (hi - lo);
    for (const v of ticks(lo, hi, 4)) {
      const y = sy(v);
      this.layer.append(svg("line", { x1: x0, y1: y, x2: x1, y2: y, class: "grid" }));
      this.layer.append(svg("text", { x: x0 - 6, y: y + 4, class: "ylabel" }, number(v)));
    }
    for (const s of ticks(0, stepHi, 4)) {
      this.layer.append(svg("text", { x: sx(s), y: y0 + 18, class: "xlabel" }, String(Math.round(s))));
    }
    this.layer.append(svg("text", { x: (x0 + x1) / 2, y: H - 2, class: "xtitle" }, "step"));
    const d = pts.map(([s, v], i) => `${i ? "L" : "M"}${sx(s).toFixed(1)},${sy(v).toFixed(1)}`).join("");
    this.layer.append(svg("path", { d, class: "line" }));
    const [ls, lv] = pts[pts.length - 1];
    this.layer.append(svg("circle", { cx: sx(ls), cy: sy(lv), r: 3.5, class: "dot" }));
    const text = `Training loss: ${pts.length} points, ${number(lv)} at step ${ls}`;
    this.title.textContent = text;
    this.caption.textContent = `${pts.length} points · last loss ${number(lv)} at step ${ls} · min ${number(Math.min(...losses))}`;
  }
}
