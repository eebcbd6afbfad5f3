"""The HTML report: its embedded data (no browser needed) and the page itself
in a real headless Chromium (Debian's chromium and chromium-driver, driven
by selenium; those tests skip when either is missing)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import fasthost
import fasthost.ctypes
from fasthost.export.html import render_html
from fasthost.export.report import format_ns

ROOT = Path(__file__).resolve().parent.parent
COS_CALLS, SQRT_CALLS, QSORT_CALLS, LABS_CALLS, FLOOR_CALLS = 250, 7, 3, 2, 5
SORTED_VALUES = 20
INJECTED = "</script><script>window.__pwned=1</script>"
HOSTILE_THREAD = "<img src=x onerror=__pwned=2>"  # within the 31 bytes a thread name keeps
INT_COMPARATOR = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
WINDOW_WIDTH = 1280
DATA = re.compile(r'<script type="application/json" id="fasthost-data">(.*?)</script>', re.S)


def _record() -> fasthost.Snapshot:
    """A known recording: real libm and libc calls through the ctypes
    adapter, qsort with a Python comparator (callbacks), a target named
    like markup, and a worker thread with a markup name and one error."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("cos", "sqrt", "floor"):
        getattr(libm, name).restype = ctypes.c_double
        getattr(libm, name).argtypes = [ctypes.c_double]
    libm = fasthost.ctypes.instrument(libm)
    libc = fasthost.ctypes.instrument(ctypes.CDLL(ctypes.util.find_library("c")))
    libc.labs.restype, libc.labs.argtypes = ctypes.c_long, [ctypes.c_long]
    labs = ctypes.cast(libc.labs, ctypes.c_void_p).value
    comparator = fasthost.ctypes.callback(INT_COMPARATOR)(lambda a, b: a[0] - b[0])

    def worker() -> None:
        for _ in range(FLOOR_CALLS):
            libm.floor(2.5)
        fasthost.enter_runtime()  # closes nothing: HOST_E_NOT_OWNER

    fasthost.register_target(labs, INJECTED)
    fasthost.start(clock="monotonic")
    try:
        for _ in range(COS_CALLS):
            libm.cos(0.5)
        for _ in range(SQRT_CALLS):
            libm.sqrt(2.0)
        for _ in range(QSORT_CALLS):
            values = (ctypes.c_int * SORTED_VALUES)(*range(SORTED_VALUES, 0, -1))
            libc.qsort(values, SORTED_VALUES, ctypes.sizeof(ctypes.c_int), comparator)
        for _ in range(LABS_CALLS):
            libc.labs(-3)
        thread = threading.Thread(target=worker, name=HOSTILE_THREAD)
        thread.start()
        thread.join()
    finally:
        fasthost.stop()
        snap = fasthost.snapshot()
        fasthost.unregister_target(labs)
    return snap


@pytest.fixture(scope="module")
def snap() -> fasthost.Snapshot:
    return _record()


HOSTILE_FILE = "</script><b>site</b>.py"
SITE_CALLS = 12


@pytest.fixture(scope="module")
def callers_page(tmp_path_factory) -> Path:
    """A page whose target has a call site in a file named like markup:
    math.cos called SITE_CALLS times from line 3 of HOSTILE_FILE, under
    the builtins capture (which records call sites)."""
    code = compile(f"import math\nfor _ in range({SITE_CALLS}):\n    math.cos(0.5)\n", HOSTILE_FILE, "exec")
    fasthost.start(clock="monotonic")
    try:
        with fasthost.capture_builtins():
            exec(code, {})
    finally:
        fasthost.stop()
    path = tmp_path_factory.mktemp("html") / "callers.html"
    fasthost.snapshot().html(path)
    return path


