"""The alert-burden report on a generated history whose figures are known: every number the report
plots and tabulates equals the one planned by the generator (computed here from the plan, not from the
rows), the HTML is self-contained and shows every chart in Chromium with outside requests blocked."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from cds_service.governance import burden, demo, report_html, versions
from cds_service.store import FeedbackRow, open_store


def _figures(tmp_path, extra_feedback=()):
    async def go():
        store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
        try:
            history = await demo.fill(store)
            if extra_feedback:
                await store.record_feedback(list(extra_feedback))
            rows = await store.governance_rows(None, None)
            hist = {}
            for v in await store.rule_version_history():
                hist.setdefault(v.rule_id, []).append((v.version, v.first_seen, v.inputs))
            kinds = {r: s["orders"] for r, s in versions.rule_inputs().items()}
            return history, burden.compute(rows, modes=history.truth.modes, order_kinds=kinds, history=hist,
                                           changes_of=versions.changes)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    history, figures = _figures(tmp_path_factory.mktemp("report"))
    return history, figures, report_html.render(figures, source="test")


def _planned_per_100(truth, rule, week):
    kind = demo.PLAN[rule][0][1]
    return round(100 * (truth.shown[(rule, week)] + truth.shadow[(rule, week)]) / truth.relevant[(kind, week)], 2)


def test_alerts_per_100_ivig_orders_per_rule_per_week_match_the_plan(report):
    history, figures, _ = report
    truth = history.truth
    assert figures.weeks == truth.weeks and len(figures.weeks) == demo.WEEKS
    for rule, plan in demo.PLAN.items():
        r = figures.rule(rule)
        assert r.mode == plan[0][0]
        for week in truth.weeks:
            c = r.weeks[week]
            assert c.relevant_orders == truth.relevant[(plan[0][1], week)], (rule, week)
            assert (c.shown, c.shadow) == (truth.shown[(rule, week)], truth.shadow[(rule, week)]), (rule, week)
            assert (c.accepted, c.overridden) == (truth.accepted[(rule, week)], truth.overridden[(rule, week)])
            per_100 = c.shadow_per_100 if plan[0][0] == "shadow" else c.shown_per_100
            assert per_100 == _planned_per_100(truth, rule, week)
        assert dict(r.reasons) == truth.reasons.get(rule, {})
    # the shadow rule never showed a card but its would-be rate is there
    hyper = figures.rule("ivig.safety.hyperviscosity")
    assert hyper.total.shown == 0 and hyper.total.shadow_per_100 == pytest.approx(10.0, abs=0.6)


def test_override_rate_before_and_after_the_version_change_matches_the_plan(report):
    history, figures, _ = report
    renal = figures.rule("ivig.safety.renal")
    planned = history.truth.versions["ivig.safety.renal"]
    assert [v.version for v in renal.versions] == planned and len(planned) == 2
    change = demo.START + timedelta(weeks=demo.CHANGE_WEEK)
    assert renal.versions[1].start == change and renal.versions[0].end == change
    assert renal.versions[1].changes == ["threshold egfr_warning 60 -> 45"]
    for v in renal.versions:
        want = history.truth.by_version[("ivig.safety.renal", v.version)]
        assert v.counts.relevant_orders == want["relevant"]
        assert (v.counts.shown, v.counts.overridden, v.counts.accepted) == (
            want["shown"], want["overridden"], want["accepted"])
        assert v.counts.override_rate == round(want["overridden"] / want["shown"], 4)
    before, after = renal.versions
    assert before.counts.override_rate == pytest.approx(0.60, abs=0.01)
    assert after.counts.override_rate == pytest.approx(0.30, abs=0.01)
    # the intervals do not overlap: the committee can call it a real drop
    assert after.counts.override_ci[1] < before.counts.override_ci[0]
    for rule in demo.PLAN:  # rules that do not read the threshold kept their single version
        if rule != "ivig.safety.renal":
            assert len(figures.rule(rule).versions) == 1


def test_wilson_interval():
    assert burden.wilson(0, 0) is None
    lo, hi = burden.wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = burden.wilson(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775


def _cells(table_html: str) -> list[list[str]]:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table_html, re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in rows if "<td" in r]


def _section(page: str, rule: str) -> str:
    start = page.index(f'<section id="rule-{rule}">')
    return page[start:page.index("</section>", start)]


def test_the_html_states_the_planned_figures_summary_first(report):
    history, figures, page = report
    truth = history.truth
    assert page.index('id="summary-table"') < page.index("<figure")
    summary = {row[0]: row for row in _cells(page[page.index('id="summary-table"'):page.index("</table>",
                                                                                       page.index('id="summary-table"'))])}
    assert set(summary) == set(demo.PLAN)
    assert summary["ivig.safety.hyperviscosity"][1] == "shadow"
    section = _section(page, "ivig.safety.renal")
    weekly = section[section.index('class="weekly"'):]
    weekly = weekly[:weekly.index("</table>")]
    for (week, orders, shown, per100, _shadow, _sp), planned in zip(_cells(weekly), truth.weeks, strict=True):
        assert week == planned.isoformat()
        assert int(orders) == truth.relevant[("immune-globulin", planned)]
        assert int(shown) == truth.shown[("ivig.safety.renal", planned)]
        assert float(per100) == pytest.approx(_planned_per_100(truth, "ivig.safety.renal", planned), abs=0.05)
    table = section[section.index('class="versions"'):]
    rows = _cells(table[:table.index("</table>")])
    for row, version in zip(rows, truth.versions["ivig.safety.renal"], strict=True):
        want = truth.by_version[("ivig.safety.renal", version)]
        assert row[0] == version
        assert row[-1].startswith(f"{100 * want['overridden'] / want['shown']:.1f} %")
    assert "threshold egfr_warning 60 -&gt; 45" in section


def test_the_html_is_self_contained_and_readable_without_script(report):
    _, figures, page = report
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "@import" not in page
    assert not re.search(r"""url\(\s*['"]?(?!#)""", page)  # only references inside the page (url(#clip))
    figures_html = re.findall(r'<figure id="([^"]+)" class="chart">.*?</figure>', page, re.S)
    # four rules shown (burden, rates, reasons), one shadow rule (burden), one before/after (renal)
    assert len(figures_html) == page.count("<svg") == 4 * 3 + 1 + 1  # every chart is an inline SVG
    for rule in demo.PLAN:
        assert f'id="burden-{rule}"' in page


def test_text_from_the_ehr_is_escaped(tmp_path):
    history, figures = _figures(tmp_path, extra_feedback=[FeedbackRow(
        card_uuid="demo-00000012", service=demo.SERVICE, outcome="overridden",
        outcome_at=datetime(2026, 6, 1, 9, 30, tzinfo=UTC), received_at=datetime(2026, 6, 1, 9, 30, tzinfo=UTC),
        reason_code="<b>x</b>", reason_display='<img src=x onerror="alert(1)">')])
    page = report_html.render(figures, source="<script>")
    assert "<img src=x" not in page and "<b>x</b>" not in page and "<script>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_report_cli_on_the_demo_history(tmp_path):
    from test_cli import clean_env, cli

    out = tmp_path / "report.html"
    result = cli("report", "--demo-history", "--html", str(out), env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Wrote" in result.stderr and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not (tmp_path / "data").exists()  # the demo never touches the service's database
    result = cli("report", "--demo-history", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "--html" in result.stderr


@pytest.mark.browser
def test_every_chart_shows_in_chromium_with_outside_requests_blocked(report, tmp_path):
    from test_preview_browser import CHROMIUM, CHROMIUM_ARGS, sync_api  # skips without Chromium

    _, _, page_html = report
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    outside: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900}, java_script_enabled=False)

            def block(route):
                if not route.request.url.startswith("file://"):
                    outside.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            context.route("**/*", block)
            page = context.new_page()
            page.goto(path.as_uri())
            charts = page.locator("figure.chart svg")
            assert charts.count() == page_html.count("<svg")
            for i in range(charts.count()):
                chart = charts.nth(i)
                chart.scroll_into_view_if_needed()
                box = chart.bounding_box()
                assert box and box["width"] > 300 and box["height"] > 120, i
                assert chart.locator("text").count() > 3  # axes labelled as text
            assert page.locator("#summary-table tr").count() == 1 + len(demo.PLAN)
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert outside == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
