"""The bench's one table (text or Markdown), its JSON record and its chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .workload import CASES

HANDSHAKE_TARGETS_MS = {"paced": 15.0, "burst": 100.0}
BIG_BODY_TARGETS = {"time": 1.5, "growth": 4.0}
JOSE_TARGET = 2.0
X = "\u00d7"  # the multiplication sign, in every ratio
HEADERS = ("case", "req/s", "p50", "p99", f"{X} plain", f"{X} floor", "target", "met", "peak RSS")


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _mib(value: float) -> str:
    return f"{value / (1024 * 1024):.0f} MiB"


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table's rows, every cell a string."""
    table: list[tuple[str, ...]] = []
    plain = results["plain"]
    table.append(
        (
            "plain 1 KB JSON",
            f"{plain['rate']:.0f}",
            _ms(plain["p50_ms"]),
            _ms(plain["p99_ms"]),
            "1.00",
            "",
            "",
            "",
            _mib(plain["peak_rss"]),
        )
    )
    for spec in CASES:
        case = results["cases"][spec.name]
        floor = "" if spec.rsa_ops == 0 else f"{case['ratio_floor']:.2f}"
        ops = {0: "", 1: ", 1 RSA op", 2: ", 2 RSA ops"}[spec.rsa_ops]
        table.append(
            (
                f"{spec.name}{ops}",
                f"{case['rate']:.0f}",
                _ms(case["p50_ms"]),
                _ms(case["p99_ms"]),
                f"{case['ratio_plain']:.2f}",
                floor,
                f"≥ {spec.target:.2f}{X} {spec.target_of}",
                _met(case["met"]),
                _mib(case["peak_rss"]),
            )
        )
    for kind, label in (("paced", "paced, 16 clients"), ("burst", "burst of 16")):
        shake = results["handshake"][kind]
        table.append(
            (
                f"handshake, {label}",
                "",
                _ms(shake["p50_ms"]),
                _ms(shake["p99_ms"]),
                "",
                "",
                f"p99 ≤ {HANDSHAKE_TARGETS_MS[kind]:.0f} ms",
                _met(shake["met"]),
                "",
            )
        )
    big = results["big_body"]
    table.append(
        (
            "10 MB J vs plain: time",
            "",
            _ms(big["j_seconds"] * 1000),
            "",
            f"{big['time_ratio']:.2f}{X} time",
            "",
            f"≤ {BIG_BODY_TARGETS['time']}{X} time",
            _met(big["time_ratio"] <= BIG_BODY_TARGETS["time"]),
            "",
        )
    )
    table.append(
        (
            "10 MB J: worker RSS growth",
            "",
            "",
            "",
            f"{big['j_growth']:.2f}{X} body",
            "",
            f"≤ {BIG_BODY_TARGETS['growth']:.0f}{X} body",
            _met(big["j_growth"] <= BIG_BODY_TARGETS["growth"]),
            f"plain {big['plain_growth']:.2f}{X} body",
        )
    )
    for size, timing in results["jose"].items():
        ours = timing["flask-hybrid"]
        table.append(
            (
                f"J open+seal {size}, in process",
                f"{1 / ours:.0f}",
                f"{ours * 1e6:.0f} µs",
                "",
                f"{timing['joserfc'] / ours:.2f}{X} joserfc",
                f"{timing['jwcrypto'] / ours:.2f}{X} jwcrypto",
                f"≥ {JOSE_TARGET:.0f}{X} joserfc",
                _met(timing["joserfc"] / ours >= JOSE_TARGET),
                "",
            )
        )
    return table


def text_table(results: dict[str, Any]) -> str:
    """The table for a terminal."""
    body = rows(results)
    widths = [max(len(row[i]) for row in (HEADERS, *body)) for i in range(len(HEADERS))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADERS), rule, *(line(row) for row in body)])


def markdown_table(results: dict[str, Any]) -> str:
    """The same table in Markdown, for docs/performance.md."""
    body = rows(results)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in body]
    return "\n".join(lines)


