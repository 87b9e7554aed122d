#!/usr/bin/env python3
"""Compare our OpenAPI document with Adobe's published Segmentation Service document.

For the audiences paths of `/data/core/ups` (Adobe's `/audiences`, `/audiences/{AUDIENCE_ID}` and
`/audiences/bulk-get`), every operation Adobe documents must exist in ours, and for each one:

* every parameter Adobe documents is documented by us: query and header parameters by name (the
  four credential headers may be covered by our security schemes, `Content-Type` by a request
  body), path parameters by position (their names are not on the wire);
* every response status Adobe documents is documented by us;
* every field of Adobe's request and success-response schemas (nested ones too, as dotted paths)
  is a field of ours; where both state a type, ours allows Adobe's; where both list allowed
  values, ours allows each of Adobe's.

A difference passes only when our document states it as a decision: either in the operation's
description, under a line that starts with `Differs from Adobe's document`, as a bullet that starts
with the difference's key in backticks (for example - `status 201`: ...), or, for the type or
allowed values of a field, in that field's own description, which then contains
`Differs from Adobe's document` and names the value in backticks (or says "type").

The report is printed as Markdown. It is also kept in docs/OPENAPI.md between two marker lines;
`--update-doc` rewrites that section, and a plain run fails when the section is out of date.
Exit status: 0 when every difference is stated and the doc is current, 1 otherwise.

Usage (from anywhere): python3 scripts/compare_upstream.py [--update-doc]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT.parent / "shared" / "upstream" / "aep" / "segmentation.openapi.yaml"
OURS = ROOT / "openapi" / "openapi.json"
DOC = ROOT / "docs" / "OPENAPI.md"
BEGIN = "<!-- BEGIN compare_upstream.py output -->"
END = "<!-- END compare_upstream.py output -->"

# Adobe's paths (relative to its server, which is /data/core/ups) and ours.
PATHS = {
    "/audiences": "/data/core/ups/audiences",
    "/audiences/{AUDIENCE_ID}": "/data/core/ups/audiences/{id}",
    "/audiences/bulk-get": "/data/core/ups/audiences/bulk-get",
}
# Ours only, never compared: the test-control endpoints (docs/CONTROL.md), tag "Test control".
EXCLUDED_PREFIXES = ("/_local/",)
METHODS = ("get", "put", "post", "delete", "patch")
MARKER = "Differs from Adobe's document"


def resolve(doc: dict, node):
    """Follows local `$ref`s until a node that is not a reference."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node and isinstance(node["$ref"], str):
        ref = node["$ref"]
        if ref in seen or not ref.startswith("#/"):
            break
        seen.add(ref)
        target = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        # OpenAPI 3.1 allows keywords beside a $ref: keep them (description, readOnly, ...).
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **extra} if extra else target
    return node


@dataclass
class FieldInfo:
    types: set[str] = field(default_factory=set)  # empty: any type
    enum: set | None = None  # None: any value
    descriptions: list[str] = field(default_factory=list)


def schema_types(s: dict) -> set[str]:
    t = s.get("type")
    if t is None:
        return set()
    types = set(t) if isinstance(t, list) else {t}
    if s.get("nullable"):
        types.add("null")
    return types


def collect_fields(doc: dict, schema, prefix: str, out: dict[str, FieldInfo], depth=0):
    """Every property under `schema`, as dotted paths (`[]` for array items), merged over
    oneOf/anyOf/allOf branches."""
    if depth > 12 or schema is None:
        return
    s = resolve(doc, schema)
    if not isinstance(s, dict):
        return
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in s.get(key, []):
            collect_fields(doc, branch, prefix, out, depth + 1)
    if "array" in schema_types(s) and "items" in s:
        collect_fields(doc, s["items"], prefix + "[].", out, depth + 1)
    for name, sub in (s.get("properties") or {}).items():
        path = prefix + name
        r = resolve(doc, sub)
        info = out.setdefault(path, FieldInfo())
        describe(doc, r, info)
        if isinstance(sub, dict) and "$ref" in sub:
            # the description of the referenced schema too, not only the one beside the $ref
            target = resolve(doc, {"$ref": sub["$ref"]})
            if target.get("description"):
                info.descriptions.append(target["description"])
        collect_fields(doc, sub, path + ".", out, depth + 1)


def describe(doc: dict, s: dict, info: FieldInfo):
    """Types, allowed values and descriptions of one property (oneOf/anyOf branches merged)."""
    branches = [s]
    for key in ("oneOf", "anyOf"):
        if key in s:
            branches = [resolve(doc, b) for b in s[key]]
    any_type = False
    values: set | None = set()
    for b in branches:
        t = schema_types(b)
        if not t:
            any_type = True
        info.types |= t
        if "enum" in b:
            if values is not None:
                values |= set(map(str, b["enum"]))
        elif "const" in b:
            if values is not None:
                values.add(str(b["const"]))
        else:
            values = None  # this branch allows any value of its type
    if any_type:
        info.types = set()
    if values is not None:
        info.enum = values if info.enum is None else info.enum | values
    for d in (s.get("description"), *(b.get("description") for b in branches)):
        if d:
            info.descriptions.append(d)


