"""Write docs/reference.md from openapi/openapi.json (``make docs``); a test keeps it current.

The page depends on the spec alone and is written in a fixed order (operations by path,
then method; responses by status; schemas by name), so the same spec always gives the
same bytes. Nothing here imports the app: regenerate the spec first (``make openapi``).
"""

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "openapi" / "openapi.json"
TARGET = ROOT / "docs" / "reference.md"

METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
SCHEMA_REF = "#/components/schemas/"
PROBLEM_JSON = "application/problem+json"
PROBLEMS_HEADING = "Problem bodies"
# Keywords that constrain a value, in the order they are written.
CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("pattern", "matches `{}`"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
)


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def code(name: str) -> str:
    return f"`{name}`"


def literal(value: Any) -> str:
    """A JSON value as code: ``"cpu"``, ``32``, ``null``."""
    return code(json.dumps(value))


def nested(schema: dict[str, Any]) -> str:
    """The type of an array's items or a map's values, parenthesised when it has
    alternatives."""
    text = type_of(schema)
    return f"({text})" if " or " in text else text


def schema_link(ref: str) -> str:
    name = ref.removeprefix(SCHEMA_REF)
    return f"[{name}](#{anchor(name)})"


def is_problem(content_type: str, schema: dict[str, Any]) -> bool:
    return content_type == PROBLEM_JSON and "$ref" not in schema


