"""The teaching pages from Python, and the lecture notebook run headless: its pages are opened
in headless Chromium inside their notebook frames, stepped with the keyboard, and their numbers
compared with what `adjoint grad` prints. Console errors fail the test."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import adjoint
from conftest import ROOT, cli

LECTURE = "(x*y + sin(x) + 4) * (3*y^2 + 6)"


def lecture(x, y):
    return (x * y + adjoint.sin(x) + 4) * (3 * y**2 + 6)


def test_a_trace_of_a_python_function_equals_the_trace_of_the_expression():
    from_function = str(adjoint.trace(lecture, x=2, y=8))
    from_string = str(adjoint.trace(LECTURE, x=2, y=8))
    # The step tables agree line by line (only the title line names the function differently).
    assert from_function.splitlines()[1:] == from_string.splitlines()[1:]
    assert "s3  = s1 × s2 = 16" in from_function
    assert "1399.6463" in from_function or "1399.646" in from_function


def test_trace_refuses_what_it_cannot_show():
    with pytest.raises(ValueError, match="no value for y"):
        adjoint.trace(LECTURE, x=2)
    with pytest.raises(ValueError, match="no value for the argument y"):
        adjoint.trace(lecture, x=2)
    with pytest.raises(ValueError, match="no argument z"):
        adjoint.trace(lecture, x=2, y=8, z=1)
    with pytest.raises(ValueError, match="single number"):
        adjoint.trace(lambda x: x * adjoint.tensor([1.0, 2.0]), x=1)
    with pytest.raises(ValueError):
        adjoint.trace("sin(", x=1)
    with pytest.raises(ValueError, match="wrt"):
        adjoint.trace(lecture, wrt="q", x=2, y=8)
    with pytest.raises(ValueError, match="mode"):
        adjoint.trace(lecture, mode="sideways", x=2, y=8)


def test_pages_are_self_contained_frames_and_save_without_overwriting(tmp_path):
    page = adjoint.trace(lecture, x=2, y=8)
    html = page._repr_html_()
    assert html.startswith("<iframe") and 'class="adjoint-page"' in html and "srcdoc=" in html
    # Nothing is fetched: no scripts, styles or fonts from elsewhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page.html)
    assert "<script" in page.html
    path = page.save(tmp_path / "trace.html")
    assert path.read_text() == page.html
    with pytest.raises(FileExistsError):
        page.save(path)
    page.save(path, force=True)
    with pytest.raises(ValueError):
        page.save(tmp_path)


def test_backprop_and_inspect_pages_build_and_refuse_bad_sizes():
    assert "Backpropagation" in adjoint.backprop().title
    page = adjoint.inspect(layers=[784, 64, 64, 10], inits=["normal:0.01", "xavier"], batch=32)
    assert "784-64-64-10" in str(page)
    with pytest.raises(ValueError, match="too many"):
        adjoint.backprop(layers=[500, 500, 10])
    with pytest.raises(ValueError):
        adjoint.backprop(activation="softmax")
    with pytest.raises(ValueError, match="784"):
        adjoint.inspect(layers=[10, 10])
    with pytest.raises(ValueError):
        adjoint.inspect(inits=["bogus"])


# --- the notebook, executed and opened in a browser ------------------------------------------

NOTEBOOK = ROOT / "examples/notebooks/lecture.ipynb"


def chromium():
    for b in [os.environ.get("CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser"]:
        if b and Path(b).is_file():
            return b
    return None


def chromedriver():
    return shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute()
    return nb, folder


def outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.outputs


def test_the_notebook_runs_and_shows_the_lectures_numbers(executed):
    nb, folder = executed
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in outputs(nb) if o.output_type == "stream")
    assert "f = 4140.0409, df/dx = 1501.6029, df/dy = 1399.6463" in text
    assert "forward mode: df/dx = 1501.6029, df/dy = 1399.6463" in text
    assert "d2f/dxdy = 562.0250, closed form 562.0250" in text
    accuracy = float(re.findall(r"test accuracy (\d+\.\d+)%", text)[-1])
    assert accuracy > 95.0
    for name in ["trace.html", "backprop.html", "inspect.html", "lecture.safetensors"]:
        assert (folder / name).is_file(), name


def test_the_notebooks_pages_render_step_with_the_keyboard_and_show_adjoint_grads_numbers(executed, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser, driver_path = chromium(), chromedriver()
    if not browser or not driver_path:
        if os.environ.get("ADJOINT_REQUIRE_BROWSER"):
            raise AssertionError("Chromium and chromedriver are required (ADJOINT_REQUIRE_BROWSER)")
        pytest.skip("Chromium or chromedriver not found (apt-get install chromium chromium-driver)")
    nb, _ = executed
    frames = [o["data"]["text/html"] for o in outputs(nb) if "data" in o and "text/html" in o["data"]]
    assert len(frames) == 3
    host = tmp_path / "notebook.html"
    host.write_text(
        "<!doctype html><meta charset='utf-8'><title>notebook</title><body>"
        + "".join(f"<div class='output'>{f}</div>" for f in frames)
        + "</body>"
    )
    grad = json.loads(subprocess.run([cli(), "grad", LECTURE, "--at", "x=2,y=8", "--json"], capture_output=True, text=True, check=True).stdout)

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        driver.get(host.as_uri())
        iframes = driver.find_elements(By.CSS_SELECTOR, "iframe.adjoint-page")
        assert len(iframes) == 3

        def counter():
            return driver.find_element(By.ID, "counter").text

        def press(*keys):
            body = driver.find_element(By.TAG_NAME, "body")
            body.click()
            for k in keys:
                body.send_keys(k)

        def number(cell_id):
            return float(driver.find_element(By.ID, cell_id).text.rsplit(" = ", 1)[-1].replace("−", "-"))

        # The trace page: keys step it, and at the end it shows adjoint grad's numbers.
        driver.switch_to.frame(iframes[0])
        done, total = counter().split(" / ")
        assert done == "0"
        press(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_LEFT)
        assert counter() == f"2 / {total}"
        press(Keys.SPACE)
        assert counter() == f"3 / {total}"
        press(Keys.END)
        assert counter() == f"{total} / {total}"
        for row, var in [(0, "x"), (1, "y")]:
            assert number(f"cell-{row}-3") == pytest.approx(grad["gradient"][var], rel=1e-6)
        last = len(driver.find_elements(By.CSS_SELECTOR, "[id^='row-']")) - 1
        assert number(f"cell-{last}-1") == pytest.approx(grad["value"], rel=1e-6)
        assert number(f"cell-{last}-2") == pytest.approx(grad["gradient"]["y"], rel=1e-6)  # tangent seeded on y
        driver.switch_to.default_content()

        # The backprop page is untouched by the trace page's keys (no clash), and steps itself.
        driver.switch_to.frame(iframes[1])
        before = counter()
        assert before.startswith("0 / ")
        press(Keys.ARROW_RIGHT)
        assert counter().startswith("1 / ")
        driver.switch_to.default_content()
        driver.switch_to.frame(iframes[0])
        assert counter() == f"{total} / {total}"
        driver.switch_to.default_content()

        # The inspect page renders its figure.
        driver.switch_to.frame(iframes[2])
        assert driver.find_elements(By.ID, "counter")
        assert "normal" in driver.page_source
        driver.switch_to.default_content()

        problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not problems, problems
        shots = ROOT / "target/screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / "notebook.png"))
    finally:
        driver.quit()
    assert np.isfinite(grad["value"])
