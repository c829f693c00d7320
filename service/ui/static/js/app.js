// The dashboard: signs in, routes /ui/... paths to their views, and signs out.
import { api, ApiError, setCsrf } from "./api.js";
import { h } from "./dom.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { queuesView } from "./queues.js";
import { submitView } from "./submit.js";
import { uploadsView } from "./uploads.js";
import { webhooksView } from "./webhooks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let session = null;
let cleanup = null;

const ROUTES = [
  [/^\/ui\/?$/, () => jobsView],
  [/^\/ui\/jobs\/?$/, () => jobsView],
  [/^\/ui\/jobs\/([^/]+)$/, () => jobView],
  [/^\/ui\/models\/?$/, () => (ctx) => uploadsView(ctx, "models")],
  [/^\/ui\/datasets\/?$/, () => (ctx) => uploadsView(ctx, "datasets")],
  [/^\/ui\/submit\/?$/, () => submitView],
  [/^\/ui\/queues\/?$/, () => queuesView],
  [/^\/ui\/webhooks\/?$/, () => webhooksView],
];

export function go(path) {
  history.pushState(null, "", path);
  route();
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const path = location.pathname;
  if (!session) return signIn();
  for (const link of nav.querySelectorAll("a")) {
    const here = path.startsWith(link.getAttribute("href"));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, view] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      main.replaceChildren();
      const params = new URLSearchParams(location.search);
      cleanup = view()({ main, params, id: match[1] && decodeURIComponent(match[1]), go, session }) || null;
      return;
    }
  }
  main.replaceChildren(h("h1", {}, "Not found"), h("p", { id: "not-found" }, "No such page."));
}

function showSession() {
  nav.hidden = !session;
  who.replaceChildren();
  // The queues view reads GET /queues, which answers admins only.
  nav.querySelector("#nav-queues").hidden = !session || session.role !== "admin";
  if (!session) return;
  who.append(
    h("span", { class: "muted" }, `${session.tenant} · ${session.role}`),
    h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
  );
}

async function signOut() {
  try {
    await api("/ui/session", { method: "DELETE" });
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
  }
  session = null;
  setCsrf(null);
  showSession();
  go("/ui/signin");
}

function signIn() {
  showSession();
  document.title = "Sign in · k2e";
  const error = h("p", { id: "signin-error", class: "error", role: "alert" });
  const input = h("input", {
    id: "api-key",
    name: "key",
    type: "password",
    autocomplete: "current-password",
    required: true,
    "aria-describedby": "signin-help signin-error",
  });
  const form = h(
    "form",
    { class: "card narrow", id: "signin" },
    h("h1", {}, "Sign in"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { id: "signin-help", class: "muted" }, "Your key is exchanged for a session cookie; it is not stored in the browser."),
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      session = await api("/ui/session", { method: "POST", json: { key: input.value } });
    } catch (err) {
      error.textContent = err.message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    setCsrf(session.csrf_token);
    showSession();
    const target = location.pathname.startsWith("/ui/signin") ? "/ui/jobs" : location.pathname + location.search;
    go(target);
  });
  main.replaceChildren(form);
  input.focus();
}

async function boot() {
  // A page served to a signed-in browser carries its session: no round trip for it.
  const meta = document.querySelector("meta[name='k2e-session']");
  try {
    session = meta ? JSON.parse(meta.content) : await api("/ui/session");
    setCsrf(session.csrf_token);
  } catch (err) {
    session = null;
  }
  showSession();
  route();
}

// Links inside the app change the view without reloading the page.
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a[href^='/ui/']");
  if (!link || link.hasAttribute("download") || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  go(link.getAttribute("href"));
});
window.addEventListener("popstate", route);
window.addEventListener("k2e:signed-out", () => {
  if (!session) return;
  session = null;
  setCsrf(null);
  route();
});
boot();
