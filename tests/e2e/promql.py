"""PromQL expressions as Prometheus itself parses them, for the observability tests.

Owns: turning the AST that Prometheus' ``/api/v1/parse_query`` returns back into PromQL, the
metric names an expression selects, and its *signals*: the sub-expressions whose values an
alert compares or combines (each operand of a comparison or of and/or/unless, the argument of
absent()), which must return data on a healthy, loaded fleet even when the alert itself
(rightly) returns nothing. The parsing is Prometheus', never ours: only printing is done here.
"""

from __future__ import annotations

import json

COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
SET_OPS = {"and", "or", "unless"}
# Card names of parser.VectorMatchCardinality.String().
GROUP = {"many-to-one": "group_left", "one-to-many": "group_right"}


def _duration(ms: int) -> str:
    if ms % 60000 == 0:
        return f"{ms // 60000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _selector(node: dict) -> str:
    matchers = ", ".join(f"{m['name']}{_MATCH_OPS[m['type']]}{json.dumps(m['value'])}"
                         for m in node["matchers"])
    out = "{" + matchers + "}"
    if node.get("offset"):
        out += f" offset {_duration(node['offset'])}"
    return out


_MATCH_OPS = {"=": "=", "!=": "!=", "=~": "=~", "!~": "!~"}


def to_promql(node: dict) -> str:
    """PromQL for an AST node of /api/v1/parse_query (parenthesised generously)."""
    t = node["type"]
    if t == "vectorSelector":
        return _selector(node)
    if t == "matrixSelector":
        sel = _selector(node)
        base, _, offset = sel.partition(" offset ")
        return f"{base}[{_duration(node['range'])}]" + (f" offset {offset}" if offset else "")
    if t == "numberLiteral":
        return node["val"]
    if t == "stringLiteral":
        return json.dumps(node["val"])
    if t == "parenExpr":
        return f"({to_promql(node['expr'])})"
    if t == "unaryExpr":
        return f"{node['op']}({to_promql(node['expr'])})"
    if t == "call":
        return f"{node['func']['name']}({', '.join(to_promql(a) for a in node['args'])})"
    if t == "aggregation":
        grouping = ""
        if node["grouping"] or node["without"]:
            grouping = f" {'without' if node['without'] else 'by'} ({', '.join(node['grouping'])})"
        inner = to_promql(node["expr"])
        if node.get("param"):
            inner = f"{to_promql(node['param'])}, {inner}"
        return f"{node['op']}{grouping} ({inner})"
    if t == "subquery":
        step = f":{_duration(node['step'])}" if node.get("step") else ":"
        return f"({to_promql(node['expr'])})[{_duration(node['range'])}{step}]"
    if t == "binaryExpr":
        op = node["op"] + (" bool" if node.get("bool") else "")
        m = node.get("matching")
        if m:
            if m["on"] or m["labels"]:
                op += f" {'on' if m['on'] else 'ignoring'} ({', '.join(m['labels'])})"
            if m["card"] in GROUP:
                op += f" {GROUP[m['card']]} ({', '.join(m['include'])})"
        return f"({to_promql(node['lhs'])}) {op} ({to_promql(node['rhs'])})"
    raise ValueError(f"unsupported node {t}")


def metric_names(node) -> set[str]:
    """Every metric name the expression selects."""
    out: set[str] = set()
    if isinstance(node, dict):
        if node.get("type") in ("vectorSelector", "matrixSelector") and node.get("name"):
            out.add(node["name"])
        for v in node.values():
            out |= metric_names(v)
    elif isinstance(node, list):
        for v in node:
            out |= metric_names(v)
    return out


def _literal_only(node) -> bool:
    return not metric_names(node)


def signals(node: dict) -> list[dict]:
    """The sub-expressions an alert compares or combines (see the module docs)."""
    t = node["type"]
    if t == "parenExpr":
        return signals(node["expr"])
    if t == "binaryExpr" and (node["op"] in COMPARISONS and not node.get("bool")
                              or node["op"] in SET_OPS):
        return [s for side in (node["lhs"], node["rhs"]) if not _literal_only(side)
                for s in signals(side)]
    if t == "call" and node["func"]["name"] in ("absent", "absent_over_time"):
        return signals(node["args"][0])
    return [node]
