"""Open an HTML page in headless Chromium and report what a reader would see go wrong.

A helper for the tests (not a test module): :func:`check_page` loads a local page in Debian's
Chromium through chromedriver (Selenium 4) and returns a :class:`PageCheck` with the images that
did not load, the console errors (JavaScript errors, resources that failed to load) and the
horizontal overflow at each window width, and saves one screenshot per width.
:func:`browser_available` says why the check cannot run on this machine, so tests can skip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

#: Debian's ``chromium`` and ``chromium-driver`` packages (installed by ``.ci/run`` if missing).
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

#: Window height while measuring; the screenshot window grows to the page, at most SHOT_MAX_PX.
VIEW_HEIGHT_PX = 900
SHOT_MAX_PX = 8000
#: Seconds to wait for the page, and then for its images, to finish loading.
LOAD_TIMEOUT_S = 10.0

# Make lazy images load now (a screenshot-less reader would scroll to them), then report whether
# every image has finished, successfully or not.
_IMAGES_DONE_JS = """
for (const img of document.images) { if (img.loading === "lazy") img.loading = "eager"; }
return Array.from(document.images).every(img => img.complete);
"""
# The src attribute (as written in the page) of every image that did not load.
_BROKEN_IMAGES_JS = """
return Array.from(document.images)
    .filter(img => !(img.complete && img.naturalWidth > 0))
    .map(img => img.getAttribute("src") || img.currentSrc || "");
"""
_OVERFLOW_JS = "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"


@dataclass
class PageCheck:
    """What :func:`check_page` found.

    Attributes:
        broken_images: ``src`` attributes of the ``<img>`` elements that did not load (not
            ``complete`` or ``naturalWidth == 0``), in page order.
        n_images: Number of ``<img>`` elements in the page.
        console_errors: Browser console messages of level ``SEVERE`` (JavaScript errors,
            resources that failed to load, ...).
        overflow_px: Window width -> pixels the page is wider than the viewport (0 when there is
            no horizontal overflow). Measured against ``documentElement.clientWidth``, the
            viewport less the vertical scrollbar a reader has (15 px), both at the measuring
            height (with a scrollbar) and at the screenshot height (maybe without).
        screenshots: The PNG screenshots written, one per width.
    """

    broken_images: list[str]
    n_images: int
    console_errors: list[str]
    overflow_px: dict[int, int] = field(default_factory=dict)
    screenshots: list[Path] = field(default_factory=list)


def browser_available() -> str | None:
    """``None`` if :func:`check_page` can run here, else why not (a pytest skip reason)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{package} not installed ({path} missing)"
    try:
        import selenium
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    major, minor = (int(p) for p in selenium.__version__.split(".")[:2])
    if (major, minor) < (4, 11):
        return f"selenium {selenium.__version__} is too old (need >= 4.11)"
    return None


def _driver():
    """A headless Chromium driver that records the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def _set_viewport(driver, width: int, height: int) -> None:
    """Resize the window so that the viewport (``window.innerWidth``/``innerHeight``) is exactly
    ``width`` x ``height`` CSS pixels, whatever the browser's own chrome takes."""
    driver.set_window_size(width, height)
    inner_w, inner_h = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    if (inner_w, inner_h) != (width, height):
        driver.set_window_size(2 * width - inner_w, 2 * height - inner_h)


def _wait(driver, script: str, what: str) -> None:
    """Poll ``script`` until it returns true; fail after LOAD_TIMEOUT_S."""
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {LOAD_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def check_page(html: Path, shots_dir: Path, widths: tuple[int, ...] = (800, 1400)) -> PageCheck:
    """Open ``html`` in headless Chromium and check it at each window width.

    The page is loaded once; for each width the viewport (``window.innerWidth``, scrollbar
    included, as in a desktop browser) is resized to exactly that width, the horizontal overflow
    is measured, and a screenshot ``report-<width>px.png`` (as tall as the
    page, at most SHOT_MAX_PX) is saved in ``shots_dir``.

    Args:
        html: The page (a local file; its images are loaded from ``file://`` URLs).
        shots_dir: Folder for the screenshots (created if missing).
        widths: Viewport widths in CSS pixels.

    Returns:
        The :class:`PageCheck`.

    Raises:
        TimeoutError: If the page or its images take longer than LOAD_TIMEOUT_S to load.
    """
    shots_dir.mkdir(parents=True, exist_ok=True)
    driver = _driver()
    try:
        driver.set_page_load_timeout(LOAD_TIMEOUT_S)
        _set_viewport(driver, widths[0], VIEW_HEIGHT_PX)
        driver.get(html.resolve().as_uri())
        _wait(driver, 'return document.readyState === "complete";', "loading the page")
        _wait(driver, _IMAGES_DONE_JS, "loading the images")
        broken = list(driver.execute_script(_BROKEN_IMAGES_JS))
        n_images = int(driver.execute_script("return document.images.length;"))

        overflow: dict[int, int] = {}
        shots: list[Path] = []
        for width in widths:
            _set_viewport(driver, width, VIEW_HEIGHT_PX)
            overflow[width] = max(0, int(driver.execute_script(_OVERFLOW_JS)))
            page_h = int(driver.execute_script("return document.documentElement.scrollHeight;"))
            _set_viewport(driver, width, min(max(page_h, VIEW_HEIGHT_PX), SHOT_MAX_PX))
            # without a vertical scrollbar the layout is 15 px wider: measure that one too
            overflow[width] = max(overflow[width], int(driver.execute_script(_OVERFLOW_JS)))
            shot = shots_dir / f"report-{width}px.png"
            if not driver.save_screenshot(str(shot)):
                raise RuntimeError(f"could not save the screenshot {shot}")
            shots.append(shot)

        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        return PageCheck(broken, n_images, errors, overflow, shots)
    finally:
        driver.quit()
