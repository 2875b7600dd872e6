// Opens maskwatch's page in Debian's chromium with a fake camera fed from a y4m video, and
// checks that labelled boxes are drawn over the video and that the dashboard counts move.
// Usage: node page.mjs BASE_URL TOKEN VIDEO.y4m SCREENSHOT.png ; prints one JSON line.
import { run, watch } from "./run.mjs";

const [base, token, video, screenshot] = process.argv.slice(2);
const fakeCamera = [
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  `--use-file-for-fake-video-capture=${video}`,
];
await run(fakeCamera, async (browser, out) => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  await watch(page);
  await page.goto(`${base}/?token=${token}&autostart=1`);
  await page.waitForFunction(
    () => window.maskwatchPage && window.maskwatchPage.frames >= 15
      && window.maskwatchPage.lastResult.faces.some((f) => f.label && f.track !== null),
    null, { timeout: 60000 });
  out.page = await page.evaluate(() => {
    const result = window.maskwatchPage.lastResult;
    const canvas = document.getElementById("overlay");
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let drawn = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn += 1;
    return {
      frames: window.maskwatchPage.frames,
      faces: result.faces.map((f) => ({ label: f.label, track: f.track, box: f.box })),
      fps: Number(document.getElementById("fps").textContent),
      rtt: Number(document.getElementById("rtt").textContent),
      overlay: { width: canvas.width, height: canvas.height, drawn },
    };
  });
  await page.screenshot({ path: screenshot });
  const dashboard = await watch(await context.newPage());
  await dashboard.goto(`${base}/dashboard?token=${token}`);
  await dashboard.waitForFunction(
    () => Number(document.getElementById("total-people").textContent) > 0,
    null, { timeout: 30000 });
  out.dashboard = await dashboard.evaluate(() => ({
    people: Number(document.getElementById("total-people").textContent),
    cameras: document.querySelectorAll("#cameras tbody tr").length,
    events: document.querySelectorAll("#events li").length,
  }));
});
