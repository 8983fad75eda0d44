"""The bench's one table (text or Markdown), its JSON record and its chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .handshake import TARGETS_MS as HANDSHAKE_TARGETS_MS
from .streaming import FULL_SIZE as STREAM_FULL_SIZE
from .streaming import size_label as stream_size_label
from .workload import CASES

BIG_BODY_TARGETS = {"time": 1.5, "growth": 4.0}
JOSE_TARGET = 2.0
X = "\u00d7"  # the multiplication sign, in every ratio
LIGHT, DARK = "#8ab", "#357"  # the chart's two bar colours
HEADERS = ("case", "req/s", "p50", "p99", f"{X} plain", f"{X} floor", "target", "met", "peak RSS")


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _mib(value: float) -> str:
    return f"{value / (1024 * 1024):.0f} MiB"


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def stream_label(kind: str, size: int) -> str:
    """The row of a format H streaming transfer (``kind``: upload or download)."""
    label = f"H {stream_size_label(size)} {kind}, streamed"
    if size != STREAM_FULL_SIZE:
        label += f" (quick; full run: {stream_size_label(STREAM_FULL_SIZE)})"
    return label


def stream_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Format H's 1 GiB upload and download: time, throughput, worker RSS growth."""
    stream = results["streaming"]
    table: list[tuple[str, ...]] = []
    for kind in ("upload", "download"):
        found = stream[kind]
        table.append(
            (
                stream_label(kind, stream["size"]),
                "",
                f"{found['seconds']:.2f} s",
                "",
                f"{found['throughput'] / (1024 * 1024):.0f} MiB/s",
                "",
                f"growth ≤ {_mib(stream['growth_target'])}",
                _met(found["met"]),
                f"+{found['growth'] / (1024 * 1024):.1f} MiB",
            )
        )
    return table


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
        has_floor = spec.rsa_ops or spec.store_trip
        floor = f"{case['ratio_floor']:.2f}" if has_floor else ""
        ops = {0: "", 1: ", 1 RSA op", 2: ", 2 RSA ops"}[spec.rsa_ops]
        ops += {"": "", "set": ", 1 Redis SET", "get": ", 1 Redis GET"}[spec.store_trip]
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
    table += stream_rows(results)
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
        f"{settings['connections']} connections, Redis store"
        f"{' (replay records, limits: worker memory)' if settings.get('local_counters') else ''}"
        f", key pool "
        f"{settings['key_pool_size']}; t_rsa = {results['t_rsa_ms']:.2f} ms (RSA-2048 "
        f"private op, this process); {results['machine']['cpus']} CPUs; commit "
        f"{results['machine']['commit']}."
    )


DOC_START = "<!-- bench:table (python -m bench --update-doc rewrites this part) -->"
DOC_END = "<!-- /bench:table -->"


