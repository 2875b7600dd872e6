// Opens maskwatch's page (fake camera) and reports what the page says once the WebSocket is
// refused, and how many times it tried to connect in the seconds after.
// Usage: node refused.mjs BASE_URL [MESSAGE_START] ; prints one JSON line. Without a token the
// page is refused for good (1008); with one, on a busy server, it is told to try again later
// (1013): the page waits for a message starting with MESSAGE_START.
import { run, watch } from "./run.mjs";

const [base, expected = "this server needs a token"] = process.argv.slice(2);
const fakeCamera = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"];
await run(fakeCamera, async (browser, out) => {
  out.sockets = 0;
  const page = await watch(await browser.newPage());
  page.on("websocket", () => { out.sockets += 1; });
  const join = base.includes("?") ? "&" : "?";
  await page.goto(`${base}${join}autostart=1`);
  await page.waitForFunction(
    (start) => document.getElementById("message").textContent.startsWith(start),
    expected, { timeout: 30000 });
  await page.waitForTimeout(5000);  // the page retried every 2 s before; it must not now
  out.message = await page.evaluate(() => document.getElementById("message").textContent);
});
