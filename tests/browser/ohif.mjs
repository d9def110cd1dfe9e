// Drive OHIF (served by Tessera at /viewer) in headless Chromium with playwright-core.
//
//   node tests/browser/ohif.mjs '<json job>'
//
// The job (built by tests/browser/test_ohif.py):
//   chromium       the browser binary
//   base           http://127.0.0.1:<port>
//   checks         [{name, path, texts?, screenshot?, minLevels?, selector?, settleMs?}]
//                  texts: wait until each appears in the page; screenshot: wait until a canvas
//                  matching selector holds an image (>= minLevels distinct grey levels in its
//                  centre), then save a screenshot of the page there
//   timeoutMs      bound of each wait
//   modules        the node_modules directory holding playwright-core (.tools/browser/...)
// Prints one JSON line: {results: [{name, ok, error?, levels?, colour?, screenshot?}],
// console: [...], failedRequests: [...], dicomweb: [...]} and exits 0 (the test decides).
// dicomweb lists the DICOMweb requests the page made (not /viewer files): method, path,
// Accept, status and Content-Type of the answer, at most MAX_LOGGED.
import { createRequire } from "node:module";

const job = JSON.parse(process.argv[2]);
const { chromium } = createRequire(job.modules + "/")("playwright-core");
const consoleLog = [];
const failedRequests = [];
const results = [];
const dicomweb = [];
const MAX_LOGGED = 500;

const browser = await chromium.launch({
  executablePath: job.chromium,
  headless: true,
  args: [
    "--no-sandbox", // CI runs as root
    "--disable-dev-shm-usage",
    "--use-angle=swiftshader", // WebGL without a GPU, for cornerstone3D
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
  ],
});

// The canvases cornerstone3D draws into; sampled by reading their centre as RGBA.
async function canvasLevels(page, selector) {
  return page.evaluate((selector) => {
    let best = 0;
    for (const canvas of document.querySelectorAll(selector)) {
      if (canvas.width < 16 || canvas.height < 16) continue;
      let data;
      try {
        const probe = document.createElement("canvas");
        probe.width = canvas.width;
        probe.height = canvas.height;
        const context = probe.getContext("2d");
        context.drawImage(canvas, 0, 0);
        const w = Math.floor(canvas.width / 2);
        const h = Math.floor(canvas.height / 2);
        data = context.getImageData(Math.floor(w / 2), Math.floor(h / 2), w, h).data;
      } catch (error) {
        continue;
      }
      const levels = new Set();
      for (let i = 0; i < data.length; i += 4) levels.add(data[i]);
      best = Math.max(best, levels.size);
    }
    return best;
  }, selector);
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("console", (message) => consoleLog.push(`[${message.type()}] ${message.text()}`));
  page.on("pageerror", (error) => consoleLog.push(`[pageerror] ${error.message}`));
  page.on("requestfailed", (request) =>
    failedRequests.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`),
  );
  page.on("response", async (response) => {
    const request = response.request();
    if (response.status() >= 400) {
      failedRequests.push(`${request.method()} ${response.url()}: ${response.status()}`);
    }
    const url = new URL(response.url());
    if (url.origin !== new URL(job.base).origin || url.pathname.startsWith("/viewer")) return;
    if (dicomweb.length >= MAX_LOGGED) return;
    const headers = await request.allHeaders().catch(() => request.headers());
    dicomweb.push({
      method: request.method(),
      path: url.pathname + url.search,
      accept: headers.accept ?? "",
      status: response.status(),
      contentType: response.headers()["content-type"] ?? "",
    });
  });

  for (const check of job.checks) {
    const result = { name: check.name, ok: false };
    results.push(result);
    const started = Date.now();
    try {
      await page.goto(job.base + check.path, { waitUntil: "load", timeout: job.timeoutMs });
      for (const text of check.texts || []) {
        await page.getByText(text, { exact: false }).first().waitFor({
          state: "visible",
          timeout: job.timeoutMs,
        });
      }
      if (check.screenshot) {
        const selector = check.selector || "canvas";
        const deadline = Date.now() + job.timeoutMs;
        let levels = 0;
        while (Date.now() < deadline) {
          levels = await canvasLevels(page, selector);
          if (levels >= (check.minLevels || 16)) break;
          await page.waitForTimeout(500);
        }
        result.levels = levels;
        for (const label of ["Skip all", "Confirm and hide"]) {
          // OHIF's first-visit tour and notice would cover part of the screenshot
          await page.getByText(label, { exact: true }).first().click({ timeout: 2000 }).catch(() => {});
        }
        await page.waitForTimeout(check.settleMs ?? 1000); // let overlays finish drawing
        await page.screenshot({ path: check.screenshot });
        result.screenshot = check.screenshot;
        if (levels < (check.minLevels || 16)) {
          throw new Error(`the viewport shows ${levels} grey levels after ${job.timeoutMs} ms`);
        }
      }
      result.ok = true;
    } catch (error) {
      result.error = String(error?.message || error);
      if (check.screenshot && !result.screenshot) {
        await page.screenshot({ path: check.screenshot }).catch(() => {});
        result.screenshot = check.screenshot;
      }
    }
    result.seconds = (Date.now() - started) / 1000;
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ results, console: consoleLog, failedRequests, dicomweb }) + "\n");
