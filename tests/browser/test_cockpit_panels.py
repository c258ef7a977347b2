"""The cockpit's panels, designer and command palette in a real Chromium against real nodes: every panel
loads without console errors, the devices panel lists the cluster's members, the artifact viewer shows
code as text, the palette switches views, the designer builds a three-step DAG with the mouse that the
define API accepts and that runs to SUCCESS (undo/redo restoring the canvas on the way), and applying a
suggestion from a DAG's measured history defines a new version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarm.apiclient import ApiClient
from tests.browser.test_cockpit import _api_url, _open, _select_dag, _shots, _swarm, _token
from tests.integration.nodes import Cluster, running

pytestmark = pytest.mark.network

#: A chain whose middle step dominates: after five runs, analytics suggests splitting it.
SLOW_DAG: dict[str, Any] = {
    "dagId": "cockpit-slow",
    "name": "慢步骤",
    "version": "1.0.0",
    "nodes": [
        _swarm("prepare", "准备", "echo", {"step": "prepare"}),
        _swarm("crunch", "计算", "sleep", {"seconds": 2.0}),
        _swarm("publish", "发布", "echo", {"step": "publish"}),
    ],
    "edges": [{"from": "prepare", "to": "crunch"}, {"from": "crunch", "to": "publish"}],
}

#: Code with markup in it: the viewer must show it as text.
ARTIFACT_CODE = 'def run(**inputs):\n    """<b>not bold</b>"""\n    return {"ok": True}\n'


@pytest.fixture(scope="module")
def trio(mosquitto_module: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cockpit-panels")
    with running(root, mosquitto_module, ["a", "b"]) as cluster:  # type: ignore[arg-type]
        yield cluster


def _press_palette(page: Any, query: str) -> None:
    page.keyboard.press("Control+k")
    page.wait_for_selector("#palette:not([hidden]) input")
    page.fill("#palette input", query)
    page.keyboard.press("Enter")
    page.wait_for_selector("#palette", state="hidden")


def _centre(page: Any, selector: str) -> tuple[float, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def _doc(page: Any) -> dict[str, Any]:
    doc: dict[str, Any] = page.evaluate("JSON.parse(JSON.stringify(window.__cockpit.designer.doc))")
    return doc


def test_panels_load_clean_list_the_members_and_show_code_as_text(
    trio: Cluster, browser: Any, tmp_path: Path
) -> None:
    url, token = _api_url(trio), _token(trio)
    api = ApiClient(url, token)
    source = tmp_path / "tagger.py"
    source.write_text(ARTIFACT_CODE)
    api.push_artifact(source, "tagger", "1.0.0", "python")
    page, console = _open(browser, url, token)
    try:
        page.keyboard.press("2")
        assert page.evaluate("window.__cockpit.view") == "devices"
        page.wait_for_function(
            "document.querySelectorAll('#panel-devices li.device').length >= 2", timeout=10_000
        )
        members = {d["nodeId"] for d in api.devices()}
        shown = set(
            page.eval_on_selector_all("#panel-devices li.device", "els => els.map((e) => e.dataset.nodeId)")
        )
        assert shown == members and len(members) == 2, (shown, members)
        assert "2 members" in page.inner_text("#panel-devices .summary")
        assert "cores" in page.inner_text("#panel-devices li.device")
        # The heat map has one row per member: its canvas is drawn, not blank.
        painted = page.evaluate(
            """() => { const c = document.querySelector('#panel-devices canvas.heatmap');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 30) lit++;
                       return {rows: c.height, lit}; }"""
        )
        assert painted["lit"] > 0, painted
        page.screenshot(path=str(_shots(tmp_path) / "cockpit-devices.png"))

        page.keyboard.press("4")
        page.click('#panel-artifacts li[data-name="tagger"] button.version')
        page.wait_for_function(
            "document.querySelector('#panel-artifacts pre.code').textContent.includes('def run')"
        )
        assert page.inner_text("#panel-artifacts pre.code").strip() == ARTIFACT_CODE.strip()
        assert page.locator("#panel-artifacts pre.code b").count() == 0, "code must never become markup"

        for key, panel in (("1", "monitor"), ("3", "suggestions"), ("3", "history"), ("3", "mapreduce")):
            page.keyboard.press(key)
            assert page.is_visible(f"#panel-{panel}"), panel
        assert "queue:" in page.inner_text("#panel-monitor .queue")
        assert console.errors == [], console.errors
    finally:
        page.close()


def test_the_command_palette_switches_views(trio: Cluster, browser: Any) -> None:
    page, console = _open(browser, _api_url(trio), _token(trio))
    try:
        _press_palette(page, "show devices")
        assert page.evaluate("window.__cockpit.view") == "devices"
        assert page.is_visible("#panel-devices") and not page.is_visible("#panel-monitor")
        before = page.evaluate("window.__cockpit.cockpit.universe.mode")
        _press_palette(page, "toggle 2d")
        assert page.evaluate("window.__cockpit.cockpit.universe.mode") != before
        _press_palette(page, "designer")
        assert page.is_visible("#designer") and not page.is_visible("#panel-devices")
        # Arrows choose among matches; Escape closes without running anything.
        page.keyboard.press("Control+k")
        page.fill("#palette input", "show")
        assert page.locator("#palette li[data-command]").count() >= 5
        page.keyboard.press("Escape")
        assert page.evaluate("window.__cockpit.view") == "designer"
        # A spoken phrase takes the same path (the Web Speech API hands the palette its transcript).
        assert page.evaluate("window.__cockpit.palette.runPhrase('please show the monitor')")
        assert page.evaluate("window.__cockpit.view") == "monitor"
        assert console.errors == [], console.errors
    finally:
        page.close()


def _draw_three_echo_steps(page: Any) -> None:
    """Drag three echo steps onto the canvas and chain them with the mouse; a back edge is flagged."""
    canvas = page.locator("#designer .d-canvas").bounding_box()
    assert canvas is not None
    item = _centre(page, '#designer .lib-item[data-template="echo"]')
    for k in range(3):
        _drag(page, item, (canvas["x"] + 120 + 220 * k, canvas["y"] + 90 + 40 * k))
    ids = [n["nodeId"] for n in _doc(page)["nodes"]]
    assert ids == ["echo", "echo2", "echo3"], ids
    for a, b in (("echo", "echo2"), ("echo2", "echo3")):
        _drag(
            page,
            _centre(page, f'#designer .d-node[data-node-id="{a}"] .d-port'),
            _centre(page, f'#designer .d-node[data-node-id="{b}"] .title'),
        )
    assert [(e["from"], e["to"]) for e in _doc(page)["edges"]] == [("echo", "echo2"), ("echo2", "echo3")]
    # A back edge would close a cycle: the live check marks the steps on it.
    _drag(
        page,
        _centre(page, '#designer .d-node[data-node-id="echo3"] .d-port'),
        _centre(page, '#designer .d-node[data-node-id="echo"] .title'),
    )
    page.wait_for_selector('#designer .d-node[data-node-id="echo"].has-issues')
    assert "cycle" in page.get_attribute('#designer .d-node[data-node-id="echo"]', "title")
    page.keyboard.press("Control+z")
    assert page.locator("#designer .d-node.has-issues").count() == 0


def _undo_and_redo(page: Any) -> None:
    """Edit a step's params, undo two changes, redo them: the document and the canvas come back."""
    page.click('#designer .d-node[data-node-id="echo2"] .title')
    page.fill('#designer .d-side textarea[name="params"]', '{"step": "middle"}')
    page.fill('#designer .d-side input[name="cpuCores"]', "1")  # leaving the textarea applies it
    built = _doc(page)
    assert built["nodes"][1]["taskDefinition"]["params"] == {"step": "middle"}

    page.click("#designer .d-canvas", position={"x": 20, "y": 400})
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    undone = _doc(page)
    assert undone["nodes"][1]["taskDefinition"]["params"] == {}
    assert len(undone["edges"]) == 1
    assert page.locator("#designer svg path.edge").count() == 1
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Control+Shift+z")
    assert _doc(page) == built
    assert page.locator("#designer svg path.edge").count() == 2


