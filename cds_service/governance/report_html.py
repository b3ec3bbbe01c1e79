"""The alert-burden report as one self-contained HTML file: a summary table, then per rule its charts.

Charts are inline SVG drawn by matplotlib (the optional ``report`` extra: ``pip install '.[report]'``),
text kept as text; there is no script, no stylesheet or font from elsewhere, so the file opens offline, in a
mail client or from a shared drive, and reads the same without JavaScript. Every chart has its figures as
a table under it (in a ``<details>`` element, which needs no script). EHR text (override reason displays)
is escaped like everything else.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime

from cds_service.governance.burden import Burden, Counts, RuleBurden

BLUE, ORANGE, VERMILLION, GREEN, GREY = "#0072B2", "#E69F00", "#D55E00", "#009E73", "#6b6b6b"  # Okabe-Ito
TOP_REASONS = 5
MISSING_LIBRARY = ("the HTML report draws its charts with matplotlib, which is not installed: "
                   "pip install '.[report]'")


class ReportUnavailable(RuntimeError):
    """The plotting library is missing; the message says how to install it."""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


# ----------------------------------------------------------------------------------------------- charts
def _figure(width: float = 7.2, height: float = 2.8, ncols: int = 1):
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        raise ReportUnavailable(MISSING_LIBRARY) from exc
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(1, ncols)


def _svg(fig, label: str) -> str:
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "cds-service-report",
                                "text.parse_math": False}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return text.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)


def _style(ax, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _version_marks(ax, rule: RuleBurden, weeks) -> None:
    from cds_service.governance.burden import week_of

    for v in rule.versions[1:]:
        if v.start is None:
            continue
        x = weeks.index(week_of(v.start)) if week_of(v.start) in weeks else None
        if x is None:
            continue
        ax.axvline(x - 0.5, color=GREY, linestyle=":", linewidth=1.2)
        what = f": {'; '.join(v.changes)}" if v.changes else ""
        ax.annotate(f"version {v.version[:7]}{what}", (x - 0.45, 1.0), xycoords=("data", "axes fraction"),
                    va="top", fontsize=8, color=GREY)


def _week_axis(ax, weeks) -> None:
    ax.set_xticks(range(len(weeks)), [w.strftime("%d %b") for w in weeks], rotation=0, fontsize=8)
    if len(weeks) > 14:
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % 2 == 0)
    ax.set_xlabel("week starting (Monday, UTC)")


def burden_chart(rule: RuleBurden, weeks) -> str:
    fig, ax = _figure()
    xs = list(range(len(weeks)))
    shown = [rule.weeks.get(w, Counts()).shown_per_100 for w in weeks]
    shadow = [rule.weeks.get(w, Counts()).shadow_per_100 for w in weeks]
    if any(rule.weeks.get(w, Counts()).shown for w in weeks) or rule.mode != "shadow":
        ax.plot(xs, [v if v is not None else float("nan") for v in shown], marker="o", color=BLUE,
                label="cards shown")
    if any(rule.weeks.get(w, Counts()).shadow for w in weeks):
        ax.plot(xs, [v if v is not None else float("nan") for v in shadow], marker="s", color=ORANGE,
                linestyle="--", label="shadow firings (not shown)")
    ax.set_ylim(bottom=0)
    _week_axis(ax, weeks)
    _style(ax, "per 100 relevant orders")
    _version_marks(ax, rule, weeks)
    fig.legend(loc="outside upper center", fontsize=8, frameon=False, ncols=2)
    return _svg(fig, f"{rule.rule}: cards and shadow firings per 100 relevant orders, by week")


def rates_chart(rule: RuleBurden, weeks) -> str:
    fig, ax = _figure()
    xs = list(range(len(weeks)))
    for label, color, value, ci in (("overridden", VERMILLION, "override_rate", "override_ci"),
                                    ("accepted", GREEN, "acceptance_rate", "acceptance_ci")):
        ys, lo, hi = [], [], []
        for w in weeks:
            c = rule.weeks.get(w, Counts())
            v, interval = getattr(c, value), getattr(c, ci)
            ys.append(100 * v if v is not None else float("nan"))
            lo.append(100 * interval[0] if interval else float("nan"))
            hi.append(100 * interval[1] if interval else float("nan"))
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.plot(xs, ys, marker="o", color=color, label=f"{label} (band: 95 % Wilson interval)")
    ax.set_ylim(0, 100)
    _week_axis(ax, weeks)
    _style(ax, "% of cards shown")
    _version_marks(ax, rule, weeks)
    fig.legend(loc="outside upper center", fontsize=8, frameon=False, ncols=2)
    return _svg(fig, f"{rule.rule}: acceptance and override rates by week with 95 % intervals")


def reasons_chart(rule: RuleBurden) -> str:
    top = rule.reasons.most_common(TOP_REASONS)
    fig, ax = _figure(height=max(1.6, 0.6 + 0.42 * len(top)))
    labels = [_reason_label(rule, code) for code, _n in top][::-1]
    counts = [n for _code, n in top][::-1]
    ax.barh(range(len(top)), counts, color=VERMILLION, height=0.6)
    ax.set_yticks(range(len(top)), labels, fontsize=8)
    for i, n in enumerate(counts):
        ax.annotate(str(n), (n, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    _style(ax, "")
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("overridden cards")
    return _svg(fig, f"{rule.rule}: top override reasons")


def _reason_label(rule: RuleBurden, code: str) -> str:
    display = rule.reason_displays.get(code)
    label = f"{code} ({display})" if display else code
    return label if len(label) <= 60 else label[:57] + "…"


def versions_chart(rule: RuleBurden) -> str:
    fig, (ax, ax2) = _figure(ncols=2)
    names = [f"{v.version[:7]}\nfrom {v.start:%d %b}" if v.start else v.version[:7] for v in rule.versions]
    xs = list(range(len(rule.versions)))
    per100 = [v.counts.shown_per_100 or 0.0 for v in rule.versions]
    ax.bar(xs, per100, color=BLUE, width=0.55)
    for x, v in zip(xs, per100, strict=True):
        ax.annotate(f"{v:.1f}", (x, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(xs, names, fontsize=8)
    _style(ax, "cards per 100 relevant orders")
    for offset, color, value, ci, label in ((-0.18, VERMILLION, "override_rate", "override_ci", "overridden"),
                                            (0.18, GREEN, "acceptance_rate", "acceptance_ci", "accepted")):
        ys, err = [], [[], []]
        for v in rule.versions:
            r, interval = getattr(v.counts, value), getattr(v.counts, ci)
            ys.append(100 * r if r is not None else 0.0)
            err[0].append(100 * (r - interval[0]) if interval else 0.0)
            err[1].append(100 * (interval[1] - r) if interval else 0.0)
        ax2.bar([x + offset for x in xs], ys, width=0.34, color=color, yerr=err, capsize=3,
                error_kw={"elinewidth": 1, "ecolor": "#333333"}, label=label)
    ax2.set_xticks(xs, names, fontsize=8)
    ax2.set_ylim(0, 100)
    _style(ax2, "% of cards shown (95 % interval)")
    fig.legend(loc="outside upper center", fontsize=8, frameon=False, ncols=2)
    return _svg(fig, f"{rule.rule}: before and after each version change")


# ----------------------------------------------------------------------------------------------- page
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2rem auto;max-width:64rem;
padding:0 1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.5rem;border-bottom:1px solid #ccc}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .45rem}
th{background:#f2f2f2;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#444;font-size:.9rem}.mode-shadow{color:#8a5a00;font-weight:600}.mode-off{color:#666}
figure{margin:.6rem 0 1rem}figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#333}
details{font-size:.85rem;margin:.2rem 0 1rem}.note{font-size:.85rem;color:#333;max-width:50rem}
"""


