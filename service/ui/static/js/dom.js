// A tiny element builder (text is always set as text, never parsed as HTML) and formatting.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value" || name === "checked") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function jobDuration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

export function number(value) {
  if (typeof value !== "number") return String(value);
  return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3)
    ? value.toExponential(3)
    : String(Math.round(value * 1e4) / 1e4);
}

// Not ended: a suspended job goes on once resumed.
export const ACTIVE = new Set(["queued", "running", "cancelling", "suspended"]);

export function statusBadge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status);
}

export function progressBar(progress, status) {
  const max = progress && progress.max_steps;
  const step = (progress && progress.global_step) || 0;
  const done = status === "succeeded";
  const label = max ? `${step} / ${max} steps` : `${step} steps`;
  return h(
    "span",
    { class: "bar" },
    h("progress", { max: max || 1, value: done ? max || 1 : max ? step : 0, "aria-label": label }),
    h("span", { class: "bar-text" }, label),
  );
}

// A job's priority class: the scheduler's name for it while queued, else the spec's.
export function priorityOf(job) {
  return (job.scheduling && job.scheduling.priority) || (job.spec && job.spec.priority) || "normal";
}

// Why a queued job has not started (Job.scheduling.waiting_for), in a user's words.
export const WAITING_FOR = {
  slot: "every slot of its queue is taken",
  tenant_limit: "its tenant has its limit of jobs handed over",
  share: "its tenant holds its whole share and may not borrow",
  worker: "no live worker takes its queue",
  pickup: "handed over: a worker takes it next",
};

export function waitingText(place) {
  const why = WAITING_FOR[place.waiting_for] || place.waiting_for;
  return place.position === null || place.position === undefined ? why : `#${place.position} in queue · ${why}`;
}

export function priorityTag(job) {
  const priority = priorityOf(job);
  return h("span", { class: `tag p-${priority}`, "data-priority": priority }, priority);
}