def type_allows(ours: set[str], theirs: set[str]) -> bool:
    if not ours or not theirs:
        return True
    ours = set(ours)
    if "number" in ours:
        ours.add("integer")
    return theirs - {"null"} <= ours


def body_schemas(doc: dict, op: dict, what: str) -> list:
    """Request-body schemas, or the schemas of success (2xx) responses."""
    if what == "request":
        body = resolve(doc, op.get("requestBody") or {})
        contents = [body.get("content") or {}]
    else:
        contents = []
        for status, resp in (op.get("responses") or {}).items():
            if str(status).startswith("2"):
                contents.append(resolve(doc, resp).get("content") or {})
    schemas = []
    for content in contents:
        for media in content.values():
            if "schema" in media:
                schemas.append(media["schema"])
    return schemas


def fields_of(doc: dict, op: dict, what: str) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for s in body_schemas(doc, op, what):
        collect_fields(doc, s, "", out)
    return out


def parameters(doc: dict, path_item: dict, op: dict) -> list[dict]:
    params = [resolve(doc, p) for p in (path_item.get("parameters") or [])]
    params += [resolve(doc, p) for p in (op.get("parameters") or [])]
    return params


def security_headers(doc: dict, op: dict) -> set[str]:
    """Header names our security schemes send for this operation."""
    requirements = op.get("security", doc.get("security") or [])
    schemes = (doc.get("components") or {}).get("securitySchemes") or {}
    headers = set()
    for requirement in requirements:
        for name in requirement:
            s = schemes.get(name) or {}
            if s.get("type") == "http" and s.get("scheme", "").lower() == "bearer":
                headers.add("authorization")
            if s.get("type") == "apiKey" and s.get("in") == "header":
                headers.add(s["name"].lower())
    return headers


def stated_keys(description: str) -> dict[str, str]:
    """The differences an operation's description states: key -> explanation."""
    keys = {}
    lines = (description or "").splitlines()
    inside = False
    for line in lines:
        if line.strip().startswith(MARKER) or line.strip().startswith("**" + MARKER):
            inside = True
            continue
        if not inside:
            continue
        m = re.match(r"\s*[-*]\s+`([^`]+)`:?\s*(.*)", line)
        if m:
            keys[m.group(1)] = m.group(2).strip()
        elif line.strip() and not line.startswith(" "):
            inside = False
    return keys


def field_states(info: FieldInfo, token: str) -> str | None:
    for d in info.descriptions:
        if MARKER in d and (f"`{token}`" in d or (token == "type" and "type" in d)):
            return d.split(MARKER, 1)[1].lstrip(":, ").strip()
    return None


@dataclass
class Difference:
    key: str
    what: str
    stated: str | None