def render(burden: Burden, *, title: str = "Alert burden and override report", source: str = "",
           rules_file: str | None = None, generated_at: datetime | None = None) -> str:
    generated_at = generated_at or datetime.now(UTC)
    period = (f"{burden.weeks[0]:%d %b %Y} to {burden.weeks[-1]:%d %b %Y} (weeks starting)"
              if burden.weeks else "no hook calls in the period")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Period: {_e(period)}. Hooks: {_e(", ".join(burden.hooks))}. '
        f"Hook calls recorded: {burden.calls} ({burden.calls_refused} refused, not counted). "
        f"Rule modes: {_e(rules_file or 'every rule on (no CDS_RULES_FILE)')}. "
        f"Data: {_e(source)}. Generated {generated_at:%Y-%m-%d %H:%M} UTC.</p>",
        _how_to_read(),
        "<h2 id=\"summary\">Summary</h2>",
        _summary_table(burden),
    ]
    for rule in burden.rules:
        parts.append(_rule_section(rule, burden.weeks))
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _how_to_read() -> str:
    return (
        '<p class="note"><strong>How to read this.</strong> "Relevant orders" are the orders a rule could fire '
        "on: immune globulin orders for the IVIG safety and dose rules, ladder-drug and immune globulin orders "
        "for the stage, ladder and indication rules, counted in every hook call answered on an order hook. "
        "<em>Shadow firings</em> are cards a rule in shadow (silent) mode computed and logged but did not show. "
        "Acceptance and override rates are shares of the cards shown, with 95 % Wilson intervals; cards "
        "without feedback stay in the denominator, so both rates are lower bounds when an EHR does not send "
        "feedback for every card. A dotted line marks a new version of the rule (its card text, thresholds or "
        "value sets changed; <code>cds-service rules</code> says what).</p>"
    )


