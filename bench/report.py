"""Results out: the stdout table, the JSON file, docs/benchmarks.md and its chart."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

LOWER_IS_BETTER = ("ms p99", "KiB/conn")
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _target(name: str, gateway: dict[str, Any], ratio: float | None) -> str:
    """The issue's target for a scenario, and whether this run met it (full sizes only)."""
    value = gateway["value"]
    checks: list[tuple[str, bool]] = []
    if name.startswith("broadcast burst"):
        checks = [(">= 1M/s", value >= 1e6), (">= 5x baseline", ratio is not None and ratio >= 5)]
    elif name.startswith("sustained 200"):
        checks = [("p99 <= 20 ms", value <= 20)]
    elif name.startswith("sustained 20 "):
        checks = [("p99 <= 5 ms", value <= 5)]
    elif name.startswith("personal"):
        checks = [(">= 150k/s", value >= 150e3)]
    elif name.startswith("idle memory"):
        checks = [("<= 8 KiB", value <= 8)]
    elif name.startswith("maximum"):
        held = gateway["zero_loss"] and gateway.get("connections", 0) >= 100_000
        checks = [("100k held", held)]
    return ", ".join(f"{label} {'met' if ok else 'MISSED'}" for label, ok in checks)


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scenario: both servers' figures, the ratio, the target verdict."""
    baseline = {r["scenario"]: r for r in results["targets"].get("baseline", [])}
    out = []
    for gw in results["targets"]["gateway"]:
        bl = baseline.get(gw["scenario"])
        ratio = None
        if bl is not None and gw["value"] and bl["value"] and not math.isnan(bl["value"]):
            lower = gw["unit"] in LOWER_IS_BETTER
            ratio = bl["value"] / gw["value"] if lower else gw["value"] / bl["value"]
        target = _target(gw["scenario"], gw, ratio) if results["mode"] != "quick" else ""
        out.append({"gateway": gw, "baseline": bl, "ratio": ratio, "target": target})
    return out


def _fmt(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    v = r["value"]
    if r["unit"] in ("deliveries/s", "conn/s", "connections"):
        text = f"{v:,.0f}"
    elif r["unit"] == "ms p99":
        text = f"p50 {r['p50_ms']:.2f} / p99 {v:.2f} / max {r['max_ms']:.2f} ms"
    else:
        text = f"{v:.2f}"
    return text


def _per_cpu(r: dict[str, Any] | None) -> str:
    """Deliveries (or connections) per CPU-second of the server: steadier on a shared machine."""
    if r is None or not r.get("server_cpu_s"):
        return "-"
    count = r["delivered"] if r["unit"] == "deliveries/s" else r.get("connections", 0)
    return f"{count / r['server_cpu_s']:,.0f}"


def _ratio(row: dict[str, Any]) -> str:
    ratio = row["ratio"]
    if ratio is None:
        return "-"
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.2f}x (worse)"


