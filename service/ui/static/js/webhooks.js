// Webhooks: the tenant's endpoints for job events, added (the secret shown once), tested and
// deleted, and each one's deliveries with their latest answers (GET /webhooks/{id}/deliveries).
import { api } from "./api.js";
import { h, when } from "./dom.js";

const EVENTS = ["job.succeeded", "job.failed", "job.cancelled", "job.suspended", "job.preempted"];
const REFRESH_MS = 3000;

function deliveriesTable(items) {
  if (!items.length) return h("p", { class: "muted" }, "No deliveries yet.");
  return h(
    "table",
    { class: "list deliveries" },
    h("caption", { class: "sr-only" }, "Deliveries, newest first"),
    h(
      "thead",
      {},
      h("tr", {}, ["Event", "State", "Attempts", "Answer", "Next attempt", "Created"].map((t) => h("th", { scope: "col" }, t))),
    ),
    h(
      "tbody",
      {},
      items.map((d) =>
        h(
          "tr",
          { "data-delivery": d.id, "data-state": d.state },
          h("td", { "data-label": "Event" }, h("code", {}, d.type), " ", h("span", { class: "muted" }, d.event_id)),
          h("td", { "data-label": "State", "data-field": "state" }, d.state),
          h("td", { "data-label": "Attempts", "data-field": "attempts" }, d.attempts),
          h(
            "td",
            { "data-label": "Answer" },
            d.response_status !== null ? h("strong", {}, d.response_status) : null,
            d.response_excerpt ? h("code", { class: "excerpt" }, ` ${d.response_excerpt}`) : null,
            d.error ? h("span", { class: "error" }, ` ${d.error}`) : null,
          ),
          h("td", { "data-label": "Next attempt" }, when(d.next_attempt_at)),
          h("td", { "data-label": "Created" }, when(d.created_at)),
        ),
      ),
    ),
  );
}

export function webhooksView({ main }) {
  document.title = "Webhooks · k2e";
  const list = h("div", { class: "cards", id: "webhooks-list" });
  const status = h("p", { role: "status", class: "muted", id: "webhooks-info" });
  const url = h("input", { type: "url", id: "webhook-url", name: "url", required: true, placeholder: "https://example.com/k2e" });
  const boxes = EVENTS.map((e) => h("input", { type: "checkbox", name: "events", value: e, id: `ev-${e}`, checked: true }));
  const error = h("p", { class: "error", role: "alert", id: "webhook-error" });
  const secret = h("p", { id: "webhook-secret", role: "status" });
  const form = h(
    "form",
    { class: "card", id: "webhook-add" },
    h("h2", {}, "Add an endpoint"),
    h("label", { for: "webhook-url" }, "URL (http or https, at a public address)"),
    url,
    h("fieldset", {}, h("legend", {}, "Events"), EVENTS.map((e, i) => h("label", { for: `ev-${e}` }, boxes[i], ` ${e}`))),
    error,
    h("button", { type: "submit" }, "Add"),
    secret,
  );
  main.append(
    h("h1", {}, "Webhooks"),
    h("p", { class: "muted" }, "Each event is POSTed as JSON, signed in the K2E-Signature header with the endpoint's secret, and retried with backoff for a day until a 2xx answer."),
    form,
    status,
    list,
  );
  const open = new Set();
  let timer = null;
  let stopped = false;

  async function action(path, method) {
    try {
      await api(path, { method });
      status.classList.remove("error");
    } catch (err) {
      status.textContent = err.message;
      status.classList.add("error");
    }
    load();
  }

  function card(hook, deliveries) {
    const shown = open.has(hook.id);
    return h(
      "article",
      { class: "card", "data-id": hook.id },
      h("h2", {}, h("code", {}, hook.id), " → ", h("span", { class: "url" }, hook.url)),
      h("p", {}, hook.events.map((e) => h("code", { class: "tag" }, e))),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "test", onclick: () => action(`/webhooks/${hook.id}/test`, "POST") }, "Send a test event"),
        h(
          "button",
          {
            type: "button",
            class: "toggle",
            "aria-expanded": shown ? "true" : "false",
            onclick: () => {
              if (shown) open.delete(hook.id);
              else open.add(hook.id);
              load();
            },
          },
          shown ? "Hide deliveries" : "Deliveries",
        ),
        h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: () => confirm(`Delete webhook ${hook.id}?`) && action(`/webhooks/${hook.id}`, "DELETE"),
          },
          "Delete",
        ),
      ),
      shown ? deliveriesTable(deliveries || []) : null,
    );
  }

  async function load() {
    clearTimeout(timer);
    try {
      const hooks = await api("/webhooks");
      const deliveries = await Promise.all(
        hooks.map((hook) => (open.has(hook.id) ? api(`/webhooks/${hook.id}/deliveries?limit=50`) : null)),
      );
      if (stopped) return;
      list.replaceChildren(...hooks.map((hook, i) => card(hook, deliveries[i])));
      if (!status.classList.contains("error")) status.textContent = hooks.length ? "" : "No webhooks yet.";
    } catch (err) {
      if (stopped) return;
      status.textContent = err.message;
      status.classList.add("error");
    }
    if (!stopped && open.size) timer = setTimeout(load, REFRESH_MS);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    secret.textContent = "";
    const events = boxes.filter((b) => b.checked).map((b) => b.value);
    try {
      const hook = await api("/webhooks", { method: "POST", json: { url: url.value, events } });
      form.reset();
      secret.replaceChildren("Signing secret of ", h("code", {}, hook.id), " (shown only now): ", h("code", { id: "webhook-secret-value" }, hook.secret));
      status.classList.remove("error");
      load();
    } catch (err) {
      error.textContent = err.message;
      url.setAttribute("aria-invalid", "true");
    }
  });
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
