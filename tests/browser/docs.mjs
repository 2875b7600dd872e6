// Opens the API docs in Debian's chromium with the network closed to everything but the
// server: reports the operations Swagger UI lists on /docs, the operations ReDoc renders on
// /redoc, and every request that tried to leave the server (each one refused).
// Usage: node docs.mjs BASE_URL ; prints one JSON line.
import { run } from "./run.mjs";

const [base] = process.argv.slice(2);
const origin = new URL(base).origin;
// Name resolution fails for every host but the loopback address the server is on.
const closed = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"];
await run(closed, async (browser, out) => {
  out.elsewhere = [];
  const context = await browser.newContext();
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith("data:") || url.startsWith("blob:")) {
      return route.continue();
    }
    out.elsewhere.push(url);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") console.error("page:", m.text()); });
  await page.goto(`${base}/docs`);
  await page.waitForSelector(".opblock", { timeout: 30000 });
  out.swagger = await page.$$eval(".opblock", (blocks) => blocks.map((b) =>
    `${b.querySelector(".opblock-summary-method").textContent} ` +
    b.querySelector(".opblock-summary-path").getAttribute("data-path")));
  out.swaggerTitle = await page.textContent(".title");
  await page.goto(`${base}/redoc`);
  await page.waitForSelector("[data-section-id^='operation/']", { timeout: 30000 });
  out.redoc = await page.$$eval("[data-section-id^='operation/'] h2",
    (headings) => headings.map((h) => h.textContent));
  out.redocPaths = await page.evaluate(() => document.body.innerText.includes("/api/v1/detect"));
});
