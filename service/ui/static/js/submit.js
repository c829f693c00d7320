// Submit a job: pick or upload a model and datasets, edit the spec (prefilled from the
// model's metric names and outputs), and see each broken rule next to its field.
import { api, ApiError, upload } from "./api.js";
import { h } from "./dom.js";

const EXPORT_KINDS = ["", "predict", "regression", "classification"];

function field(loc, id, label, input, help) {
  return h(
    "div",
    { class: "field", "data-loc": loc },
    h("label", { for: id }, label),
    input,
    help ? h("p", { class: "muted help", id: `${id}-help` }, help) : null,
  );
}

function numberInput(id, value, attrs = {}) {
  return h("input", { id, name: id, type: "number", inputmode: "numeric", value: value ?? "", ...attrs });
}

function pick(id, items, extra = []) {
  return h(
    "select",
    { id, name: id },
    extra.map(([value, text]) => h("option", { value }, text)),
    items.map((item) => h("option", { value: item.id }, `${item.id.slice(0, 10)} · ${item.format}${item.num_examples !== undefined ? ` · ${item.num_examples} examples` : ` · ${item.outputs.map((o) => o.name).join(", ")}`}`)),
  );
}

export function submitView({ main, params, go }) {
  document.title = "Submit · k2e";
  const status = h("p", { role: "status", class: "muted" });
  main.append(h("h1", {}, "Submit a job"), status);
  let stopped = false;
  (async () => {
    let models;
    let datasets;
    try {
      [models, datasets] = await Promise.all([api("/models?limit=200"), api("/datasets?limit=200")]);
    } catch (err) {
      status.textContent = err.message;
      return;
    }
    if (!stopped) build(models.items, datasets.items);
  })();

  function build(models, datasets) {
    const byId = new Map(models.map((m) => [m.id, m]));
    const el = {
      model: pick("model", models, [["", "— upload a file —"]]),
      modelFile: h("input", { type: "file", id: "model-file", accept: ".h5,.hdf5,.keras" }),
      train: pick("train-dataset", datasets, [["", "— upload a file —"]]),
      trainFile: h("input", { type: "file", id: "train-file", accept: ".npz,.csv,.tfrecord,.gz" }),
      evalSel: pick("eval-dataset", datasets, [["=train", "the training dataset"], ["", "no evaluation"], ["=file", "— upload a file —"]]),
      evalFile: h("input", { type: "file", id: "eval-file", accept: ".npz,.csv,.tfrecord,.gz" }),
      metrics: h("div", { id: "metric-names" }),
      exports: h("div", { id: "export-outputs" }),
      maxSteps: numberInput("max-steps", 1000),
      batchSize: numberInput("batch-size", 32),
      shuffle: h("input", { type: "checkbox", id: "shuffle", checked: true }),
      evalSteps: numberInput("eval-steps", ""),
      seed: numberInput("seed", 1),
      ckptSteps: numberInput("checkpoint-steps", 100),
      logSteps: numberInput("log-steps", ""),
      summarySteps: numberInput("summary-steps", ""),
      format: h("input", { id: "checkpoint-format", name: "checkpoint_format", value: "checkpoint", list: "formats", autocomplete: "off" }),
      modelDir: h("input", { id: "model-dir", name: "model_dir", autocomplete: "off" }),
      timeout: numberInput("timeout", ""),
      export: h("input", { type: "checkbox", id: "export", checked: true }),
      priority: h("input", { id: "priority", name: "priority", value: "normal", list: "priorities", autocomplete: "off" }),
      accelerator: h("select", { id: "accelerator" }, h("option", { value: "cpu" }, "cpu"), h("option", { value: "gpu" }, "gpu")),
      extra: h("textarea", { id: "extra", rows: 4, spellcheck: "false", placeholder: '{"config": {"keep_checkpoint_max": 3}}' }),
      deterministic: h("input", { type: "checkbox", id: "deterministic" }),
      preview: h("pre", { id: "preview", class: "code" }),
      plan: h("div", { id: "plan", role: "status" }),
      summary: h("div", { id: "errors", role: "alert" }),
    };
    const form = h(
      "form",
      { id: "submit-form", novalidate: true },
      h("datalist", { id: "formats" }, h("option", { value: "checkpoint" }), h("option", { value: "saver" })),
      h("datalist", { id: "priorities" }, ["low", "normal", "high"].map((p) => h("option", { value: p }))),
      el.summary,
      h(
        "fieldset",
        { class: "card" },
        h("legend", {}, "Model and data"),
        field("keras_model_path", "model", "Model", el.model),
        field("keras_model_path", "model-file", "…or upload a model (.h5, .keras)", el.modelFile),
        field("train.dataset", "train-dataset", "Training dataset", el.train),
        field("train.dataset", "train-file", "…or upload a training dataset", el.trainFile),
        field("eval.dataset", "eval-dataset", "Evaluation dataset", el.evalSel),
        field("eval.dataset", "eval-file", "…or upload an evaluation dataset", el.evalFile),
      ),
      h(
        "fieldset",
        { class: "card", "data-loc": "metric_names_map" },
        h("legend", {}, "metric_names_map"),
        h("p", { class: "muted help" }, "The model's compiled metric names, and the names its evaluation reports them under."),
        el.metrics,
      ),
      h(
        "fieldset",
        { class: "card", "data-loc": "export_outputs" },
        h("legend", {}, "export_outputs"),
        h("p", { class: "muted help" }, "A serving head per output (none: the raw-tensor signature only)."),
        el.exports,
      ),
      h(
        "fieldset",
        { class: "card" },
        h("legend", {}, "Training"),
        field("train.max_steps", "max-steps", "train.max_steps", el.maxSteps),
        field("train.batch_size", "batch-size", "train.batch_size", el.batchSize),
        h("div", { class: "field", "data-loc": "train.shuffle" }, h("label", { class: "inline" }, el.shuffle, " train.shuffle")),
        field("eval.steps", "eval-steps", "eval.steps (empty: one pass)", el.evalSteps),
        field("config.tf_random_seed", "seed", "config.tf_random_seed", el.seed),
        field("config.save_checkpoints_steps", "checkpoint-steps", "config.save_checkpoints_steps", el.ckptSteps),
        field("config.log_step_count_steps", "log-steps", "config.log_step_count_steps (empty: 100)", el.logSteps),
        field("config.save_summary_steps", "summary-steps", "config.save_summary_steps (empty: 100)", el.summarySteps),
        field("checkpoint_format", "checkpoint-format", "checkpoint_format", el.format, '"checkpoint" or "saver"'),
        field("model_dir", "model-dir", "model_dir (empty: a fresh folder for this job)", el.modelDir),
        field("timeout_s", "timeout", "timeout_s", el.timeout),
        h("div", { class: "field", "data-loc": "export" }, h("label", { class: "inline" }, el.export, " export a SavedModel")),
        h("div", { class: "field", "data-loc": "deterministic" }, h("label", { class: "inline" }, el.deterministic, " deterministic (a rerun gives the same bits)")),
        field("accelerator", "accelerator", "accelerator", el.accelerator),
        field(
          "priority",
          "priority",
          "priority",
          el.priority,
          "Its priority class: low, normal, high, or one your server adds; at most your tenant's max_priority. Higher classes start first and may take a lower one's worker at its next checkpoint.",
        ),
        field("", "extra", "More of the spec (JSON, merged over the fields above)", el.extra),
      ),
      h("details", { class: "card" }, h("summary", {}, "The spec as it will be sent"), el.preview),
      el.plan,
      h("div", { class: "actions" }, h("button", { type: "button", id: "check" }, "Check"), h("button", { type: "submit", id: "submit" }, "Submit")),
    );
    main.append(form);

    function showModel() {
      const model = byId.get(el.model.value);
      el.metrics.replaceChildren();
      el.exports.replaceChildren();
      if (!model) {
        el.metrics.append(h("p", { class: "muted" }, "Pick a model to see its metric names."));
        el.exports.append(h("p", { class: "muted" }, "Pick a model to see its outputs."));
        return;
      }
      model.metric_names.forEach((name, i) => {
        el.metrics.append(field(`metric_names_map.${name}`, `mnm-${i}`, name, h("input", { id: `mnm-${i}`, "data-key": name, value: name, autocomplete: "off" })));
      });
      if (!model.metric_names.length) el.metrics.append(h("p", { class: "muted" }, "The model has no compiled metrics."));
      model.outputs.forEach((out, i) => {
        const select = h("select", { id: `eo-${i}`, "data-key": out.name }, EXPORT_KINDS.map((k) => h("option", { value: k }, k || "none")));
        el.exports.append(field(`export_outputs.${out.name}`, `eo-${i}`, out.name, select));
      });
    }

    const num = (input) => (input.value.trim() === "" ? undefined : Number(input.value));

    function merge(base, extra) {
      for (const [k, v] of Object.entries(extra)) {
        base[k] = v && typeof v === "object" && !Array.isArray(v) && base[k] && typeof base[k] === "object" ? merge(base[k], v) : v;
      }
      return base;
    }

    function spec(ids = {}) {
      const s = {
        keras_model_path: ids.model ?? (el.model.value || "<uploaded model>"),
        train: { dataset: ids.train ?? (el.train.value || "<uploaded dataset>"), max_steps: num(el.maxSteps), batch_size: num(el.batchSize), shuffle: el.shuffle.checked },
        checkpoint_format: el.format.value,
        export: el.export.checked,
        accelerator: el.accelerator.value,
        deterministic: el.deterministic.checked || undefined,
        priority: el.priority.value.trim() || undefined,
      };
      const evalId = ids.eval ?? { "=train": s.train.dataset, "": null, "=file": "<uploaded dataset>" }[el.evalSel.value] ?? el.evalSel.value;
      if (evalId) s.eval = { dataset: evalId, steps: num(el.evalSteps) };
      const config = { tf_random_seed: num(el.seed), save_checkpoints_steps: num(el.ckptSteps), log_step_count_steps: num(el.logSteps), save_summary_steps: num(el.summarySteps) };
      if (Object.values(config).some((v) => v !== undefined)) s.config = config;
      const inputs = [...el.metrics.querySelectorAll("input[data-key]")];
      if (inputs.length) s.metric_names_map = Object.fromEntries(inputs.filter((i) => i.value.trim()).map((i) => [i.dataset.key, i.value.trim()]));
      const heads = [...el.exports.querySelectorAll("select[data-key]")].filter((x) => x.value);
      if (heads.length) s.export_outputs = Object.fromEntries(heads.map((x) => [x.dataset.key, x.value]));
      if (el.modelDir.value.trim()) s.model_dir = el.modelDir.value.trim();
      if (num(el.timeout) !== undefined) s.timeout_s = num(el.timeout);
      if (el.extra.value.trim()) merge(s, JSON.parse(el.extra.value));
      return JSON.parse(JSON.stringify(s)); // drops the undefined fields
    }

    function preview() {
      try {
        el.preview.textContent = JSON.stringify(spec(), null, 2);
      } catch (err) {
        el.preview.textContent = `The extra JSON does not parse: ${err.message}`;
      }
    }

    function clearErrors() {
      el.summary.replaceChildren();
      for (const e of form.querySelectorAll(".field-error")) e.remove();
      for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
    }

    // Each error goes next to the field whose loc is the longest prefix of the error's loc.
    function showErrors(problem) {
      const holders = [...form.querySelectorAll("[data-loc]")];
      const errors = problem.errors && problem.errors.length ? problem.errors : [{ loc: [], msg: problem.detail }];
      const list = h("ul", {});
      errors.forEach((e, i) => {
        const loc = (e.loc || []).join(".");
        let best = null;
        for (const holder of holders) {
          const l = holder.dataset.loc;
          if ((loc === l || loc.startsWith(`${l}.`) || l === "") && (!best || l.length > best.dataset.loc.length)) best = holder;
        }
        const id = `error-${i}`;
        const message = h("p", { class: "field-error", id, "data-error-loc": loc }, e.msg);
        if (best) {
          best.append(message);
          const input = best.querySelector("input, select, textarea");
          if (input) {
            input.setAttribute("aria-invalid", "true");
            input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
          }
        }
        list.append(h("li", {}, loc ? h("code", {}, loc) : "", loc ? ": " : "", e.msg));
      });
      el.summary.append(h("div", { class: "card problem" }, h("h2", {}, problem.title || "The spec was refused"), list));
      el.summary.scrollIntoView({ block: "start" });
    }

    async function ensureUploaded(select, fileInput, kind, loc) {
      if (select.value && !select.value.startsWith("=")) return select.value;
      if (!fileInput.files.length) {
        const err = new ApiError(422, { title: "Missing file", detail: `pick a ${kind.slice(0, -1)} or upload one`, errors: [{ loc: loc.split("."), msg: `pick a ${kind.slice(0, -1)} or upload one` }] });
        throw err;
      }
      status.textContent = `Uploading ${fileInput.files[0].name}…`;
      try {
        const info = await upload(kind, fileInput.files[0]);
        return info.id;
      } catch (err) {
        if (err instanceof ApiError) err.problem.errors = [{ loc: loc.split("."), msg: err.message }];
        throw err;
      }
    }

    // Check: a dry run of the spec as it stands; files not uploaded yet go with it and are
    // kept nowhere.
    async function check() {
      clearErrors();
      el.plan.replaceChildren();
      const s = spec();
      const body = new FormData();
      const files = [["model", el.model, el.modelFile], ["train_data", el.train, el.trainFile]];
      if (el.evalSel.value === "=file") files.push(["eval_data", el.evalSel, el.evalFile]);
      for (const [name, select, input] of files) {
        if (select.value && !select.value.startsWith("=")) continue;
        if (input.files.length) body.append(name, input.files[0], input.files[0].name);
        if (name === "model") delete s.keras_model_path;
        else if (name === "train_data") delete s.train.dataset;
        else delete s.eval.dataset;
      }
      if (el.evalSel.value === "=train" && !el.train.value && s.eval) delete s.eval; // cannot name an upload not made
      body.append("spec", JSON.stringify(s));
      status.textContent = "Checking…";
      try {
        showPlan(await api("/convert?dry_run=true", { method: "POST", body }));
        status.textContent = "The spec passes every check; nothing was submitted.";
      } catch (err) {
        status.textContent = "";
        if (!(err instanceof ApiError)) throw err;
        showErrors(err.problem);
      }
    }

    function showPlan(plan) {
      const row = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
      const tensors = (ts) => ts.map((t) => `${t.name} ${t.dtype}${t.shape ? JSON.stringify(t.shape) : "[?]"}`).join(", ");
      el.plan.replaceChildren(
        h(
          "section",
          { class: "card", "aria-labelledby": "h-plan" },
          h("h2", { id: "h-plan" }, "Plan"),
          h(
            "dl",
            { class: "facts" },
            ...row("Evaluation metrics", plan.eval_metric_keys.join(", ") || "no evaluation"),
            ...row("Parameters", plan.parameters.toLocaleString()),
            ...row("Memory", h("span", { title: plan.memory.explanation }, `${(plan.memory_bytes / 2 ** 20).toFixed(0)} MiB`)),
            ...row("Queue", `${plan.queue.name}, ${plan.queue.priority}, position ${plan.queue.place.position} (${plan.queue.place.waiting_for})`),
            ...plan.signatures.flatMap((s) => row(`Signature ${s.name}`, `${s.method}: ${tensors(s.inputs)} → ${tensors(s.outputs)}`)),
          ),
        ),
      );
    }

    form.querySelector("#check").addEventListener("click", check);
    form.addEventListener("input", preview);
    form.addEventListener("change", preview);
    el.model.addEventListener("change", () => {
      showModel();
      preview();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      const button = form.querySelector("#submit");
      button.disabled = true;
      try {
        const ids = {
          model: await ensureUploaded(el.model, el.modelFile, "models", "keras_model_path"),
          train: await ensureUploaded(el.train, el.trainFile, "datasets", "train.dataset"),
        };
        if (el.evalSel.value === "=file") ids.eval = await ensureUploaded(el.evalSel, el.evalFile, "datasets", "eval.dataset");
        let body;
        try {
          body = spec(ids);
        } catch (err) {
          throw new ApiError(422, { title: "Invalid JSON", detail: err.message, errors: [{ loc: [], msg: `the extra JSON does not parse: ${err.message}` }] });
        }
        status.textContent = "Submitting…";
        const job = await api("/convert", { method: "POST", json: body });
        go(`/ui/jobs/${job.id}`);
      } catch (err) {
        status.textContent = "";
        if (!(err instanceof ApiError)) throw err;
        showErrors(err.problem);
      } finally {
        button.disabled = false;
      }
    });
    const wanted = params.get("model");
    if (wanted && byId.has(wanted)) el.model.value = wanted;
    showModel();
    preview();
  }

  return () => {
    stopped = true;
  };
}
