"""RESULTS.md's details: per-round and per-path tables behind the summary figures."""

from typing import Any


def details(r: dict[str, Any]) -> list[str]:
    lines = ["## Details", ""]
    for part in (_e2e_runs, _pickup_details, _api_details, _scaling_details):
        lines += part(r)
    return lines


def _e2e_runs(r: dict[str, Any]) -> list[str]:
    if "e2e" not in r:
        return []
    e = r["e2e"]
    lines = [
        f"### 1-2. End-to-end runs ({e['steps']} steps, evaluate, export)",
        "",
        "| round | (a) warm direct | (b) cold script | (c) k2e | (c): POST /convert | "
        "pickup | worker | worker: until the Estimator | lag | steps/s (a) | steps/s (c) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a, b, c in zip(e["runs"]["a"], e["runs"]["b"], e["runs"]["c"], strict=True):
        lines.append(
            f"| {a['round']} | {a['wall_s']:.2f} s | {b['wall_s']:.2f} s | {c['wall_s']:.2f} s "
            f"| {c['post_s']:.2f} s | {c['pickup_s']:.3f} s | {c['worker_s']:.2f} s "
            f"| {_seconds(c.get('prefix_s'))} | {c['lag_s']:.2f} s | {a['steps_per_sec']:.0f} "
            f"| {c['steps_per_sec']:.0f} |"
        )
    return [*lines, ""]


def _pickup_details(r: dict[str, Any]) -> list[str]:
    if "pickup" not in r:
        return []
    p = r["pickup"]
    lines = [
        f"### 3. Queue pickup ({p['jobs']} jobs: 1 step, no eval, no export)",
        "",
        "| figure | p50 | p90 | p99 | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (
        ("server_ms", "`started_at - created_at`"),
        ("client_ms", "client: 202 → first GET not `queued` (10 ms polls)"),
        ("post_convert_ms", "POST /convert answered"),
    ):
        x = p[key]
        lines.append(
            f"| {label} | {x['p50']:.1f} ms | {x['p90']:.1f} ms | {x['p99']:.1f} ms | "
            f"{x['max']:.1f} ms |"
        )
    return [*lines, ""]


def _api_details(r: dict[str, Any]) -> list[str]:
    if "api" not in r:
        return []
    a = r["api"]
    lines = [
        f"### 4. API load ({a['connections']} connections, phases alternating between paths)",
        "",
        "| path | requests | errors | req/s | p50 | p99 | server cores | generator cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path, x in a["paths"].items():
        lat = x["latency_ms"]
        lines.append(
            f"| `{path}` | {x['requests']} | {x['errors']} | {x['rps']:.0f} | "
            f"{lat['p50']:.1f} ms | {lat['p99']:.1f} ms | {x['server_cores']:.2f} | "
            f"{x['generator_cores']:.2f} |"
        )
    return [*lines, ""]


def _scaling_details(r: dict[str, Any]) -> list[str]:
    if "scaling" not in r:
        return []
    s = r["scaling"]
    lines = [
        "### 6. Scaling (p50 / p99; latency with one connection)",
        "",
        "| jobs in store | GET /jobs/{id} | GET /jobs?limit=50 | pickup (server) | "
        "pickup (client) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for level in s["levels"].values():
        cells = [
            f"{level[k]['p50']:.1f} / {level[k]['p99']:.1f} ms"
            for k in ("get_job_ms", "list_jobs_ms", "pickup_server_ms", "pickup_client_ms")
        ]
        lines.append(f"| {level['jobs_in_store']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Criterion: flat when p50 at the larger store / p50 at the smaller ≤ "
        f"{s['flat_ratio']}. Jobs are read by primary key or unique id, pages by the "
        "`seq` primary key (newest first, LIMIT 51): no figure depends on the store's size.",
        "",
    ]
    return lines


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"