def free_form_parent(fields: dict[str, FieldInfo], path: str) -> str | None:
    """The nearest enclosing field that ours documents without a type or properties (any JSON
    value), if there is one."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:i])
        info = fields.get(parent)
        if info is not None:
            has_children = any(k.startswith(parent + ".") for k in fields)
            return parent if not info.types and not has_children else None
    return None


def compare_operation(up: dict, up_item: dict, up_op: dict, ours: dict, our_item: dict,
                      our_op: dict) -> tuple[list[Difference], list[str], int]:
    """Differences (stated or not), notes, and the number of items that matched."""
    diffs: list[Difference] = []
    notes: list[str] = []
    matched = 0
    stated = stated_keys(our_op.get("description", ""))

    def diff(key: str, what: str, field_info: FieldInfo | None = None, token: str | None = None):
        reason = stated.get(key)
        if reason is None and field_info is not None and token is not None:
            reason = field_states(field_info, token)
        diffs.append(Difference(key, what, reason))

    # Parameters.
    our_params = parameters(ours, our_item, our_op)
    our_named = {(p["in"], p["name"].lower() if p["in"] == "header" else p["name"]): p
                 for p in our_params if p.get("in") != "path"}
    our_path = [p for p in our_params if p.get("in") == "path"]
    up_path = [p for p in parameters(up, up_item, up_op) if p.get("in") == "path"]
    sec = security_headers(ours, our_op)
    for p in parameters(up, up_item, up_op):
        where, name = p.get("in"), p.get("name")
        if where == "path":
            i = up_path.index(p)
            if i < len(our_path):
                matched += 1
                if our_path[i]["name"] != name:
                    notes.append(f"path parameter `{name}` is `{our_path[i]['name']}` here "
                                 "(names are not on the wire)")
            else:
                diff(f"parameter {name} (path)", f"path parameter `{name}` is not documented")
            continue
        key_name = name.lower() if where == "header" else name
        mine = our_named.get((where, key_name))
        if mine is None and where == "header" and key_name in sec:
            matched += 1
            continue
        if mine is None and where == "header" and key_name == "content-type" \
                and our_op.get("requestBody"):
            matched += 1
            continue
        if mine is None:
            diff(f"parameter {name} ({where})", f"{where} parameter `{name}` is not documented")
            continue
        matched += 1
        theirs_t = schema_types(resolve(up, p.get("schema") or {}))
        ours_t = schema_types(resolve(ours, mine.get("schema") or {}))
        if not type_allows(ours_t, theirs_t):
            diff(f"parameter {name} ({where}) type",
                 f"{where} parameter `{name}`: Adobe's type {sorted(theirs_t)}, ours {sorted(ours_t)}")

    # Statuses.
    our_statuses = set(map(str, (our_op.get("responses") or {}).keys()))
    for status in map(str, (up_op.get("responses") or {}).keys()):
        if status in our_statuses:
            matched += 1
        else:
            diff(f"status {status}", f"Adobe documents status {status}; ours does not")

    # Fields of request bodies and success responses.
    for what in ("request", "response"):
        theirs = fields_of(up, up_op, what)
        mine = fields_of(ours, our_op, what)
        for path, t in sorted(theirs.items()):
            m = mine.get(path)
            if m is None:
                holder = free_form_parent(mine, path)
                if holder is not None:
                    matched += 1
                    notes.append(f"{what} field `{path}` is inside `{holder}`, which ours "
                                 "documents as any JSON value")
                    continue
                diff(f"{what} field {path}", f"{what} field `{path}` is not documented")
                continue
            matched += 1
            if not type_allows(m.types, t.types):
                diff(f"{what} field {path} type",
                     f"{what} field `{path}`: Adobe's type {sorted(t.types)}, ours {sorted(m.types)}",
                     m, "type")
            if t.enum is not None and m.enum is not None:
                for value in sorted(t.enum - m.enum):
                    diff(f"{what} field {path} value {value}",
                         f"{what} field `{path}`: Adobe allows `{value}`, ours does not", m, value)
    return diffs, notes, matched


def compare() -> tuple[str, bool]:
    up = yaml.safe_load(UPSTREAM.read_text())
    ours = json.loads(OURS.read_text())
    lines = [
        "Compared: Adobe's `segmentation.openapi.yaml` (paths `/audiences`, "
        "`/audiences/{AUDIENCE_ID}`, `/audiences/bulk-get`) with `openapi/openapi.json`.",
        "",
    ]
    excluded = sorted(p for p in (ours.get("paths") or {})
                      if p.startswith(EXCLUDED_PREFIXES))
    assert not any(p in PATHS.values() for p in excluded)
    if excluded:
        lines += [f"Not compared (ours only, docs/CONTROL.md): {', '.join(f'`{p}`' for p in excluded)}.",
                  ""]
    ok = True
    totals = [0, 0, 0]  # matched, stated, unstated
    for up_path, our_path in PATHS.items():
        up_item = (up.get("paths") or {}).get(up_path)
        if up_item is None:
            lines.append(f"- `{up_path}`: not in Adobe's document any more (nothing to compare)")
            continue
        our_item = (ours.get("paths") or {}).get(our_path) or {}
        for method in METHODS:
            if method not in up_item:
                continue
            up_op = up_item[method]
            title = f"`{method.upper()} {our_path}` (Adobe: `{up_op.get('operationId')}`)"
            our_op = our_item.get(method)
            if our_op is None:
                ok = False
                totals[2] += 1
                lines += [f"### {title}", "", "- **NOT DOCUMENTED**: the operation is missing", ""]
                continue
            diffs, notes, matched = compare_operation(up, up_item, up_op, ours, our_item, our_op)
            totals[0] += matched
            lines.append(f"### {title}")
            lines.append("")
            lines.append(f"{matched} parameters, statuses and fields documented by both.")
            lines.append("")
            for d in diffs:
                if d.stated is None:
                    ok = False
                    totals[2] += 1
                    lines.append(f"- **UNSTATED** `{d.key}`: {d.what}")
                else:
                    totals[1] += 1
                    decision = " ".join(d.stated.split())
                    lines.append(f"- `{d.key}`: {d.what}. Decision: {decision}")
            for n in notes:
                lines.append(f"- note: {n}")
            lines.append("")
    lines.append(
        f"Total: {totals[0]} items documented by both, {totals[1]} deliberate differences "
        f"(stated in our document), {totals[2]} unstated differences."
    )
    return "\n".join(lines) + "\n", ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update-doc", action="store_true",
                        help=f"rewrite the report section of {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    if not UPSTREAM.is_file():
        print(f"compare_upstream: {UPSTREAM} not found", file=sys.stderr)
        return 1
    report, ok = compare()
    print(report)
    text = DOC.read_text() if DOC.is_file() else ""
    if BEGIN not in text or END not in text:
        print(f"compare_upstream: {DOC} has no section between {BEGIN} and {END}",
              file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    wanted = f"{head}{BEGIN}\n{report}{END}{tail}"
    if args.update_doc:
        DOC.write_text(wanted)
    elif current != f"\n{report}":
        print(f"compare_upstream: the report in {DOC.relative_to(ROOT)} is out of date; run "
              "python3 scripts/compare_upstream.py --update-doc", file=sys.stderr)
        ok = False
    if not ok:
        print("compare_upstream: FAILED (see UNSTATED / NOT DOCUMENTED above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
