// The queues and workers (admins): each queue's job slots, the jobs holding them, the jobs
// waiting, the slots borrowed beyond tenants' shares, and the same per tenant (GET /queues);
// then each worker, live or lost, with its current job and memory (GET /workers).
import { api } from "./api.js";
import { h } from "./dom.js";

const REFRESH_MS = 3000;
const COLUMNS = [
  ["share", "Share"],
  ["running", "Running"],
  ["waiting", "Waiting"],
  ["borrowed", "Borrowed"],
];

export function queuesView({ main }) {
  document.title = "Queues · k2e";
  const list = h("div", { id: "queues", class: "cards" });
  const fleet = h("div", { id: "workers" });
  const info = h("p", { class: "muted", role: "status", id: "queues-info" });
  main.append(
    h("h1", {}, "Queues"),
    h(
      "p",
      { class: "muted" },
      "Slots: the job slots of the live workers that take the queue. Running: slots taken. Waiting: jobs not yet handed over (suspended ones not). Borrowed: slots held beyond a tenant's share.",
    ),
    info,
    list,
    h("h2", {}, "Workers"),
    h(
      "p",
      { class: "muted" },
      "Live: seen within three heartbeats. Lost: silent longer (killed, or cut off from the job store); its slots no longer count.",
    ),
    fleet,
  );
  let timer = null;
  let stopped = false;

  function queueCard(q) {
    const num = (key, label) => h("span", {}, `${label} `, h("strong", { "data-field": key }, q[key]));
    const tenants = q.tenants.length
      ? h(
          "table",
          { class: "list" },
          h("caption", { class: "sr-only" }, `Tenants on the ${q.name} queue`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Tenant"), COLUMNS.map(([, t]) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            q.tenants.map((t) =>
              h(
                "tr",
                { "data-tenant": t.tenant },
                h("td", { "data-label": "Tenant" }, t.tenant),
                COLUMNS.map(([key, label]) => h("td", { "data-label": label, "data-field": key }, t[key])),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No tenant has jobs here.");
    return h(
      "section",
      { class: "card queue", "data-queue": q.name, "aria-label": `Queue ${q.name}` },
      h("h2", {}, "Queue ", h("code", {}, q.name)),
      h("p", { class: "nums" }, num("slots", "Slots"), num("running", "Running"), num("waiting", "Waiting"), num("borrowed", "Borrowed")),
      q.slots ? null : h("p", { class: "muted" }, "No live worker takes this queue: handed-over jobs wait in the broker for one."),
      tenants,
    );
  }

  function workersTable(workers) {
    if (!workers.length) return h("p", { class: "muted" }, "No worker has registered.");
    const cols = ["Worker", "State", "Queues", "Accelerator", "Version", "Current job", "Memory", "Last heartbeat"];
    const mib = (n) => (n == null ? "-" : `${Math.round(n / 1048576)} MiB`);
    return h(
      "table",
      { class: "list" },
      h("caption", { class: "sr-only" }, "Workers"),
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
      h(
        "tbody",
        {},
        workers.map((w) =>
          h(
            "tr",
            { "data-worker": w.name, "data-state": w.state },
            h("td", { "data-label": "Worker" }, h("code", {}, w.name)),
            h("td", { "data-label": "State", "data-field": "state", class: w.state === "live" ? "ok" : "error" }, w.state),
            h("td", { "data-label": "Queues" }, w.queues.join(" ")),
            h("td", { "data-label": "Accelerator" }, w.accelerator),
            h("td", { "data-label": "Version" }, w.version),
            h("td", { "data-label": "Current job", "data-field": "current_job" }, w.current_job ? h("a", { href: `/ui/jobs/${w.current_job}` }, w.current_job) : "-"),
            h("td", { "data-label": "Memory" }, mib(w.rss_bytes)),
            h("td", { "data-label": "Last heartbeat" }, new Date(w.last_heartbeat).toLocaleTimeString()),
          ),
        ),
      ),
    );
  }

  async function load() {
    let queues, workers;
    try {
      [queues, workers] = await Promise.all([api("/queues"), api("/workers")]);
    } catch (err) {
      if (stopped) return;
      info.textContent = err.message;
      info.classList.add("error");
      if (err.status === 401 || err.status === 403) return;
      timer = setTimeout(load, REFRESH_MS);
      return;
    }
    if (stopped) return;
    info.classList.remove("error");
    info.textContent = queues.length ? "" : "No queue has workers or jobs yet.";
    list.replaceChildren(...queues.map(queueCard));
    fleet.replaceChildren(workersTable(workers));
    timer = setTimeout(load, REFRESH_MS);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