@pytest.fixture(scope="module")
def page(snap, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    snap.html(path)
    return path


def embedded(text: str) -> dict:
    (payload,) = DATA.findall(text)
    return json.loads(payload)


def by_symbol(data: dict) -> dict:
    return {t["symbol"]: t for t in data["targets"]}


# ---- the embedded data, no browser ------------------------------------------


def test_embedded_json_has_every_target_with_its_calls(snap, page):
    data = embedded(page.read_text(encoding="utf-8"))
    assert [(t["symbol"], t["calls"]) for t in data["targets"]] == [
        (str(r["symbol"]), int(r["calls"])) for r in snap.targets
    ]
    calls = {t["symbol"]: t["calls"] for t in data["targets"]}
    assert calls["libm.so.6!cos"] == COS_CALLS
    assert calls["libm.so.6!sqrt"] == SQRT_CALLS
    assert calls["libc.so.6!qsort"] == QSORT_CALLS
    assert calls["libm.so.6!floor"] == FLOOR_CALLS
    assert calls[INJECTED] == LABS_CALLS
    assert data["totals"] == snap.totals
    assert data["header"] == snap.report(top=0).splitlines()[: len(data["header"])]


def test_embedded_percentiles_are_the_snapshots(snap, page):
    targets = by_symbol(embedded(page.read_text(encoding="utf-8")))
    for symbol in ("libm.so.6!cos", "libc.so.6!qsort"):
        hist = snap.histogram("inclusive", target=symbol)
        summary = targets[symbol]["dist"]["summary"]
        p50, p99 = hist.quantile([0.5, 0.99])
        assert summary["p50"]["text"] == format_ns(p50)
        assert summary["p99"]["text"] == format_ns(p99)
        assert summary["max"]["ns"] == hist.max


def test_percentile_curve_rises_to_the_max_at_one_over_n(snap):
    dist = by_symbol(json.loads(json.dumps(_data(snap))))["libm.so.6!cos"]["dist"]
    spans = [x for x, _ in dist["curve"]]
    latencies = [ns for _, ns in dist["curve"]]
    assert spans[0] == 1.0
    assert spans[-1] == COS_CALLS
    assert spans == sorted(spans)
    assert latencies == sorted(latencies)
    assert latencies[-1] == snap.histogram("inclusive", target="libm.so.6!cos").max


def test_histogram_bars_hold_every_call_once(snap):
    for target in _data(snap)["targets"]:
        bins = target["dist"]["bins"]
        assert sum(count for _, _, count in bins) == target["calls"]
        assert all(low < high <= next_low for (low, high, _), (next_low, _, _) in zip(bins, bins[1:]))
        hist = snap.histogram("inclusive", target=target["symbol"])
        assert bins[0][0] <= hist.min
        assert hist.max < bins[-1][1]


def test_callbacks_under_qsort_are_its_calls_with_nested_frames(snap):
    target = by_symbol(_data(snap))["libc.so.6!qsort"]
    row = snap.targets[snap.targets["symbol"] == "libc.so.6!qsort"][0]
    callbacks = target["callbacks"]
    assert callbacks["calls_with_callbacks"] == QSORT_CALLS
    assert callbacks["nested_ns"] == int(row["total_ns"]) - int(row["exclusive_ns"]) > 0
    assert callbacks["thread_callbacks"]["n"] == snap.calls("reverse_enter") >= QSORT_CALLS * (SORTED_VALUES - 1)
    # Those calls' quantiles stay within qsort's exact extremes.
    assert int(row["min_ns"]) <= callbacks["inclusive"]["p50"]["ns"] <= callbacks["inclusive"]["p99"]["ns"]
    assert callbacks["inclusive"]["p99"]["ns"] <= int(row["max_ns"])
    assert callbacks["own"]["p99"]["ns"] <= callbacks["inclusive"]["p99"]["ns"]
    assert by_symbol(_data(snap))["libm.so.6!cos"]["callbacks"]["calls_with_callbacks"] == 0


def test_threads_show_errors_by_hresult_name(snap):
    threads = {t["name"]: t for t in _data(snap)["threads"]}
    assert threads[HOSTILE_THREAD]["errors"] == {"HOST_E_NOT_OWNER": 1}
    assert threads[HOSTILE_THREAD]["unmanaged_calls"] == FLOOR_CALLS
    assert threads["MainThread"]["errors"] == {}


def test_a_symbol_made_of_script_tags_stays_inert(snap):
    text = render_html(snap)
    blank = render_html(snap, top=0).replace(DATA.search(render_html(snap, top=0)).group(1), "")
    # The recording adds no tag: the page has exactly the template's.
    assert text.lower().count("<script") == blank.lower().count("<script") == 2
    assert text.lower().count("</script") == blank.lower().count("</script") == 2
    assert "<img" not in text
    assert INJECTED in by_symbol(embedded(text))


def test_callers_are_the_targets_call_sites(callers_page):
    text = callers_page.read_text(encoding="utf-8")
    assert "<b>" not in text
    (site,) = by_symbol(embedded(text))["math.cos"]["callers"]
    assert (site["file"], site["line"], site["function"], site["calls"]) == (HOSTILE_FILE, 3, "<module>", SITE_CALLS)


def test_top_limits_the_rows_and_counts_the_rest(snap):
    data = _data(snap, top=2)
    assert [t["symbol"] for t in data["targets"]] == [str(s) for s in snap.targets["symbol"][:2]]
    assert data["targets_total"] == len(snap.targets)
    with pytest.raises(ValueError, match="top must be an int >= 0"):
        snap.html(os.devnull, top=-1)


def test_page_loads_nothing_from_the_network(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "http://www.w3.org/2000/svg" in text  # the SVG namespace, a name, not a fetch


def test_empty_snapshot_gives_a_page(tmp_path):
    fasthost.start()
    fasthost.stop()
    size = fasthost.snapshot().html(tmp_path / "empty.html")
    data = embedded((tmp_path / "empty.html").read_text(encoding="utf-8"))
    assert size == (tmp_path / "empty.html").stat().st_size
    assert data["targets"] == []
    assert data["whole"]["inclusive"]["n"] == 0


def _data(snap, top=50):
    from fasthost.export.html import html_data

    return html_data(snap, top)


# ---- the command line ---------------------------------------------------------


def fasthost_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fasthost", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_report_html_writes_the_page_of_a_saved_snapshot(snap, tmp_path):
    snap.save(tmp_path / "run.npz")
    proc = fasthost_cli("report", tmp_path / "run.npz", "--html", tmp_path / "out.html")
    assert proc.returncode == 0, proc.stderr
    data = embedded((tmp_path / "out.html").read_text(encoding="utf-8"))
    assert by_symbol(data)["libm.so.6!cos"]["calls"] == COS_CALLS
    assert proc.stdout == ""  # the page instead of the text report


def test_run_html_writes_the_page_and_the_snapshot(tmp_path):
    proc = fasthost_cli(
        "run", "-o", tmp_path / "run.npz", "--html", tmp_path / "run.html", ROOT / "examples" / "qsort_callbacks.py"
    )
    assert proc.returncode == 0, proc.stderr
    data = embedded((tmp_path / "run.html").read_text(encoding="utf-8"))
    assert {t["symbol"]: t["calls"] for t in data["targets"]}["libc.so.6!qsort"] == 5
    assert data["totals"] == fasthost.load(tmp_path / "run.npz").totals


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/out.html", "no such directory"), ("/dev/full", "No space left on device"), (".", "is a directory")],
)
def test_report_html_that_cannot_be_written_is_one_line(snap, tmp_path, where, message):
    snap.save(tmp_path / "run.npz")
    proc = fasthost_cli("report", tmp_path / "run.npz", "--html", where, cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fasthost: error: cannot write")
    assert message in line


def test_run_html_to_a_missing_folder_stops_before_the_script(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "work.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = fasthost_cli("run", "-o", tmp_path / "run.npz", "--html", tmp_path / "no" / "x.html", script)
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr.strip()
    assert not marker.exists()


def test_run_html_onto_the_snapshot_file_is_a_usage_error(tmp_path):
    proc = fasthost_cli("run", "-o", "same", "--html", "./same", ROOT / "examples" / "qsort_callbacks.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fasthost: error: --html and -o name the same file: ./same"
    assert not (tmp_path / "same").exists()


def test_report_json_and_html_together_is_a_usage_error(snap, tmp_path):
    snap.save(tmp_path / "run.npz")
    proc = fasthost_cli("report", tmp_path / "run.npz", "--json", "--html", tmp_path / "x.html")
    assert proc.returncode == 2
    assert "not allowed with" in proc.stderr


# ---- in a real browser --------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless Chromium tests need Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW_WIDTH},1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver: selenium never looks one up on the network.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def table_rows(driver) -> list[tuple[str, str]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#targets tbody tr")
    return [tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:2]) for row in rows]


def keep_screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The screenshot under pytest's tmp dir, and in $FASTHOST_ARTEFACTS when set."""
    shot = tmp_path / name
    # The whole page, not the window: a viewport as tall as the document.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": WINDOW_WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        assert driver.save_screenshot(str(shot))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    artefacts = os.environ.get("FASTHOST_ARTEFACTS")
    if artefacts:
        os.makedirs(artefacts, exist_ok=True)
        shutil.copy(shot, os.path.join(artefacts, name))
    return shot


def test_chromium_shows_the_known_targets_without_console_errors(browser, snap, page):
    browser.get(page.resolve().as_uri())
    assert console_errors(browser) == []
    assert table_rows(browser) == [(str(r["symbol"]), f"{int(r['calls']):,}") for r in snap.targets]
    # The markup-like symbol and thread name are text, and ran nothing.
    assert browser.execute_script("return window.__pwned === undefined")
    threads = browser.execute_script("return [...document.querySelectorAll('#threads tbody tr')].map(r => r.innerText)")
    assert any(HOSTILE_THREAD in row and "HOST_E_NOT_OWNER 1" in row for row in threads)
    # With no target selected: the whole run's distribution.
    summary = browser.execute_script("return document.querySelector('[data-role=distribution-summary]').textContent")
    assert f"n={snap.histogram('inclusive').total:,}" in summary


def test_chromium_selecting_a_target_draws_its_distribution(browser, snap, page, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(page.resolve().as_uri())
    index = [str(s) for s in snap.targets["symbol"]].index("libm.so.6!cos")
    browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr")[index].click()
    assert browser.find_element(By.CSS_SELECTOR, "[data-role=selected]").text == "libm.so.6!cos"
    hist = snap.histogram("inclusive", target="libm.so.6!cos")
    p50, p99 = hist.quantile([0.5, 0.99])
    curve = browser.find_element(By.CSS_SELECTOR, "svg[data-role=percentiles]")
    labels = {
        t.get_attribute("data-quantile"): t.text for t in curve.find_elements(By.CSS_SELECTOR, "text[data-quantile]")
    }
    assert labels["p50"] == f"p50 {format_ns(p50)}"
    assert labels["p99"] == f"p99 {format_ns(p99)}"
    assert labels["max"] == f"max {format_ns(hist.max)}"
    bars = browser.find_elements(By.CSS_SELECTOR, "svg[data-role=histogram] rect.bar")
    assert len(bars) == len(by_symbol(_data(snap))["libm.so.6!cos"]["dist"]["bins"])
    assert console_errors(browser) == []
    keep_screenshot(browser, tmp_path, "html-report-known.png")


def test_chromium_shows_qsorts_callbacks(browser, snap, page):
    from selenium.webdriver.common.by import By

    browser.get(page.resolve().as_uri())
    index = [str(s) for s in snap.targets["symbol"]].index("libc.so.6!qsort")
    browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr")[index].click()
    lines = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "[data-role=callbacks]")]
    assert lines[0].startswith(f"{QSORT_CALLS} of its {QSORT_CALLS} calls made callbacks")
    assert console_errors(browser) == []


def test_chromium_sorts_the_table_by_a_clicked_column(browser, snap, page):
    from selenium.webdriver.common.by import By

    browser.get(page.resolve().as_uri())
    header = browser.find_element(By.CSS_SELECTOR, "#targets th[data-key=calls]")
    header.click()
    calls = [int(c.replace(",", "")) for _, c in table_rows(browser)]
    assert calls == sorted(calls, reverse=True)
    assert header.get_attribute("aria-sort") == "descending"
    header.click()
    calls = [int(c.replace(",", "")) for _, c in table_rows(browser)]
    assert calls == sorted(calls)
    assert header.get_attribute("aria-sort") == "ascending"
    browser.find_element(By.CSS_SELECTOR, "#targets th[data-key=symbol]").click()
    libraries = [s for s, _ in table_rows(browser) if s.startswith("lib")]
    # Ascending calls had floor (5) before cos (250): by name they swap.
    assert libraries == ["libc.so.6!qsort", "libm.so.6!cos", "libm.so.6!floor", "libm.so.6!sqrt"]
    assert console_errors(browser) == []


def test_chromium_screenshot_of_the_bundled_example(browser, tmp_path):
    """The README's picture: the bundled example profiled as the README's
    first command does, with qsort selected."""
    from selenium.webdriver.common.by import By

    page = tmp_path / "html-report.html"
    proc = fasthost_cli("run", "-o", tmp_path / "run.npz", "--html", page, ROOT / "examples" / "qsort_callbacks.py")
    assert proc.returncode == 0, proc.stderr
    snap = fasthost.load(tmp_path / "run.npz")
    browser.get(page.resolve().as_uri())
    assert table_rows(browser) == [(str(r["symbol"]), f"{int(r['calls']):,}") for r in snap.targets]
    browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr")[0].click()
    assert browser.find_element(By.CSS_SELECTOR, "[data-role=selected]").text == "libc.so.6!qsort"
    assert console_errors(browser) == []
    assert keep_screenshot(browser, tmp_path, "html-report.png").stat().st_size > 0


def test_chromium_lists_a_targets_callers_as_text(browser, callers_page):
    from selenium.webdriver.common.by import By

    browser.get(callers_page.resolve().as_uri())
    (row,) = [r for r in browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr") if "math.cos" in r.text]
    row.click()
    cells = browser.find_elements(By.CSS_SELECTOR, "#detail table tbody tr td")
    assert [c.text for c in cells[:2]] == [f"{HOSTILE_FILE}:3 <module>", str(SITE_CALLS)]
    assert browser.execute_script("return document.querySelectorAll('#detail b').length") == 0
    assert console_errors(browser) == []


# ---- outputs that must neither hang nor destroy the recording ------------------


def test_html_to_a_named_pipe_with_no_reader_fails_at_once(snap, tmp_path):
    pipe = tmp_path / "pipe.html"
    os.mkfifo(pipe)
    # open() would wait for a reader for ever; the page is refused instead.
    with pytest.raises(OSError, match="a named pipe with no reader"):
        snap.html(pipe)


def test_html_to_a_named_pipe_with_a_reader_is_written_whole(snap, tmp_path):
    pipe = tmp_path / "pipe.html"
    os.mkfifo(pipe)
    received: list[bytes] = []
    # The reader opens the pipe first, so the writer finds it there.
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    while not received and reader.is_alive():
        try:
            size = snap.html(pipe)
            break
        except OSError:  # the reader has not opened its end yet
            continue
    reader.join()
    assert len(received[0]) == size
    assert by_symbol(embedded(received[0].decode("utf-8")))["libm.so.6!cos"]["calls"] == COS_CALLS


def test_run_html_to_a_named_pipe_with_no_reader_keeps_the_snapshot_and_exits(tmp_path):
    os.mkfifo(tmp_path / "pipe.html")
    proc = fasthost_cli(
        "run", "-o", tmp_path / "run.npz", "--html", tmp_path / "pipe.html", ROOT / "examples" / "qsort_callbacks.py"
    )
    assert proc.returncode == 2
    assert f"fasthost: error: cannot write {tmp_path / 'pipe.html'}: a named pipe with no reader" in proc.stderr
    assert fasthost.load(tmp_path / "run.npz").totals["transitions"] > 0
    assert "libc.so.6!qsort" in proc.stdout  # the text report is still printed


def test_report_html_onto_its_own_snapshot_is_refused_and_keeps_it(snap, tmp_path):
    snap.save(tmp_path / "run.npz")
    os.link(tmp_path / "run.npz", tmp_path / "run.html")
    for out in ("run.npz", "run.html"):  # the same path, and a hard link to the same file
        proc = fasthost_cli("report", "run.npz", "--html", out, cwd=tmp_path)
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert line == f"fasthost: error: cannot write {out}: it is the snapshot run.npz (writing it would destroy it)"
        assert fasthost.load(tmp_path / "run.npz").totals == snap.totals


def test_run_html_hard_linked_to_the_snapshot_is_a_usage_error(tmp_path):
    (tmp_path / "run.npz").write_bytes(b"an earlier run")
    os.link(tmp_path / "run.npz", tmp_path / "run.html")
    proc = fasthost_cli(
        "run", "-o", "run.npz", "--html", "run.html", ROOT / "examples" / "qsort_callbacks.py", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fasthost: error: --html and -o name the same file: run.html"


def test_chromium_top_0_says_the_targets_were_left_out_not_that_none_were_recorded(browser, snap, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "top0.html"
    snap.html(page, top=0)
    browser.get(page.resolve().as_uri())
    note = browser.find_element(By.ID, "targets-note").text
    assert note == f"{len(snap.targets)} target(s) not shown (--top)."
    assert table_rows(browser) == []
    assert console_errors(browser) == []


LONG_SYMBOL = "std::vector<" * 400 + "int" + ">" * 400  # a C++ template name: thousands of chars, no space
NARROW = 400


def test_chromium_page_stays_as_narrow_as_a_phone_window_with_a_long_symbol_selected(browser, snap, tmp_path):
    from selenium.webdriver.common.by import By

    from fasthost import _testing

    address = 0x7000
    fasthost.register_target(address, LONG_SYMBOL)
    _testing.set_manual_time(1_000)
    fasthost.start(clock="manual")
    try:
        fasthost.leave_runtime(address)
        _testing.advance_manual_time(3 * 3600 * 10**9)  # hours: the widest figures too
        fasthost.enter_runtime()
    finally:
        fasthost.stop()
        fasthost.unregister_target(address)
    page, known = tmp_path / "long.html", tmp_path / "known.html"
    fasthost.snapshot().html(page)
    snap.html(known)
    metrics = {"width": NARROW, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        for path in (page, known):
            browser.get(path.resolve().as_uri())
            rows = browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr")
            for index in range(len(rows)):
                browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr")[index].click()
                widths = browser.execute_script(
                    "const d = document.documentElement; return [d.scrollWidth, d.clientWidth]"
                )
                assert widths[0] <= widths[1], f"row {index} of {path.name}: the page is {widths[0]} px wide"
            assert console_errors(browser) == []
        assert browser.execute_script("return document.querySelector('[data-role=selected]') !== null")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# Durations whose texts sort differently from their values ("9 ns" > "10 ns"
# > "1 s" as text), and call counts likewise (9 > 10 as text).
SORT_CASES = {"nine": (9, 10), "ten": (10, 9), "hundred": (100, 100), "two_us": (2_000, 1), "one_s": (10**9, 2)}


def test_chromium_sorts_every_numeric_column_by_value_not_text(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from fasthost import _testing

    addresses = {name: 0x6000 + 16 * i for i, name in enumerate(SORT_CASES)}
    for name, address in addresses.items():
        fasthost.register_target(address, name)
    _testing.set_manual_time(1_000)
    fasthost.start(clock="manual")
    try:
        for name, (ns, calls) in SORT_CASES.items():
            for _ in range(calls):
                fasthost.leave_runtime(addresses[name])
                _testing.advance_manual_time(ns)
                fasthost.enter_runtime()
    finally:
        fasthost.stop()
        for address in addresses.values():
            fasthost.unregister_target(address)
    page = tmp_path / "sort.html"
    snap = fasthost.snapshot()
    snap.html(page)
    targets = by_symbol(embedded(page.read_text(encoding="utf-8")))
    values = {
        "calls": lambda t: t["calls"],
        "total": lambda t: t["total_ns"],
        "p50": lambda t: t["dist"]["summary"]["p50"]["ns"],
        "p99": lambda t: t["dist"]["summary"]["p99"]["ns"],
        "max": lambda t: t["dist"]["summary"]["max"]["ns"],
    }
    browser.get(page.resolve().as_uri())
    for key, value in values.items():
        header = browser.find_element(By.CSS_SELECTOR, f"#targets th[data-key={key}]")
        header.click()
        if header.get_attribute("aria-sort") != "ascending":
            header.click()
        shown = [symbol for symbol, _ in table_rows(browser)]
        assert [value(targets[s]) for s in shown] == sorted(value(targets[s]) for s in shown), key
        assert len(set(value(targets[s]) for s in shown)) > 3, key  # the column really orders something
    assert console_errors(browser) == []


def zero_and_forty_ns_page(path: Path) -> Path:
    """The page of 20 calls on the manual clock, half of them 0 ns and half
    40 ns: p50 is 0 ns, p90 and max are 40 ns at 1/(1-q) 10 and 20."""
    from fasthost import _testing

    _testing.set_manual_time(1_000)
    fasthost.start(clock="manual")
    try:
        for i in range(20):
            fasthost.leave_runtime(0x1000)
            _testing.advance_manual_time(0 if i % 2 else 40)
            fasthost.enter_runtime()
    finally:
        fasthost.stop()
    fasthost.snapshot().html(path)
    return path


def test_chromium_draws_zero_ns_calls_in_a_band_of_their_own_not_as_a_sliver_at_1_ns(browser, tmp_path):
    browser.get(zero_and_forty_ns_page(tmp_path / "zero.html").resolve().as_uri())
    found = browser.execute_script("""
        const hist = document.querySelector('svg[data-role=histogram]');
        const pct = document.querySelector('svg[data-role=percentiles]');
        const tick = (svg, label) => [...svg.querySelectorAll('text')].find((t) => t.textContent === label);
        const bar = [...hist.querySelectorAll('rect.bar')].find((r) => r.textContent.startsWith('0 ns - 1 ns'));
        return {
            barRight: +bar.getAttribute('x') + +bar.getAttribute('width'),
            barWidth: +bar.getAttribute('width'),
            oneNsX: +tick(hist, '1 ns').getAttribute('x'),
            zeroTick: tick(hist, '0') !== undefined,
            p50Y: +pct.querySelector('circle[data-quantile=p50]').getAttribute('cy'),
            oneNsY: +tick(pct, '1 ns').getAttribute('y') - 4,
            zeroY: +tick(pct, '0').getAttribute('y') - 4,
        };
    """)
    assert found["barWidth"] >= 20  # was 1.5 px on the axis line
    assert found["barRight"] <= found["oneNsX"]
    assert found["zeroTick"]
    # p50 is 0 ns: on the "0" tick, below (greater y than) the 1 ns one.
    assert found["p50Y"] == pytest.approx(found["zeroY"])
    assert found["p50Y"] > found["oneNsY"]
    assert console_errors(browser) == []


def test_run_writes_the_snapshot_and_page_where_they_were_checked_when_the_program_changes_directory(tmp_path):
    # The program moves into a folder and deletes it: relative outputs
    # resolved after the run would have nowhere to go.
    script = tmp_path / "wander.py"
    script.write_text("import math, os\nos.mkdir('gone')\nos.chdir('gone')\nos.rmdir(os.getcwd())\nmath.cos(0.5)\n")
    proc = fasthost_cli("run", "--capture", "builtins", "-o", "run.npz", "--html", "run.html", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fasthost: wrote run.npz" in proc.stderr
    assert "fasthost: wrote run.html (" in proc.stderr
    assert by_symbol(embedded((tmp_path / "run.html").read_text(encoding="utf-8")))["math.cos"]["calls"] == 1
    assert fasthost.load(tmp_path / "run.npz").totals["transitions"] > 0


@pytest.mark.parametrize("option", ["-o", "--html"])
def test_run_refuses_to_write_over_the_script_it_runs(tmp_path, option):
    source = "import math\nmath.cos(0.5)\n"
    (tmp_path / "work.py").write_text(source)
    proc = fasthost_cli("run", option, "work.py", "work.py", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line == "fasthost: error: cannot write work.py: it is the script work.py (writing it would destroy it)"
    assert (tmp_path / "work.py").read_text() == source


def test_chromium_percentile_labels_never_overlap_when_the_marks_are_close(browser, tmp_path):
    # p90 and max are both 40 ns, side by side at 1/(1-q) 10 and 20.
    browser.get(zero_and_forty_ns_page(tmp_path / "close.html").resolve().as_uri())
    boxes = browser.execute_script("""
        return [...document.querySelectorAll('svg[data-role=percentiles] text[data-quantile]')].map((t) => {
            const b = t.getBBox(); return [t.dataset.quantile, b.x, b.y, b.x + b.width, b.y + b.height];
        });
    """)
    assert {name for name, *_ in boxes} == {"p50", "p90", "max"}
    for i, (name, left, top, right, bottom) in enumerate(boxes):
        for other, left2, top2, right2, bottom2 in boxes[i + 1 :]:
            apart = right <= left2 or right2 <= left or bottom <= top2 or bottom2 <= top
            assert apart, f"{name} and {other} labels overlap"
    assert console_errors(browser) == []
