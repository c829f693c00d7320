"""bench/results.json (raw numbers) and bench/RESULTS.md (the table, the machine, and the
attribution of each miss), both written from one run's results."""

import json
from pathlib import Path
from typing import Any

from bench.targets import rows


def write(results: dict[str, Any], bench_dir: Path) -> tuple[Path, Path]:
    raw = bench_dir / "results.json"
    raw.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    md = bench_dir / "RESULTS.md"
    md.write_text(render(results))
    return md, raw


def render(r: dict[str, Any]) -> str:
    from bench.analysis import analysis
    from bench.details import details

    m = r["machine"]
    v = m["versions"]
    table = [
        "| # | figure | value | target | result |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {row.number} | {row.figure} | {row.value} | {row.target} | {row.verdict} |"
            for row in rows(r)
        ),
    ]
    lines = [
        "# k2e benchmark results",
        "",
        f"Written by `{r['command']}` on {r['date']} (total runtime {r['runtime_s'] / 60:.1f} min);"
        " raw numbers in `results.json`. What each figure means: `README.md`.",
        "",
        "## Machine",
        "",
        f"- {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gb']} GB RAM, {m['platform']}",
        f"- Python {m['python']}, tensorflow-cpu {v['tensorflow-cpu']}, tensorflow-estimator "
        f"{v['tensorflow-estimator']}, k2e {v['k2e']}, FastAPI {v['fastapi']}, uvicorn "
        f"{v['uvicorn']} (httptools {v['httptools']}, uvloop {v['uvloop']}), Starlette "
        f"{v['starlette']}, SQLAlchemy {v['sqlalchemy']}, Celery {v['celery']}",
        f"- load average (1 min) when each part started: {_loads(r)}. The machine is shared "
        "and noisy: every figure is a ratio or a percentile from this one run, and the "
        "end-to-end cases alternate within each round.",
        "",
        "## Results",
        "",
        *table,
        "",
        *analysis(r),
        "",
        *details(r),
        "",
    ]
    return "\n".join(lines)


def _loads(r: dict[str, Any]) -> str:
    return ", ".join(f"{part} {load:.2f}" for part, load in r.get("loadavg", {}).items())
