// A job's page: live loss curve, progress, evaluation metrics, log tail, downloads, actions.
// Live data comes from the job's event stream (GET /jobs/{id}/events); where the server
// has none (the stream answers 404), the page polls the job and its log instead.
import { api, ApiError } from "./api.js";
import { LossChart } from "./chart.js";
import { showCluster } from "./cluster.js";
import { ACTIVE, duration, h, jobDuration, number, priorityTag, progressBar, statusBadge, waitingText, when } from "./dom.js";

const LOG_LINES = 500;
const POLL_MS = 1000;
const PLACE_MS = 2000;

export function jobView({ main, id, go }) {
  document.title = `Job ${id.slice(0, 8)} · k2e`;
  const el = {
    status: h("span", { id: "job-status" }),
    actions: h("div", { class: "actions" }),
    progress: h("div", { id: "progress" }),
    rate: h("dl", { class: "facts", id: "rate" }),
    figure: h("figure", { id: "loss-chart", class: "chart-box" }),
    evalBody: h("tbody"),
    error: h("div", { id: "job-error" }),
    facts: h("dl", { class: "facts", id: "facts" }),
    cluster: h("section", { class: "card wide", id: "cluster", "aria-labelledby": "h-cluster", hidden: true }),
    downloads: h("ul", { id: "downloads", class: "plain" }),
    spec: h("pre", { id: "spec", class: "code" }),
    log: h("pre", { id: "log", class: "code log", tabindex: "0", "aria-label": "Log tail" }),
    follow: h("input", { type: "checkbox", id: "follow", checked: true }),
    live: h("p", { class: "muted", id: "live-mode", role: "status" }),
    message: h("p", { class: "error", role: "alert", id: "action-error" }),
  };
  main.append(
    h("div", { class: "head" }, h("h1", {}, "Job ", h("code", {}, id.slice(0, 8)), " ", el.status), el.actions),
    el.message,
    el.error,
    h(
      "div",
      { class: "grid" },
      h("section", { class: "card wide", "aria-labelledby": "h-loss" }, h("h2", { id: "h-loss" }, "Loss"), el.figure),
      h("section", { class: "card", "aria-labelledby": "h-progress" }, h("h2", { id: "h-progress" }, "Progress"), el.progress, el.rate, el.live),
      h(
        "section",
        { class: "card", "aria-labelledby": "h-eval" },
        h("h2", { id: "h-eval" }, "Evaluation"),
        h("table", { class: "kv", id: "eval-metrics" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), h("th", { scope: "col" }, "Value"))), el.evalBody),
      ),
      el.cluster,
      h("section", { class: "card", "aria-labelledby": "h-facts" }, h("h2", { id: "h-facts" }, "Details"), el.facts),
      h("section", { class: "card", "aria-labelledby": "h-dl" }, h("h2", { id: "h-dl" }, "Downloads"), el.downloads),
      h(
        "section",
        { class: "card wide", "aria-labelledby": "h-log" },
        h("div", { class: "head" }, h("h2", { id: "h-log" }, "Log"), h("label", { class: "inline" }, el.follow, " follow")),
        el.log,
      ),
      h("section", { class: "card wide", "aria-labelledby": "h-spec" }, h("h2", { id: "h-spec" }, "Spec"), el.spec),
    ),
  );
  const chart = new LossChart(el.figure);
  const state = { job: null, progress: null, status: null, ended: false, stopped: false, since: 0 };
  let source = null;
  let timer = null;
  let placeTimer = null;

  function appendLog(line) {
    const atBottom = el.log.scrollTop + el.log.clientHeight >= el.log.scrollHeight - 8;
    el.log.append(line + "\n");
    while (el.log.childNodes.length > LOG_LINES) el.log.firstChild.remove();
    if (el.follow.checked && atBottom) el.log.scrollTop = el.log.scrollHeight;
  }

  function logLine(at, kind, message) {
    const time = at ? new Date(at).toLocaleTimeString() : "";
    appendLog(kind === "log" ? `${time} ${message}` : `${time} [${kind}] ${message}`);
  }

  function showStatus(status) {
    state.status = status;
    el.status.replaceChildren(statusBadge(status));
    el.actions.replaceChildren();
    if (status === "queued" || status === "running") {
      el.actions.append(h("button", { type: "button", id: "suspend", onclick: () => act("suspend") }, "Suspend"));
    } else if (status === "suspended") {
      el.actions.append(h("button", { type: "button", id: "resume", onclick: () => act("resume") }, "Resume"));
    }
    if (ACTIVE.has(status) && status !== "cancelling") {
      el.actions.append(h("button", { type: "button", id: "cancel", class: "danger", onclick: () => act("cancel") }, "Cancel"));
    } else if (!ACTIVE.has(status)) {
      el.actions.append(h("button", { type: "button", id: "rerun", onclick: rerun }, "Rerun"));
      el.actions.append(h("button", { type: "button", id: "delete", class: "danger", onclick: remove }, "Delete"));
    }
  }

  function showProgress(p) {
    state.progress = p;
    el.progress.replaceChildren(progressBar(p, state.status));
    chart.setMaxSteps(p.max_steps);
    const rate = p.steps_per_sec;
    el.rate.replaceChildren(
      h("dt", {}, "Steps/s"),
      h("dd", { id: "steps-per-sec" }, rate ? rate.toFixed(1) : "–"),
      h("dt", {}, "ETA"),
      h("dd", { id: "eta" }, ACTIVE.has(state.status) ? duration(p.eta_s) : "–"),
    );
  }

  function showEval(metrics) {
    el.evalBody.replaceChildren(
      ...Object.entries(metrics || {}).map(([name, value]) =>
        h("tr", { "data-metric": name }, h("th", { scope: "row" }, name), h("td", {}, number(value))),
      ),
    );
  }

  function showJob(job) {
    state.job = job;
    showStatus(job.status);
    showProgress(job.progress);
    for (const p of job.metrics.train) chart.add(p.step, p.loss);
    showEval(job.metrics.eval);
    el.error.replaceChildren();
    if (job.error) {
      el.error.append(
        h(
          "div",
          { class: "card problem", role: "alert" },
          h("h2", {}, `Failed: ${job.error.reason}`),
          h("p", {}, h("strong", {}, job.error.type), ": ", h("span", { id: "error-message" }, job.error.message)),
        ),
      );
    }
    showFacts(job);
    el.spec.textContent = JSON.stringify(job.spec, null, 2);
    if (!ACTIVE.has(job.status)) ended();
  }

  function showFacts(job) {
    const fact = (k, v, id) => [h("dt", {}, k), h("dd", { id }, v)];
    const place = job.scheduling;
    el.facts.replaceChildren(
      ...fact("Priority", priorityTag(job), "priority"),
      ...(place ? fact("Waiting", waitingText(place), "waiting") : []),
      ...fact("Preemptions", job.preemptions || 0, "preemptions"),
      ...fact("Created", when(job.created_at)),
      ...fact("Started", when(job.started_at)),
      ...fact("Finished", when(job.finished_at)),
      ...fact("Duration", duration(jobDuration(job))),
      ...fact("Attempts", job.attempts),
      ...fact("model_dir", h("code", {}, job.model_dir)),
      ...(job.tenant ? fact("Tenant", job.tenant) : []),
      ...provenanceFacts(job.provenance, fact),
    );
    if (place) {
      el.facts.dataset.position = place.position ?? "";
      el.facts.dataset.waitingFor = place.waiting_for;
    } else {
      delete el.facts.dataset.position;
      delete el.facts.dataset.waitingFor;
    }
    showCluster(el.cluster, job);
  }

  // The event stream carries no queue place: while the job waits (or its status changes)
  // the page reads the job again for its place, priority and preemptions.
  async function refreshFacts() {
    clearTimeout(placeTimer);
    try {
      const job = await api(`/jobs/${id}`);
      if (state.stopped) return;
      state.job = job;
      showFacts(job);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
    // A cluster's members change state without events of their own: read them again too.
    const members = state.job && state.job.spec.distribution && ACTIVE.has(state.status);
    if (!state.stopped && source && (state.status === "queued" || members)) placeTimer = setTimeout(refreshFacts, PLACE_MS);
  }

  async function ended() {
    if (state.ended) return;
    state.ended = true;
    stopLive();
    el.live.textContent = "";
    let checkpoints = [];
    try {
      checkpoints = await api(`/jobs/${id}/checkpoints`);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
    const items = [];
    if (state.job && state.job.status === "succeeded" && state.job.spec.export !== false) {
      items.push(h("li", {}, h("a", { id: "savedmodel", href: `/jobs/${id}/savedmodel`, download: "" }, "SavedModel (tar.gz)")));
    }
    for (const c of checkpoints) {
      items.push(h("li", {}, h("a", { href: `/jobs/${id}/checkpoints/${c.step}`, download: "" }, `Checkpoint at step ${c.step}`)));
    }
    el.downloads.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "Nothing to download.")]));
  }

  // --- live updates ---------------------------------------------------------------------
  function stream() {
    el.live.textContent = "Live: event stream";
    source = new EventSource(`/jobs/${encodeURIComponent(id)}/events`);
    const on = (name, fn) => source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    on("status", (d) => {
      showStatus(d.status);
      // Debounced: an ended job's stream replays every status at once.
      clearTimeout(placeTimer);
      placeTimer = setTimeout(refreshFacts, 300);
      logLine(d.at, d.status, d.message || "");
    });
    on("progress", (d) => showProgress(d));
    on("loss", (d) => chart.add(d.step, d.loss));
    on("log", (d) => logLine(d.at, "log", d.message));
    on("eval", (d) => showEval(d.metrics));
    on("end", (job) => {
      source.close();
      state.ended = false;
      showJob(job);
      ended();
    });
    source.onerror = () => {
      // CONNECTING: the browser reconnects by itself and resumes with Last-Event-ID.
      // CLOSED: the server refused the stream (a 404 where it has none): poll instead.
      if (source && source.readyState === EventSource.CLOSED && !state.stopped) {
        source = null;
        poll();
      }
    };
  }

  async function poll() {
    el.live.textContent = "Live: polling every second";
    try {
      const job = await api(`/jobs/${id}`);
      for (let page = 0; page < 20; page += 1) {
        const log = await api(`/jobs/${id}/logs?since=${state.since}&limit=1000`);
        for (const e of log.items) logLine(e.at, e.kind, e.message);
        state.since = log.next_since;
        if (log.items.length < 1000) break;
      }
      if (state.stopped) return;
      showJob(job);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return notFound();
      el.live.textContent = `Live: retrying (${err.message})`;
    }
    if (!state.ended && !state.stopped) timer = setTimeout(poll, POLL_MS);
  }

  function stopLive() {
    clearTimeout(timer);
    clearTimeout(placeTimer);
    if (source) source.close();
    source = null;
  }

  function notFound() {
    stopLive();
    main.replaceChildren(h("h1", {}, "Not found"), h("p", { id: "not-found" }, "There is no such job, or it is not yours to see."));
  }

  // --- actions --------------------------------------------------------------------------
  // cancel, suspend or resume: each answers the job.
  async function act(action) {
    el.message.textContent = "";
    try {
      showJob(await api(`/jobs/${id}/${action}`, { method: "POST" }));
    } catch (err) {
      el.message.textContent = err.message;
    }
  }

  // A new job with this one's inputs; refused (shown here) when one is gone or changed.
  async function rerun() {
    el.message.textContent = "";
    try {
      const job = await api(`/jobs/${id}/rerun`, { method: "POST" });
      go(`/ui/jobs/${job.id}`);
    } catch (err) {
      el.message.textContent = err.message;
    }
  }

  async function remove() {
    if (!confirm("Delete this job and its files (checkpoints, exports)?")) return;
    el.message.textContent = "";
    try {
      await api(`/jobs/${id}`, { method: "DELETE" });
      go("/ui/jobs");
    } catch (err) {
      el.message.textContent = err.message;
    }
  }

  (async () => {
    let job;
    // The job page's first render uses the job the server wrote into it, once.
    const served = document.getElementById("k2e-job");
    if (served) served.remove();
    try {
      job = served && JSON.parse(served.textContent);
      if (!job || job.id !== id) job = await api(`/jobs/${id}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return notFound();
      el.message.textContent = err.message;
      return;
    }
    showJob(job);
    performance.mark("k2e:job-rendered");
    document.body.dataset.rendered = "job";
    if (state.stopped) return;
    // An ended job's stream replays its whole history (the log, every loss point) and ends.
    if (window.EventSource) {
      stream();
      if (job.status === "queued" || (job.spec.distribution && ACTIVE.has(job.status))) placeTimer = setTimeout(refreshFacts, PLACE_MS);
    } else poll();
  })();

  return () => {
    state.stopped = true;
    stopLive();
  };
}

// How the job was made: seeds, determinism, input digests, versions, the worker.
function provenanceFacts(p, fact) {
  if (!p) return [];
  const short = (sha) => h("code", { title: sha }, sha.slice(0, 12));
  const seeds = `tf_random_seed ${p.seeds.tf_random_seed ?? "–"}, shuffle_seed ${p.seeds.shuffle_seed ?? "–"}`;
  return [
    ...fact("Deterministic", p.deterministic ? "yes" : "no", "deterministic"),
    ...fact("Seeds", seeds, "seeds"),
    ...fact("Model sha256", short(p.model_sha256), "model-sha256"),
    ...Object.entries(p.datasets).flatMap(([name, sha]) => fact(`Dataset ${name.slice(0, 8)}`, short(sha))),
    ...(Object.keys(p.versions).length ? fact("Versions", Object.entries(p.versions).map(([k, v]) => `${k} ${v}`).join(", "), "versions") : []),
    ...(p.worker ? fact("Worker", `${p.worker.node} pid ${p.worker.process}`, "worker") : []),
  ];
}