def update_doc(results: dict[str, Any], path: Path) -> None:
    """Put the Markdown table and its footnote between the markers in ``path``."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
    block = f"\n{markdown_table(results)}\n\n{footnote(results)}\n"
    path.write_text(text[:start] + block + text[end:], encoding="utf-8")


def save_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def chart(results: dict[str, Any], path: Path) -> None:
    """Four panels: the 1 KB cases' ratios, the handshakes, the 10 MB body and format H's
    streaming transfers, J in process.

    Each bar is a measured figure; each black line the target of that figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    figure, panels = plt.subplots(
        2, 2, figsize=(13, 8.5), gridspec_kw={"width_ratios": [3, 2], "height_ratios": [1, 1]}
    )
    cases_panel, shakes_panel = panels[0]
    big_panel, jose_panel = panels[1]

    def bars(panel: Any, x: float, value: float, colour: str) -> None:
        panel.bar(x, value, width=0.38, color=colour)
        panel.text(x, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)

    def legend(panel: Any, light: str, dark: str, where: str) -> None:
        handles = [Patch(color=LIGHT, label=light), Patch(color=DARK, label=dark)]
        panel.legend(handles=handles, fontsize=8, loc=where)

    def target(panel: Any, x: float, value: float) -> None:
        panel.hlines(value, x - 0.3, x + 0.3, colors="black", linewidth=2)

    names = [spec.name.replace(" per ", "\nper ") for spec in CASES]
    highest = 1.0
    for index, spec in enumerate(CASES):
        case = results["cases"][spec.name]
        bars(cases_panel, index - 0.2, case["ratio_plain"], LIGHT)
        highest = max(highest, case["ratio_plain"])
        if spec.rsa_ops or spec.store_trip:
            bars(cases_panel, index + 0.2, case["ratio_floor"], DARK)
            highest = max(highest, case["ratio_floor"])
        target(cases_panel, index + (0.2 if spec.target_of == "floor" else -0.2), spec.target)
    legend(
        cases_panel, f"{X} plain", f"{X} floor (plain + its store trip + its RSA ops)", "upper left"
    )
    cases_panel.set_xticks(range(len(names)), names, fontsize=8)
    cases_panel.set_ylim(0, 1.1 * highest)
    cases_panel.set_ylabel("throughput ratio (higher is better)")
    cases_panel.set_title("1 KB JSON through gunicorn; black: target", fontsize=10)

    kinds = ("paced", "burst")
    for index, kind in enumerate(kinds):
        shake = results["handshake"][kind]
        shakes_panel.bar(index - 0.2, shake["p50_ms"], width=0.38, color=LIGHT)
        shakes_panel.bar(index + 0.2, shake["p99_ms"], width=0.38, color=DARK)
        target(shakes_panel, index + 0.2, HANDSHAKE_TARGETS_MS[kind])
    legend(shakes_panel, "p50", "p99", "upper left")
    shakes_panel.set_yscale("log")
    shakes_panel.set_xticks([0, 1], ["16 clients, paced", "burst of 16"], fontsize=8)
    shakes_panel.set_ylabel("latency, ms (log; lower is better)")
    shakes_panel.set_title("handshakes; black: p99 target", fontsize=10)

    big = results["big_body"]
    bars(big_panel, 0, big["time_ratio"], DARK)
    target(big_panel, 0, BIG_BODY_TARGETS["time"])
    bars(big_panel, 1, big["j_growth"], DARK)
    bars(big_panel, 1.4, big["plain_growth"], LIGHT)
    target(big_panel, 1, BIG_BODY_TARGETS["growth"])
    stream = results["streaming"]
    budget = stream["growth_target"]
    for x, kind in ((2.3, "upload"), (2.7, "download")):
        growth = stream[kind]["growth"]
        big_panel.bar(x, growth / budget, width=0.38, color=DARK)
        big_panel.text(
            x, growth / budget, f"+{growth / 2**20:.1f} MiB", ha="center", va="bottom", fontsize=7
        )
    big_panel.hlines(1, 2.0, 3.0, colors="black", linewidth=2)
    size = stream_size_label(stream["size"])
    big_panel.set_xticks(
        [0, 1, 1.4, 2.3, 2.7],
        [
            "J time ÷ plain time",
            "J RSS growth ÷ body",
            "plain's",
            f"H {size} up:\nRSS growth ÷ {_mib(budget)}",
            "down",
        ],
        fontsize=8,
    )
    big_panel.set_ylabel("lower is better")
    big_panel.set_title(f"10 MB body; H streaming {size}; black: target", fontsize=10)

    sizes = list(results["jose"])
    for index, size in enumerate(sizes):
        timing = results["jose"][size]
        ours = timing["flask-hybrid"]
        bars(jose_panel, index - 0.2, timing["joserfc"] / ours, DARK)
        bars(jose_panel, index + 0.2, timing["jwcrypto"] / ours, LIGHT)
        target(jose_panel, index - 0.2, JOSE_TARGET)
    legend(jose_panel, "jwcrypto's time ÷ ours", "joserfc's time ÷ ours", "upper right")
    jose_panel.set_xticks(range(len(sizes)), sizes, fontsize=8)
    jose_panel.set_ylabel("higher is better")
    jose_panel.set_title("J open + seal in process (no RSA); black: target", fontsize=10)

    figure.text(0.01, 0.005, footnote(results), fontsize=7, wrap=True)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