def _loss(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    return f"{r['delivered']}/{r['expected']}" + ("" if r["zero_loss"] else " LOSS")


def _floor(results: dict[str, Any], row: dict[str, Any]) -> dict[str, Any] | None:
    """The latency floor measured at a sustained row's rate (None for other rows)."""
    if row["gateway"]["unit"] != "ms p99":
        return None
    rate = row["gateway"].get("rate")
    return next((f for f in results.get("floor", []) if f.get("rate") == rate), None)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _per_delivery(r: dict[str, Any], side: str) -> str:
    """CPU microseconds per delivery, user + system (steadier than the wall-clock figures)."""
    user, system = r.get(f"{side}_user_s"), r.get(f"{side}_sys_s")
    if user is None or system is None or not r["delivered"]:
        return "-"
    scale = 1e6 / r["delivered"]
    return f"{user * scale:.1f} + {system * scale:.1f}"


def breakdown(results: dict[str, Any]) -> list[list[str]]:
    """Per latency row, where the time went: the median message's first and last read.

    first: publish to the first client's read (Redis, the server up to its first write,
    one socket); spread: first read to last read (the fan-out to every socket and the
    client's reads of them); server fan-out: the server's own mean time per message or
    batch, first message parsed to last frame written (the gateway's fanout histogram);
    CPU per delivery, user and kernel apart: one write on the server, one read on the
    client.
    """
    out = [["scenario", "server", "first p50", "spread p50 / p99", "server fan-out mean",
            "server CPU us/delivery user + sys", "client CPU us/delivery user + sys"]]  # fmt: skip
    latency_rows = []
    for row in rows(results):
        floor = _floor(results, row)
        if floor is not None:
            latency_rows.append(("floor (blaster)", floor))
            latency_rows.append(("gateway", row["gateway"]))
            if row["baseline"] is not None:
                latency_rows.append(("baseline", row["baseline"]))
    for server, r in latency_rows:
        lat = r.get("latency") or {}
        fan = r.get("server_fanout") or {}
        fan_ms = fan.get("mean_ms")  # the gateway's histogram gives the mean only
        out.append([
            r["scenario"].replace("load client latency floor", "sustained"),
            server,
            _ms(lat.get("first_p50_ms")),
            f"{_ms(lat.get('spread_p50_ms'))} / {_ms(lat.get('spread_p99_ms'))}",
            _ms(fan_ms),
            _per_delivery(r, "server"),
            _per_delivery(r, "client"),
        ])  # fmt: skip
    return out if len(out) > 1 else []


def _columns(lines: list[list[str]]) -> str:
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    text = [
        " | ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True))
        for line in lines
    ]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def table(results: dict[str, Any]) -> str:
    head = ["scenario", "unit", "gateway", "baseline", "gateway vs baseline",
            "per server CPU-s (gw / base)", "delivered (gw)", "delivered (base)",
            "target"]  # fmt: skip
    lines = [head]
    c = results.get("ceiling")
    if c is not None:
        lines.append(["load client ceiling", c["unit"], _fmt(c), "", "", "", _loss(c), "", ""])
    for row in rows(results):
        gw, bl = row["gateway"], row["baseline"]
        floor = _floor(results, row)
        if floor is not None:
            lines.append([floor["scenario"], floor["unit"], _fmt(floor), "", "", "",
                          _loss(floor), "", ""])  # fmt: skip
        per_cpu = f"{_per_cpu(gw)} / {_per_cpu(bl)}"
        lines.append([gw["scenario"], gw["unit"], _fmt(gw), _fmt(bl), _ratio(row), per_cpu,
                      _loss(gw), _loss(bl), row["target"]])  # fmt: skip
    text = _columns(lines)
    where = breakdown(results)
    if where:
        text += "\n\nWhere the latency goes (ms; medians over messages):\n" + _columns(where)
    return text


def markdown(results: dict[str, Any], chart: str) -> str:
    m = results["machine"]
    out = [
        f"Run: `{results['command']}` ({results['mode']} sizes), {m['date']}"
        + (f"; medians of {len(results['runs'])} runs." if results.get("runs") else "."),
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
        f"uvloop {m['uvloop']}, websockets {m['websockets']}, redis-server {m['redis']}; "
        f"load average {m['loadavg']} at start (the machine is shared with other work, "
        "so figures move by some percent from run to run).",
        "",
        *[f"Note: {note}." for note in results.get("notes", [])],
        "",
        "| scenario | gateway | baseline | gateway vs baseline | per server CPU-s (gateway / "
        "baseline) | delivered (gateway / baseline) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    c = results["ceiling"]
    out.append(f"| load client ceiling ({c['unit']}) | {_fmt(c)} | | | | {_loss(c)} | |")
    for row in rows(results):
        gw, bl = row["gateway"], row["baseline"]
        floor = _floor(results, row)
        if floor is not None:
            name = f"{floor['scenario']} ({floor['unit']})"
            out.append(f"| {name} | {_fmt(floor)} | | | | {_loss(floor)} | |")
        out.append(
            f"| {gw['scenario']} ({gw['unit']}) | {_fmt(gw)} | {_fmt(bl)} | {_ratio(row)} "
            f"| {_per_cpu(gw)} / {_per_cpu(bl)} | {_loss(gw)} / {_loss(bl)} | {row['target']} |"
        )
    where = breakdown(results)
    if where:
        out += ["", "Where the sustained latency goes (ms; medians over messages):", ""]
        out += ["| " + " | ".join(where[0]) + " |", "|" + "---|" * len(where[0])]
        out += ["| " + " | ".join(line) + " |" for line in where[1:]]
    out += ["", f"![throughput, latency and memory, gateway vs baseline]({chart})"]
    return "\n".join(out)


def write_docs(results: dict[str, Any], doc: Path, png: Path) -> None:
    """Regenerate the chart and the results block of docs/benchmarks.md."""
    chart(results, png)
    block = f"{BEGIN}\n{markdown(results, png.name)}\n{END}"
    text = doc.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _m: block, text))


def chart(results: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table_rows = rows(results)
    panels = [
        (
            "throughput (deliveries/s)",
            [r for r in table_rows if r["gateway"]["unit"] == "deliveries/s"],
        ),
        ("sustained latency p99 (ms)", [r for r in table_rows if r["gateway"]["unit"] == "ms p99"]),
        (
            "idle memory (KiB per connection)",
            [r for r in table_rows if r["gateway"]["unit"] == "KiB/conn"],
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (title, selected) in zip(axes, panels, strict=True):
        labels = [r["gateway"]["scenario"].replace(" (", "\n(") for r in selected]
        xs = range(len(selected))
        gw = [r["gateway"]["value"] for r in selected]
        bl = [r["baseline"]["value"] if r["baseline"] else 0 for r in selected]
        ax.bar([x - 0.2 for x in xs], gw, 0.4, label="notify-gateway")
        ax.bar([x + 0.2 for x in xs], bl, 0.4, label="baseline (websockets.broadcast)")
        if title.startswith("sustained"):
            floors = [_floor(results, r) for r in selected]
            ax.scatter(
                list(xs), [f["value"] if f else math.nan for f in floors],
                color="grey", marker="_", s=1600, label="load client latency floor",
            )  # fmt: skip
        if title.startswith("throughput"):
            ax.axhline(
                results["ceiling"]["value"], color="grey", ls="--", label="load client ceiling"
            )
        if not title.startswith("idle"):
            ax.set_yscale("log")  # the baseline is one to two orders of magnitude away
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