def footnote(results: dict[str, Any]) -> str:
    """One line saying how the table was made."""
    settings = results["settings"]
    order = (
        "one plain run before all the cases (smoke run)"
        if settings.get("quick")
        else "each case right after its own plain run"
    )
    return (
        f"{settings['rounds']} round(s) of {settings['duration']} s a case, {order}; "
        f"medians. gunicorn {settings['workers']} gthread workers {X} "
        f"{settings['threads']} threads, wrk {settings['wrk_threads']} threads {X} "
        f"{settings['connections']} connections, Redis store, key pool "
        f"{settings['key_pool_size']}; t_rsa = {results['t_rsa_ms']:.2f} ms (RSA-2048 "
        f"private op, this process); {results['machine']['cpus']} CPUs; commit "
        f"{results['machine']['commit']}."
    )


def save_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def chart(results: dict[str, Any], path: Path) -> None:
    """Bars of each ratio with its target; the handshakes' p50/p99 against theirs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    values: list[float] = []
    targets: list[float] = []
    for spec in CASES:
        case = results["cases"][spec.name]
        ratio = case["ratio_floor"] if spec.target_of == "floor" else case["ratio_plain"]
        labels.append(f"{spec.name}\n({X} {spec.target_of})")
        values.append(ratio)
        targets.append(spec.target)
    big = results["big_body"]
    labels.append("10 MB J\n(plain time ÷ J time)")
    values.append(1 / big["time_ratio"])
    targets.append(1 / BIG_BODY_TARGETS["time"])
    labels.append(f"10 MB J\n(4{X} body ÷ growth)")
    values.append(BIG_BODY_TARGETS["growth"] / big["j_growth"] if big["j_growth"] else 0.0)
    targets.append(1.0)
    for size, timing in results["jose"].items():
        labels.append(f"J {size} in process\n(÷ joserfc/2)")
        values.append(timing["joserfc"] / timing["flask-hybrid"] / JOSE_TARGET)
        targets.append(1.0)

    figure, (ratios, shakes) = plt.subplots(
        1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [4, 1]}
    )
    positions = list(range(len(values)))
    colours = ["#2a7" if v >= t else "#d54" for v, t in zip(values, targets, strict=True)]
    ratios.bar(positions, values, color=colours, width=0.6)
    for x, target in zip(positions, targets, strict=True):
        ratios.hlines(target, x - 0.4, x + 0.4, colors="black", linewidth=2)
    for x, value in zip(positions, values, strict=True):
        ratios.text(x, value + 0.02, f"{value:.2f}", ha="center", fontsize=8)
    ratios.set_xticks(list(positions), labels, fontsize=7)
    ratios.set_ylabel("measured ratio (higher is better); black line: target")
    ratios.set_title("flask-hybrid bench: each case against plain, its floor or its reference")
    ratios.set_ylim(0, max(1.2, max(values) * 1.15))

    kinds = ("paced", "burst")
    p50 = [results["handshake"][kind]["p50_ms"] for kind in kinds]
    p99 = [results["handshake"][kind]["p99_ms"] for kind in kinds]
    shakes.bar([0, 2], p50, width=0.7, label="p50", color="#79c")
    shakes.bar([0.8, 2.8], p99, width=0.7, label="p99", color="#357")
    for middle, kind in ((0.8, "paced"), (2.8, "burst")):
        target = HANDSHAKE_TARGETS_MS[kind]
        shakes.hlines(target, middle - 0.5, middle + 0.5, colors="black", linewidth=2)
    shakes.set_yscale("log")
    shakes.set_xticks([0.4, 2.4], ["paced, 16", "burst of 16"])
    shakes.set_ylabel("handshake latency, ms (log); black: p99 target")
    shakes.legend(fontsize=8)
    shakes.set_title("handshakes")
    figure.text(0.01, 0.01, footnote(results), fontsize=7)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
