// The jobs list: newest first, a status filter, live status and progress, cursor paging.
import { api } from "./api.js";
import { ACTIVE, duration, h, jobDuration, priorityTag, progressBar, statusBadge, waitingText, when } from "./dom.js";

const STATUSES = ["queued", "running", "suspended", "cancelling", "succeeded", "failed", "cancelled"];
const PAGE = 25;

export function jobsView({ main, params, go }) {
  document.title = "Jobs · k2e";
  const status = params.get("status") || "";
  const cursor = params.get("cursor") || "";
  // Cursors of the pages before this one, so that "Newer" can go back.
  const back = (params.get("back") || "").split(",").filter(Boolean);
  const select = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "" }, "all"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  select.value = status;
  select.addEventListener("change", () => go(select.value ? `/ui/jobs?status=${select.value}` : "/ui/jobs"));
  const body = h("tbody");
  const info = h("p", { class: "muted", role: "status" });
  const newer = h("button", { type: "button", disabled: !cursor }, "← Newer");
  const older = h("button", { type: "button", disabled: true }, "Older →");
  main.append(
    h("div", { class: "head" }, h("h1", {}, "Jobs"), h("a", { class: "button", href: "/ui/submit" }, "Submit a job")),
    h("div", { class: "filters" }, h("label", { for: "status-filter" }, "Status"), select),
    h(
      "table",
      { class: "list", id: "jobs" },
      h("caption", { class: "sr-only" }, "Jobs, newest first"),
      h("thead", {}, h("tr", {}, ["Job", "Status", "Priority", "Progress", "Created", "Duration", "Model"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
    info,
    h("div", { class: "pager" }, newer, older),
  );

  let next = null;
  let timer = null;
  let stopped = false;
  const query = (c, b) => {
    const q = new URLSearchParams();
    if (status) q.set("status", status);
    if (c) q.set("cursor", c);
    if (b.length) q.set("back", b.join(","));
    const s = q.toString();
    return `/ui/jobs${s ? `?${s}` : ""}`;
  };
  // The first page has no cursor: "-" stands for it in the back stack.
  newer.addEventListener("click", () => {
    const prev = back[back.length - 1];
    go(query(prev === "-" ? "" : prev, back.slice(0, -1)));
  });
  older.addEventListener("click", () => next && go(query(next, [...back, cursor || "-"])));

  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (status) q.set("status", status);
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await api(`/jobs?${q}`);
    } catch (err) {
      info.textContent = err.message;
      return;
    }
    if (stopped) return;
    next = page.next_cursor;
    older.disabled = !next;
    body.replaceChildren(...page.items.map(row));
    info.textContent = page.items.length ? `${page.items.length} jobs on this page` : "No jobs here yet.";
    // Refresh while something on the page can still change.
    const live = page.items.some((j) => ACTIVE.has(j.status));
    clearTimeout(timer);
    timer = setTimeout(load, live ? 2000 : 10000);
  }

  function row(job) {
    const model = job.spec.keras_model_path || (job.spec.keras_model ? "inline model" : "–");
    return h(
      "tr",
      { "data-job": job.id },
      h("td", { "data-label": "Job" }, h("a", { href: `/ui/jobs/${job.id}` }, h("code", {}, job.id.slice(0, 8)))),
      h("td", { "data-label": "Status" }, statusBadge(job.status), waiting(job)),
      h("td", { "data-label": "Priority" }, priorityTag(job), preempted(job)),
      h("td", { "data-label": "Progress" }, progressBar(job.progress, job.status)),
      h("td", { "data-label": "Created" }, when(job.created_at)),
      h("td", { "data-label": "Duration" }, duration(jobDuration(job))),
      h("td", { "data-label": "Model" }, h("code", { class: "trim" }, model)),
    );
  }

  // While queued: its place and why it waits (Job.scheduling).
  function waiting(job) {
    const place = job.scheduling;
    if (!place) return null;
    return h("div", { class: "wait", "data-position": place.position ?? "", "data-waiting-for": place.waiting_for }, waitingText(place));
  }

  function preempted(job) {
    if (!job.preemptions) return null;
    return h("div", { class: "wait", "data-preemptions": job.preemptions }, `preempted ${job.preemptions}×`);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