def _summary_table(burden: Burden) -> str:
    head = ("<tr><th>Rule</th><th>Mode</th><th>Versions</th><th>Relevant orders</th><th>Cards shown</th>"
            "<th>per 100 orders</th><th>Shadow firings</th><th>per 100 orders</th><th>Accepted % (95 % CI)</th>"
            "<th>Overridden % (95 % CI)</th><th>Top override reason</th></tr>")
    rows = []
    for r in burden.rules:
        t = r.total
        top = r.reasons.most_common(1)
        reason = f"{_e(_reason_label(r, top[0][0]))}: {top[0][1]}" if top else "–"
        rows.append(
            f'<tr><td><a href="#rule-{_e(r.rule)}">{_e(r.rule)}</a></td>'
            f'<td class="mode-{_e(r.mode)}">{_e(r.mode)}</td><td class="n">{len(r.versions)}</td>'
            f'<td class="n">{t.relevant_orders}</td><td class="n">{t.shown}</td>'
            f'<td class="n">{_num(t.shown_per_100)}</td><td class="n">{t.shadow}</td>'
            f'<td class="n">{_num(t.shadow_per_100)}</td>'
            f'<td class="n">{_pct(t.acceptance_rate)}{_ci(t.acceptance_ci)}</td>'
            f'<td class="n">{_pct(t.override_rate)}{_ci(t.override_ci)}</td><td>{reason}</td></tr>')
    if not rows:
        return "<p>No cards and no rule in shadow mode in this period.</p>"
    return f'<table id="summary-table">{head}{"".join(rows)}</table>'


def _rule_section(rule: RuleBurden, weeks) -> str:
    rid = _e(rule.rule)
    out = [f'<section id="rule-{rid}">',
           f'<h2>{rid} <small class="mode-{_e(rule.mode)}">({_e(rule.mode)})</small></h2>',
           f'<p class="meta">Relevant orders: {_e(rule.orders.replace("-", " "))}.</p>']
    out.append(_figure_html(f"burden-{rid}", "Cards shown and shadow firings per 100 relevant orders, by week",
                            burden_chart(rule, weeks), _weekly_table(rule, weeks)))
    if rule.total.shown:
        out.append(_figure_html(f"rates-{rid}", "Acceptance and override rates by week (95 % Wilson interval)",
                                rates_chart(rule, weeks), _rates_table(rule, weeks)))
    if rule.reasons:
        out.append(_figure_html(f"reasons-{rid}", f"Top {TOP_REASONS} override reasons",
                                reasons_chart(rule), _reasons_table(rule)))
    if len(rule.versions) > 1:
        out.append(_figure_html(f"versions-{rid}", "Before and after: each version of the rule",
                                versions_chart(rule), _versions_table(rule)))
    elif rule.versions:
        out.append(f'<p class="meta">One version in this period: {_e(rule.versions[0].version)}.</p>')
    out.append("</section>")
    return "\n".join(out)


