// Models and datasets: what their inspection found, upload and delete.
import { api, upload } from "./api.js";
import { bytes, h } from "./dom.js";

const KINDS = {
  models: { title: "Models", one: "model", accept: ".h5,.hdf5,.keras" },
  datasets: { title: "Datasets", one: "dataset", accept: ".npz,.csv,.tfrecord,.gz" },
};

function shape(s) {
  return `(${s.map((d) => (d === null ? "None" : d)).join(", ")})`;
}

function tensors(list) {
  return h("ul", { class: "plain" }, list.map((t) => h("li", {}, h("code", {}, t.name), ` ${shape(t.shape)} ${t.dtype}`)));
}

function modelCard(m, remove) {
  return h(
    "article",
    { class: "card", "data-id": m.id },
    h("h2", {}, h("code", {}, m.id), ` · ${m.format} · ${m.model_class}`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Inputs"), h("dd", {}, tensors(m.inputs)),
      h("dt", {}, "Outputs"), h("dd", {}, tensors(m.outputs)),
      h("dt", {}, "Compiled"), h("dd", {}, m.compiled ? "yes" : "no"),
      h("dt", {}, "Metric names"), h("dd", {}, m.metric_names.length ? m.metric_names.map((n) => h("code", { class: "tag" }, n)) : "–"),
      h("dt", {}, "Size"), h("dd", {}, bytes(m.size)),
    ),
    h("div", { class: "actions" }, h("a", { class: "button", href: `/ui/submit?model=${m.id}` }, "Train it"), remove),
  );
}

function datasetCard(d, remove) {
  return h(
    "article",
    { class: "card", "data-id": d.id },
    h("h2", {}, h("code", {}, d.id), ` · ${d.format}`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Examples"), h("dd", {}, d.num_examples),
      h("dt", {}, "Arrays"),
      h("dd", {}, h("ul", { class: "plain" }, Object.entries(d.arrays).map(([name, s]) => h("li", {}, h("code", {}, name), ` ${shape(s)} ${d.dtypes[name] || ""}`)))),
      h("dt", {}, "Size"), h("dd", {}, bytes(d.size)),
    ),
    h("div", { class: "actions" }, remove),
  );
}

export function uploadsView({ main, go }, kind) {
  const k = KINDS[kind];
  document.title = `${k.title} · k2e`;
  const list = h("div", { class: "cards", id: `${kind}-list` });
  const status = h("p", { role: "status", class: "muted" });
  const file = h("input", { type: "file", id: "upload-file", name: "file", accept: k.accept, required: true });
  const error = h("p", { class: "error", role: "alert", id: "upload-error" });
  const form = h(
    "form",
    { class: "card", id: "upload" },
    h("h2", {}, `Upload a ${k.one}`),
    h("label", { for: "upload-file" }, `${k.one[0].toUpperCase()}${k.one.slice(1)} file (${k.accept})`),
    file,
    error,
    h("button", { type: "submit" }, "Upload"),
  );
  const more = h("button", { type: "button", hidden: true }, "More");
  main.append(h("h1", {}, k.title), form, status, list, more);
  let cursor = null;
  let stopped = false;

  function removeButton(item) {
    return h(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: async () => {
          if (!confirm(`Delete ${k.one} ${item.id}?`)) return;
          try {
            await api(`/${kind}/${item.id}`, { method: "DELETE" });
            list.querySelector(`[data-id="${item.id}"]`)?.remove();
          } catch (err) {
            status.textContent = err.message;
          }
        },
      },
      "Delete",
    );
  }

  const card = (item) => (kind === "models" ? modelCard : datasetCard)(item, removeButton(item));

  async function load(append) {
    const q = new URLSearchParams({ limit: "50" });
    if (append && cursor) q.set("cursor", cursor);
    try {
      const page = await api(`/${kind}?${q}`);
      if (stopped) return;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      if (!append) list.replaceChildren();
      list.append(...page.items.map(card));
      status.textContent = list.children.length ? "" : `No ${kind} yet.`;
    } catch (err) {
      status.textContent = err.message;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!file.files.length) return;
    status.textContent = "Uploading and inspecting…";
    try {
      const info = await upload(kind, file.files[0]);
      list.prepend(card(info));
      form.reset();
      status.textContent = `Uploaded ${info.id}.`;
    } catch (err) {
      status.textContent = "";
      error.textContent = err.message;
      file.setAttribute("aria-invalid", "true");
    }
  });
  more.addEventListener("click", () => load(true));
  load(false);
  return () => {
    stopped = true;
  };
}