def test_the_designer_builds_a_dag_that_the_api_accepts_and_runs(
    trio: Cluster, browser: Any, tmp_path: Path
) -> None:
    url, token = _api_url(trio), _token(trio)
    api = ApiClient(url, token)
    page, console = _open(browser, url, token)
    try:
        _press_palette(page, "show designer")
        page.wait_for_selector('#designer .lib-item[data-template="echo"]')
        _draw_three_echo_steps(page)
        _undo_and_redo(page)

        page.fill('#designer input[name="dagId"]', "designed-echo")
        page.fill('#designer input[name="name"]', "设计的管道")
        page.keyboard.press("Tab")
        page.screenshot(path=str(_shots(tmp_path) / "cockpit-designer.png"))
        page.click("#designer button.save")
        page.wait_for_selector("#designer .define-result[data-status]")
        assert page.get_attribute("#designer .define-result", "data-status") == "CREATED", page.inner_text(
            "#designer .define-result"
        )
        assert page.input_value('#designer input[name="version"]') == "1.0.1", (
            "the next save is a new version"
        )
        defined = api.dag("designed-echo")["definition"]
        assert [n["nodeId"] for n in defined["nodes"]] == ["echo", "echo2", "echo3"]
        assert defined["name"] == "设计的管道"
        run = api.wait(api.run("designed-echo")["runId"], timeout=60)
        assert run["state"] == "SUCCESS", run
        assert sorted(n["nodeId"] for n in run["nodes"]) == ["echo", "echo2", "echo3"]
        assert console.errors == [], console.errors
    finally:
        page.close()