def type_of(schema: dict[str, Any]) -> str:
    """A short, readable type: links for named schemas, ``or`` for alternatives."""
    if not schema:
        return "any"
    if "$ref" in schema:
        return schema_link(schema["$ref"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = list(dict.fromkeys(type_of(s) for s in schema[key]))
            return " or ".join(parts)
    if "allOf" in schema:
        return " and ".join(type_of(s) for s in schema["allOf"])
    if "const" in schema:
        return literal(schema["const"])
    if "enum" in schema:
        return " or ".join(literal(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {nested(schema.get('items', {}))}"
    if kind == "object" or "properties" in schema or "additionalProperties" in schema:
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if properties:
            return "object with " + ", ".join(code(name) for name in properties)
        if isinstance(extra, dict):
            return f"map of string to {nested(extra)}"
        return "object"
    if isinstance(kind, list):
        return " or ".join(kind)
    text = kind or "any"
    if "format" in schema:
        text += f" ({schema['format']})"
    return text


def constraints_of(schema: dict[str, Any]) -> str:
    """The value's limits, including those of each alternative (``anyOf``)."""
    found: list[str] = []
    for part in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        for key, template in CONSTRAINTS:
            if key in part:
                text = template.format(part[key])
                if text not in found:
                    found.append(text)
    return "; ".join(found)


def default_of(schema: dict[str, Any]) -> str:
    return literal(schema["default"]) if "default" in schema else ""


def description_of(schema: dict[str, Any], fallback: str = "") -> str:
    return schema.get("description", fallback)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def fields_table(schema: dict[str, Any], first_column: str = "field") -> list[str]:
    required = set(schema.get("required", []))
    rows = [
        [
            code(name),
            type_of(prop),
            "yes" if name in required else "no",
            default_of(prop),
            constraints_of(prop),
            description_of(prop),
        ]
        for name, prop in schema.get("properties", {}).items()
    ]
    header = [first_column, "type", "required", "default", "constraints", "description"]
    return table(header, rows)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted(spec.get("paths", {})):
        item = spec["paths"][path]
        for method in METHODS:
            if method in item:
                found.append((method, path, item[method]))
    return found


def op_heading(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def status_order(status: str) -> tuple[int, str]:
    return (int(status), status) if status.isdigit() else (1000, status)


def render_operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### {op_heading(method, path)}", ""]
    if op.get("summary"):
        lines += [op["summary"], ""]
    if op.get("description"):
        lines += [op["description"], ""]
    facts = []
    if op.get("operationId"):
        facts.append(f"- Operation id: {code(op['operationId'])}")
    if op.get("tags"):
        facts.append("- Tags: " + ", ".join(op["tags"]))
    if op.get("deprecated"):
        facts.append("- Deprecated")
    lines += [*facts, ""] if facts else []

    params = op.get("parameters", [])
    if params:
        rows = []
        for p in params:
            schema = p.get("schema", {})
            rows.append(
                [
                    code(p["name"]),
                    p.get("in", ""),
                    type_of(schema),
                    "yes" if p.get("required") else "no",
                    default_of(schema),
                    constraints_of(schema),
                    p.get("description", description_of(schema)),
                ]
            )
        header = ["name", "in", "type", "required", "default", "constraints", "description"]
        lines += ["**Parameters**", "", *table(header, rows), ""]

    body = op.get("requestBody")
    if body:
        needed = "required" if body.get("required") else "optional"
        lines += [f"**Request body** ({needed})", ""]
        if body.get("description"):
            lines += [body["description"], ""]
        content = body.get("content", {})
        rows = [[code(ctype), type_of(content[ctype].get("schema", {}))] for ctype in content]
        lines += [*table(["content type", "schema"], rows), ""]
        for ctype in content:
            schema = content[ctype].get("schema", {})
            if "$ref" not in schema and schema.get("properties"):
                lines += [f"Parts of {code(ctype)}:", ""]
                lines += [*fields_table(schema, "part"), ""]

    responses = op.get("responses", {})
    if responses:
        rows = []
        for status in sorted(responses, key=status_order):
            response = responses[status]
            content = response.get("content", {})
            description = response.get("description", "")
            if not content:
                rows.append([status, description, "", ""])
            for ctype in content:
                schema = content[ctype].get("schema")
                if schema is None:
                    shown = "(not described)"
                elif is_problem(ctype, schema):
                    shown = f"[problem](#{anchor(PROBLEMS_HEADING)})"
                else:
                    shown = type_of(schema)
                rows.append([status, description, code(ctype), shown])
        lines += ["**Responses**", ""]
        lines += [*table(["status", "description", "content type", "body"], rows), ""]
    return lines


def problem_schemas(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct inline problem bodies the responses declare, in a stable order."""
    seen: dict[str, dict[str, Any]] = {}
    for _, _, op in operations(spec):
        for status in sorted(op.get("responses", {}), key=status_order):
            content = op["responses"][status].get("content", {})
            schema = content.get(PROBLEM_JSON, {}).get("schema")
            if schema is not None and is_problem(PROBLEM_JSON, schema):
                seen.setdefault(json.dumps(schema, sort_keys=True), schema)
    return list(seen.values())


def render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [" ".join(schema["description"].split()), ""]
    if "enum" in schema:
        values = ", ".join(literal(v) for v in schema["enum"])
        lines += [f"Type: {schema.get('type', 'any')}, one of {values}.", ""]
        return lines
    if schema.get("properties"):
        closed = schema.get("additionalProperties") is False
        lines += ["Type: object." + (" Unknown fields are refused." if closed else ""), ""]
        lines += [*fields_table(schema), ""]
        return lines
    lines += [f"Type: {type_of(schema)}.", ""]
    return lines


def render(spec: dict[str, Any]) -> str:
    """The whole page for ``spec`` (the parsed openapi.json)."""
    info = spec.get("info", {})
    title = info.get("title", "API")
    lines = [
        f"# {title} API reference",
        "",
        f"Generated from `openapi/openapi.json` (OpenAPI {spec.get('openapi', '?')}, "
        f"{title} {info.get('version', '?')}) by `scripts/gen_api_reference.py`: run "
        "`make docs` after `make openapi`; do not edit it by hand. The guide that explains "
        "these operations is `docs/api.md`.",
        "",
    ]
    for key in ("summary", "description"):
        if info.get(key):
            lines += [info[key], ""]

    ops = operations(spec)
    lines += ["## Operations", ""]
    rows = [
        [
            f"[{op_heading(method, path)}](#{anchor(op_heading(method, path))})",
            op.get("summary", ""),
        ]
        for method, path, op in ops
    ]
    lines += [*table(["operation", "summary"], rows), ""]
    for method, path, op in ops:
        lines += render_operation(method, path, op)

    problems = problem_schemas(spec)
    if problems:
        lines += [f"## {PROBLEMS_HEADING}", ""]
        lines += [
            f"Every error response is `{PROBLEM_JSON}` (RFC 9457) with these fields.",
            "",
        ]
        for schema in problems:
            lines += [*fields_table(schema), ""]

    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name in sorted(schemas):
            lines += render_schema(name, schemas[name])

    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main() -> int:
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(render(json.loads(SPEC.read_text())))
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