def _figure_html(fid: str, caption: str, svg: str, table: str) -> str:
    return (f'<figure id="{fid}" class="chart"><figcaption>{_e(caption)}</figcaption>{svg}</figure>'
            f"<details><summary>Figures as a table</summary>{table}</details>")


def _weekly_table(rule: RuleBurden, weeks) -> str:
    rows = []
    for w in weeks:
        c = rule.weeks.get(w, Counts())
        rows.append(f'<tr data-week="{w.isoformat()}"><td>{w.isoformat()}</td><td class="n">{c.relevant_orders}</td>'
                    f'<td class="n">{c.shown}</td><td class="n">{_num(c.shown_per_100)}</td>'
                    f'<td class="n">{c.shadow}</td><td class="n">{_num(c.shadow_per_100)}</td></tr>')
    return ('<table class="weekly"><tr><th>Week</th><th>Relevant orders</th><th>Cards shown</th>'
            "<th>per 100</th><th>Shadow firings</th><th>per 100</th></tr>" + "".join(rows) + "</table>")


def _rates_table(rule: RuleBurden, weeks) -> str:
    rows = []
    for w in weeks:
        c = rule.weeks.get(w, Counts())
        rows.append(f'<tr><td>{w.isoformat()}</td><td class="n">{c.shown}</td><td class="n">{c.accepted}</td>'
                    f'<td class="n">{_pct(c.acceptance_rate)}{_ci(c.acceptance_ci)}</td>'
                    f'<td class="n">{c.overridden}</td>'
                    f'<td class="n">{_pct(c.override_rate)}{_ci(c.override_ci)}</td></tr>')
    return ("<table><tr><th>Week</th><th>Shown</th><th>Accepted</th><th>%</th><th>Overridden</th><th>%</th></tr>"
            + "".join(rows) + "</table>")


def _reasons_table(rule: RuleBurden) -> str:
    rows = "".join(f'<tr><td>{_e(_reason_label(rule, code))}</td><td class="n">{n}</td></tr>'
                   for code, n in rule.reasons.most_common())
    return f"<table><tr><th>Reason</th><th>Overridden cards</th></tr>{rows}</table>"


def _versions_table(rule: RuleBurden) -> str:
    rows = []
    for v in rule.versions:
        c = v.counts
        period = f"{v.start:%Y-%m-%d %H:%M}" + (f" to {v.end:%Y-%m-%d %H:%M}" if v.end else " on")
        rows.append(f'<tr data-version="{_e(v.version)}"><td><code>{_e(v.version)}</code></td><td>{_e(period)}</td>'
                    f'<td>{_e("; ".join(v.changes)) or "–"}</td><td class="n">{c.relevant_orders}</td>'
                    f'<td class="n">{c.shown}</td><td class="n">{_num(c.shown_per_100)}</td>'
                    f'<td class="n">{_pct(c.acceptance_rate)}{_ci(c.acceptance_ci)}</td>'
                    f'<td class="n">{_pct(c.override_rate)}{_ci(c.override_ci)}</td></tr>')
    return ('<table class="versions"><tr><th>Version</th><th>Active</th><th>Changed from the previous</th>'
            "<th>Relevant orders</th><th>Shown</th><th>per 100</th><th>Accepted % (95 % CI)</th>"
            "<th>Overridden % (95 % CI)</th></tr>" + "".join(rows) + "</table>")
