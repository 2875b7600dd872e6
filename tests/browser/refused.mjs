// Opens maskwatch's page without the token it needs (fake camera) and reports what the page
// says once the WebSocket is refused, and how many times it tried to connect in the seconds after.
// Usage: node refused.mjs BASE_URL ; prints one JSON line.
import { chromium } from "playwright-core";

const [base] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--no-sandbox"],
});
const out = { sockets: 0 };
try {
  const page = await browser.newPage();
  page.on("websocket", () => { out.sockets += 1; });
  await page.goto(`${base}/?autostart=1`);
  await page.waitForFunction(() => window.maskwatchPage && window.maskwatchPage.refused,
    null, { timeout: 30000 });
  await page.waitForTimeout(5000);  // the page retried every 2 s before; it must not now
  out.message = await page.evaluate(() => document.getElementById("message").textContent);
  out.ok = true;
} catch (error) {
  out.ok = false;
  out.error = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
