// A cluster job's card on its page: the shape its spec asks for and each member of the
// newest placement (role:index, state, node, address, last heartbeat) from Job.cluster.
import { h, when } from "./dom.js";

export function clusterShape(job) {
  const shape = job.spec && job.spec.distribution;
  if (!shape) return null;
  const workers = shape.workers ?? 1;
  const servers = shape.parameter_servers ?? 0;
  const parts = [
    `${workers} worker${workers === 1 ? "" : "s"} (the chief + ${workers - 1})`,
    `${servers} parameter server${servers === 1 ? "" : "s"}`,
  ];
  if (shape.evaluator) parts.push("an evaluator");
  return `${parts.join(", ")} · ${shape.strategy || "between_graph"}`;
}

// Fills `box` (a section) for a cluster job, hides it for a job on one worker.
export function showCluster(box, job) {
  const shape = clusterShape(job);
  box.hidden = !shape;
  if (!shape) return;
  const cluster = job.cluster;
  const head = h("tr", {}, ...["Member", "State", "Node", "Address", "Last seen"].map((c) => h("th", { scope: "col" }, c)));
  const rows = (cluster ? cluster.members : []).map((m) =>
    h(
      "tr",
      { "data-member": `${m.role}:${m.index}`, "data-state": m.state },
      h("th", { scope: "row" }, `${m.role}:${m.index}`),
      h("td", { "data-field": "state" }, h("span", { class: `badge m-${m.state}` }, m.state)),
      h("td", { "data-field": "node" }, m.node || "–"),
      h("td", { "data-field": "address" }, m.address ? h("code", {}, m.address) : "–"),
      h("td", { "data-field": "beat_at" }, when(m.beat_at)),
    ),
  );
  box.replaceChildren(
    h("h2", { id: "h-cluster" }, "Cluster"),
    h("p", { id: "cluster-shape" }, shape, " · ", cluster ? `placement ${cluster.gang}` : "not placed yet"),
    h("table", { class: "kv", id: "cluster-members" }, h("thead", {}, head), h("tbody", {}, ...rows)),
  );
}
