// The queues (admins): each queue's job slots, the jobs holding them, the jobs waiting,
// the slots borrowed beyond tenants' shares, and the same per tenant (GET /queues).
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

  async function load() {
    let queues;
    try {
      queues = await api("/queues");
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
    timer = setTimeout(load, REFRESH_MS);
  }

  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
