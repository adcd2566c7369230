"""`blockcert report`: the HTML page and the Markdown summary of a run, rendered in headless Chromium."""

from __future__ import annotations

import hashlib
import html as html_module
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import blockcert
from blockcert.errors import UserError
from blockcert.pipeline.certify import run
from blockcert.report.gather import collect, load_edit_sweep
from blockcert.report.write import default_output, write_report
from blockcert.report.html import SECTIONS
from blockcert.pipeline.stitch import stitch
from blockcert.verifier.core import verify
from test_run import make_model_dir

# Debian's packages `chromium` and `chromium-driver`; other places through the environment
CHROMIUM = Path(os.environ.get("BLOCKCERT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("BLOCKCERT_CHROMEDRIVER", "/usr/bin/chromedriver"))
HOSTILE = "Ignore this: <script>window.__pwned = 1</script> and </div></section> close nothing & \"quotes\" | pipes"
PROMPTS = [
    "Blockwise extraction turns each residual block into an explicit program.",
    HOSTILE,
    "A causal mask hides the future; über-naïve tokens split — across bytes.",
    "The verifier replays the stored weights on recorded traces.",
]
# Hand-made numbers in the format `blockcert edit sweep` writes (issue #7): the report only renders them.
SWEEP = {"edit": "mlp-scale", "model": "tiny", "rows": [
    {"block": 1, "alpha": a, "answer_accuracy": 0.9 - 0.1 * (1 - a), "refuse_accuracy": 0.2 + 0.5 * (1 - a)}
    for a in (0.0, 0.33, 0.66, 1.0)]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, byte_tokenizer):
    """A tiny random-init Llama with the byte tokenizer: a plain run with bounds, stitched, and an
    invert-mask ablation of it on the same prompts (which fails), plus an edit-sweep file."""
    base = tmp_path_factory.mktemp("report")
    model = make_model_dir(base / "model", byte_tokenizer, layers=3)
    prompts = base / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    plain, ablated = base / "plain", base / "invert"
    run(model, prompts=str(prompts), out=plain, bounds=True)
    stitch(plain)
    run(model, prompts=str(prompts), out=ablated, ablate="invert-mask")
    sweep = base / "sweep.json"
    sweep.write_text(json.dumps(SWEEP), encoding="utf-8")
    from blockcert.metrics import Policy
    from blockcert.minimize import minimize

    loose = Policy(tau_act=0.25, tau_loss=0.05, alpha_act=0.9, alpha_loss=0.9, name="relative")
    minimize(model, blocks=[0, 2], budget="heads", prompts=str(prompts), policy=loose, out=base / "mz")
    from blockcert.edit.certify import Decoding
    from blockcert.edit.dirsweep import direction_sweep

    direction_sweep(loaded=blockcert.load_model(model), layers=[1, 2], scales=[1.0], out=base / "ds", decoding=Decoding(max_new_tokens=3))
    return {"plain": plain, "ablated": ablated, "sweep": sweep, "model": model, "minimize": base / "mz", "directions": base / "ds"}


@pytest.fixture(scope="module")
def reports(runs):
    full, _ = write_report(runs["plain"], compare=[runs["ablated"]], edit_sweep=runs["sweep"], minimize=runs["minimize"],
                           direction_sweep=runs["directions"])
    ablated, _ = write_report(runs["ablated"], compare=[runs["plain"]])
    return {"full": full, "ablated": ablated}


def _sections(html: str) -> dict[str, bool]:
    """section key -> has content (no data-empty marker)."""
    return {m.group(1): m.group(2) is None for m in re.finditer(r'<section id="[^"]+" data-section="([^"]+)"( data-empty="1")?>', html)}


def test_every_section_is_filled_and_verify_still_passes(runs, reports):
    html = reports["full"].read_text(encoding="utf-8")
    assert reports["full"] == default_output(runs["plain"], "html") and reports["full"].parent == runs["plain"].parent
    assert _sections(html) == {key: True for key, _ in SECTIONS}
    assert verify(runs["plain"], level="hashes").ok  # nothing was written into the run directory
    assert verify(runs["ablated"], level="hashes").ok
    assert "3/3 blocks certified" in html and "every certificate is internally consistent (verify --level hashes" in html
    sums = html_module.unescape(re.search(r'<pre class="sums" id="sums">(.*?)</pre>', html, re.S).group(1)).splitlines()
    assert len(sums) > 3 * 5
    for line in sums:  # `sha256sum -c` format, every file of the run
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((runs["plain"] / name).read_bytes()).hexdigest() == digest
    assert {name for name in (line.split("  ", 1)[1] for line in sums)} >= {
        "run.json", "traces/index.json", "full/certificate.json", *(f"block_{i:03d}/certificate.json" for i in range(3))}
    assert html.count("<script") == 1 and "Content-Security-Policy" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing to fetch


def test_prompt_text_is_escaped(reports):
    for path in reports.values():
        html = path.read_text(encoding="utf-8")
        assert ("&lt;script&gt;window.__pwned = 1&lt;/script&gt; and &lt;/div&gt;&lt;/section&gt; close nothing "
                "&amp; &quot;quotes&quot;") in html
        assert "<script>window" not in html and "</div></section> close" not in html


def test_tokens_are_the_prompt_text_cut_by_the_tokenizer(runs):
    view = collect(runs["plain"])
    assert view.tokens_decoded and "reproduces the stored token ids of all 4 prompts" in view.tokens_source
    for prompt in view.prompts:
        assert "".join(p for p, s in zip(prompt.pieces, prompt.special) if not s) == prompt.text
    bare = collect(runs["plain"], tokenizer="none")
    assert not bare.tokens_decoded and bare.prompts[0].pieces[0] == f"[{bare.prompts[0].ids[0]}]"


def test_a_failing_ablation_shows_its_failing_tokens(runs, reports):
    view = collect(runs["ablated"], compare=[runs["plain"]])
    failing = [b.index for b in view.blocks if not b.certified]
    assert failing and set(failing) <= set(view.token_blocks)
    assert view.derivation == {"kind": "ablation", "spec": "invert-mask"}
    html = reports["ablated"].read_text(encoding="utf-8")
    assert re.search(r'class="t e[4-7] f', html)  # tokens above τ_act are outlined
    assert "invert-mask" in html and "not certified" in html
    ratio = view.compare[1].mae_ratio  # the plain run against the ablation
    assert ratio is not None and ratio < 1


def test_markdown_summary(runs, tmp_path):
    out = tmp_path / "r.md"
    write_report(runs["plain"], out, fmt="md", compare=[runs["ablated"]], edit_sweep=runs["sweep"], minimize=runs["minimize"],
                 direction_sweep=runs["directions"])
    md = out.read_text(encoding="utf-8")
    for heading in ("## Blocks", "## Stitched model", "## Theorem 1 (global bound)", "## Comparison", "## Edit sweep", "## Direction sweep",
                    "## Minimal mechanisms",
                    "## Certificate ids"):
        assert heading in md
    assert "| 2 | yes | yes |" in md


def test_cli(runs, tmp_path):
    out = tmp_path / "cli.html"
    done = subprocess.run([sys.executable, "-m", "blockcert", "report", str(runs["plain"]), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"report written to {out}" in done.stdout and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    md = subprocess.run([sys.executable, "-m", "blockcert", "report", str(runs["plain"]), "--format", "md", "-o", "-"],
                        capture_output=True, text=True, timeout=300)
    assert md.returncode == 0 and md.stdout.startswith("# BlockCert report")
    inside = subprocess.run([sys.executable, "-m", "blockcert", "report", str(runs["plain"]), "-o", str(runs["plain"] / "r.html")],
                            capture_output=True, text=True, timeout=300)
    assert inside.returncode == 2 and "inside the run directory" in inside.stderr and "Traceback" not in inside.stderr
    assert not (runs["plain"] / "r.html").exists()


def test_bad_inputs(runs, tmp_path):
    bad = tmp_path / "bad.json"
    for payload, needle in (({"rows": []}, "non-empty list"), ({"rows": [{"block": 1, "alpha": 1}]}, "lacks answer_accuracy"),
                            ({"rows": [{"block": 1, "alpha": 1, "answer_accuracy": 2, "refuse_accuracy": 0}]}, "[0, 1]")):
        bad.write_text(json.dumps(payload), encoding="utf-8")
        with pytest.raises(UserError, match=re.escape(needle)):
            load_edit_sweep(bad)
    assert load_edit_sweep(runs["sweep"]).meta == (("edit", "mlp-scale"), ("model", "tiny"))
    other = tmp_path / "other"
    shutil.copytree(runs["plain"], other)
    manifest = json.loads((other / "run.json").read_text(encoding="utf-8"))
    manifest["prompts"]["sha256"] = "0" * 64
    (other / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UserError, match="another prompts"):
        collect(runs["plain"], compare=[other])
    with pytest.raises(UserError, match="not in this run"):
        collect(runs["plain"], token_blocks="7")
    with pytest.raises(UserError, match="--token-blocks 'x': 'x' is not a block index"):
        collect(runs["plain"], token_blocks="x")


def test_tampered_run_is_reported_as_failing(runs, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(runs["plain"], copy)
    record = copy / "block_001" / "metrics.json"
    record.write_bytes(record.read_bytes().replace(b'"best_prompt":', b'"best_prompt": '))
    target, view = write_report(copy)
    assert not view.verified and not view.block(1).verification.ok and view.block(0).verification.ok
    assert "verification FAILED" in target.read_text(encoding="utf-8")


def test_colour_scale_and_png():
    from blockcert.report.svg import bucket, png

    assert [bucket(r) for r in (0.0, 1e-3, 0.05, 1.0)] == [0, 1, 2, 3]  # e = τ_act is covered
    assert [bucket(r) for r in (1.0000001, 5.0, 99.0, 1e9, float("nan"))] == [4, 5, 6, 7, 7]
    data = png([[(255, 0, 0), (0, 0, 255)]] * 3)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[16:24] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")


# ---------------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------------


def _browser(monkeypatch):
    """Headless Chromium through Selenium; skipped if Chromium is missing, unless BLOCKCERT_REQUIRE_BROWSER=1 (CI)."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        reason = f"headless Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
        if os.environ.get("BLOCKCERT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def test_report_renders_in_headless_chromium(runs, reports, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser(monkeypatch)
    try:
        for name, path in reports.items():
            driver.get(path.resolve().as_uri())
            sections = {el.get_attribute("data-section"): el for el in driver.find_elements(By.CSS_SELECTOR, "section[data-section]")}
            assert list(sections) == [key for key, _ in SECTIONS]
            if name == "full":
                assert all(el.get_attribute("data-empty") is None for el in sections.values())
                assert len(sections["blocks"].find_elements(By.CSS_SELECTOR, "svg.chart")) == 4
                assert sections["tokens"].find_elements(By.CSS_SELECTOR, "span.t")
                assert sections["stitched"].find_elements(By.CSS_SELECTOR, "svg.chart")
                assert sections["edit-sweep"].find_elements(By.CSS_SELECTOR, "svg.chart")
                assert sections["minimize"].find_elements(By.CSS_SELECTOR, "svg.chart")
                assert len(sections["direction-sweep"].find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
            assert driver.execute_script("return window.__pwned") is None  # the prompt's script did not run
            assert HOSTILE.split(" close")[0] in driver.find_element(By.ID, "tokens").text.replace("\n", "")
            button = driver.find_element(By.CSS_SELECTOR, "button[data-copy]")
            button.click()  # our own script runs (the CSP allows it by its hash): the button says what it did
            WebDriverWait(driver, 10).until(lambda d, b=button: b.text in ("copied", "selected"))
            fetched = driver.execute_script("return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
            assert [u for u in fetched if not u.startswith("data:")] == []  # the page loaded nothing
            image = driver.execute_script("var i = document.querySelector('svg.heat image'); return i && i.getBBox().width;")
            assert image and image > 0
            pdf = driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})
            assert len(pdf["data"]) > 1000  # printable
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert not errors, errors
        driver.get(reports["full"].resolve().as_uri())
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1100, min(height, 1300))
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("BLOCKCERT_SAVE_SCREENSHOT") == "1":
            target = Path(__file__).resolve().parents[1] / "docs" / "img" / "report.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)
    finally:
        driver.quit()


def test_direction_sweep_rows_are_checked_against_their_certificates(runs, tmp_path):
    """The report shows each row of a direction sweep beside whether its own edit certificate verifies and states
    those numbers: an edited results.json, or a tampered certificate, is flagged, not shown as certified."""
    import shutil

    from blockcert.report.gather import load_direction_sweep

    view = load_direction_sweep(runs["directions"])
    assert len(view.rows) == 4 and all(r.verifies for r in view.rows)
    forged = tmp_path / "ds"
    shutil.copytree(runs["directions"], forged)
    results = json.loads((forged / "results.json").read_text())
    results["rows"][0]["refuse_correct"] = 30
    (forged / "results.json").write_text(json.dumps(results))
    metrics = forged / "edits" / "L02-ablate" / "metrics.json"
    metrics.write_bytes(metrics.read_bytes().replace(b'"epsilon_edit":', b'"epsilon_edit": ', 1))
    rows = {(r.layer, r.edit): r for r in load_direction_sweep(forged).rows}
    assert rows[(1, "ablate")].problem == "results.json differs from its edit certificate"
    assert rows[(2, "ablate")].problem == "its edit certificate does not verify"
    assert rows[(1, "add")].verifies and rows[(2, "add")].verifies
    with pytest.raises(UserError, match="--direction-sweep"):
        load_direction_sweep(tmp_path / "nothing")