def test_applying_a_suggestion_defines_a_new_version(trio: Cluster, browser: Any) -> None:
    url, token = _api_url(trio), _token(trio)
    api = ApiClient(url, token)
    assert api.define(SLOW_DAG)["validationResults"]["isValid"]
    started = [api.run("cockpit-slow")["runId"] for _ in range(5)]
    for run_id in started:
        assert api.wait(run_id, timeout=60)["state"] == "SUCCESS"
    suggestions = api.analytics("cockpit-slow")["suggestions"]
    split = [
        s
        for s in suggestions
        if s["nodeId"] == "crunch" and s["action"] in ("SPLIT_BY_KEY", "INCREASE_PARALLELISM")
    ]
    assert split, suggestions
    page, console = _open(browser, url, token)
    try:
        _select_dag(page, "cockpit-slow")
        page.keyboard.press("3")
        button = (
            f'#panel-suggestions li[data-node-id="crunch"][data-action="{split[0]["action"]}"] button.apply'
        )
        page.wait_for_selector(button, timeout=10_000)
        # The history panel has the five runs: a trend per step and their success rate.
        page.wait_for_selector('#panel-history tr[data-node-id="crunch"] canvas.spark')
        assert "5 runs" in page.inner_text("#panel-history")
        page.click(button)
        page.wait_for_selector('#panel-suggestions .define-result[data-status="CREATED"]', timeout=10_000)
        assert page.get_attribute("#panel-suggestions .define-result", "data-version") == "1.0.1"
        applied = api.dag("cockpit-slow", "1.0.1")["definition"]
        crunch = next(n for n in applied["nodes"] if n["nodeId"] == "crunch")
        assert crunch["executionConfig"]["parallelism"] > 1, crunch
        page.wait_for_function("window.__cockpit.cockpit.graph.version === '1.0.1'")
        assert console.errors == [], console.errors
    finally:
        page.close()


def test_the_palette_opens_a_run_and_the_monitor_streams_its_steps(trio: Cluster, browser: Any) -> None:
    url, token = _api_url(trio), _token(trio)
    api = ApiClient(url, token)
    page, console = _open(browser, url, token)
    try:
        api.define(SLOW_DAG)  # the same body again: accepted, nothing changes
        run_id = api.run("cockpit-slow", version="1.0.0")["runId"]
        page.wait_for_function(
            "(id) => (window.__cockpit.cockpit.runs || []).some((r) => r.runId === id)",
            arg=run_id,
            timeout=10_000,
        )
        _press_palette(page, f"open run {run_id}")
        page.wait_for_function("(id) => window.__cockpit.cockpit.selectedRunId === id", arg=run_id)
        deadline = time.monotonic() + 30
        while "crunch" not in page.inner_text("#panel-monitor .task-stream") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "crunch" in page.inner_text("#panel-monitor .task-stream")
        api.wait(run_id, timeout=60)
        page.wait_for_selector(f'#panel-monitor li.SUCCESS[data-run-id="{run_id}"]', timeout=10_000)
        assert (
            page.get_attribute(f'#panel-monitor li[data-run-id="{run_id}"] .energy', "aria-valuenow") == "100"
        )
        assert console.errors == [], console.errors
    finally:
        page.close()
