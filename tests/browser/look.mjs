// Opens maskwatch's page (a fake camera fed from a y4m video) and dashboard at desktop and phone
// sizes, saves a screenshot of each, and reports what can be measured: horizontal overflow,
// the label boxes against the picture's rectangle, the favicon, Stop and Start again, the
// timeline's legend, a failed camera's error, the sparklines and the label pills.
// Usage: node look.mjs BASE_URL TOKEN VIDEO.y4m DIR ; prints one JSON line.
import { run, watch } from "./run.mjs";

const [base, token, video, dir] = process.argv.slice(2);
const SIZES = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true,
           hasTouch: true },
};
const fakeCamera = [
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  `--use-file-for-fake-video-capture=${video}`,
];

const overflow = () => document.documentElement.scrollWidth - document.documentElement.clientWidth;

// Samples the labels drawn over some frames, in page pixels, with the picture's rectangle as
// this test computes it (the video element's box, object-fit: contain), and how far outside
// any label went; `pushed` counts labels that would have run off the picture where the face is.
async function sampleLabels() {
  const state = window.maskwatchPage;
  const video = document.getElementById("video");
  const overlay = document.getElementById("overlay").getBoundingClientRect();
  const box = video.getBoundingClientRect();
  const scale = Math.min(box.width / video.videoWidth, box.height / video.videoHeight);
  const picture = {
    left: box.left + (box.width - video.videoWidth * scale) / 2,
    top: box.top + (box.height - video.videoHeight * scale) / 2,
  };
  picture.right = picture.left + video.videoWidth * scale;
  picture.bottom = picture.top + video.videoHeight * scale;
  const seen = { labels: 0, outside: 0, pushed: 0, settled: 0, unsettled: 0 };
  for (let i = 0; i < 25; i += 1) {
    const result = state.lastResult;
    state.labels.forEach((label, k) => {
      const left = overlay.left + label.x, top = overlay.top + label.y;
      const out = Math.max(picture.left - left, left + label.w - picture.right,
                           picture.top - top, top + label.h - picture.bottom, 0);
      seen.outside = Math.max(seen.outside, out);
      seen.labels += 1;
      seen[label.settled ? "settled" : "unsettled"] += 1;
      const face = result.faces[k];
      const natural = picture.left + (face.box[0] * (picture.right - picture.left)) / result.width;
      if (natural + label.w > picture.right + 0.5) seen.pushed += 1;
    });
    await new Promise((done) => setTimeout(done, 120));
  }
  return {
    ...seen,
    picture: { width: picture.right - picture.left, height: picture.bottom - picture.top },
    overlayMatchesVideo: Math.abs(overlay.width - box.width) < 1
      && Math.abs(overlay.height - box.height) < 1,
    videoBottom: box.bottom,
    window: { width: innerWidth, height: innerHeight },
  };
}

function measureBoard() {
  const rows = [...document.querySelectorAll("#cameras tbody tr")];
  const chips = [...document.querySelectorAll(".chip")];
  const lines = (c) => c.getClientRects().length > 1
    || c.getBoundingClientRect().height > 2 * parseFloat(getComputedStyle(c).fontSize);
  const scroll = document.querySelector(".scroll");
  return {
    overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    tableOverflow: scroll.scrollWidth - scroll.clientWidth,
    legend: [...document.querySelectorAll("#timeline-legend .chip")].map((c) => c.dataset.label),
    rows: rows.map((tr) => ({
      name: tr.cells[0].textContent,
      error: tr.querySelector("td.error") ? tr.querySelector("td.error").textContent : null,
      sparkline: Boolean(tr.querySelector("svg.sparkline")),
      points: tr.querySelectorAll("svg.sparkline circle").length,
      last: tr.cells[3].textContent,
    })),
    chips: chips.length,
    wrappedChips: chips.filter(lines).map((c) => c.textContent),
  };
}

await run(fakeCamera, async (browser, out) => {
  for (const [size, options] of Object.entries(SIZES)) {
    const seen = (out[size] = {});
    const context = await browser.newContext(options);
    const page = await context.newPage();
    await watch(page);
    const missing = [];
    page.on("response", (r) => { if (r.status() === 404) missing.push(r.url()); });
    await page.goto(`${base}/?token=${token}&autostart=1`);
    await page.waitForFunction(
      () => window.maskwatchPage.frames >= 10
        && window.maskwatchPage.lastResult.faces.some((f) => f.settled),
      null, { timeout: 90000 });
    seen.labels = await page.evaluate(sampleLabels);
    seen.overflow = await page.evaluate(overflow);
    seen.favicon = await page.evaluate(async () => {
      const icon = await fetch("/favicon.ico");
      const link = await fetch(document.querySelector("link[rel=icon]").href);
      return { status: icon.status, type: icon.headers.get("content-type"), link: link.status };
    });
    seen.legend = await page.evaluate(
      () => [...document.querySelectorAll("#key .chip")].map((c) => c.dataset.label));
    await page.screenshot({ path: `${dir}/page-${size}.png` });

    const board = await watch(await context.newPage());
    board.on("response", (r) => { if (r.status() === 404) missing.push(r.url()); });
    await board.goto(`${base}/dashboard?token=${token}`);
    await board.waitForFunction(
      () => document.querySelector("#cameras td.error")
        && document.querySelector("#cameras svg.sparkline circle")
        && document.querySelector("#timeline .bar"),
      null, { timeout: 60000 });
    seen.dashboard = await board.evaluate(measureBoard);
    await board.screenshot({ path: `${dir}/dashboard-${size}.png`, fullPage: true });

    await page.bringToFront();
    await page.evaluate(() => { window.stream = window.maskwatchPage.stream; });
    await page.click("#stop");
    seen.stop = await page.evaluate(async () => {
      const state = window.maskwatchPage;
      const frames = state.frames;
      await new Promise((done) => setTimeout(done, 1500));
      return {
        start: !document.getElementById("start").disabled,
        stop: !document.getElementById("stop").disabled,
        released: window.stream.getTracks().every((t) => t.readyState === "ended"),
        video: document.getElementById("video").srcObject === null,
        framesAfter: state.frames - frames,
        labels: state.labels.length,
        message: document.getElementById("message").textContent,
      };
    });
    await page.screenshot({ path: `${dir}/page-stopped-${size}.png` });
    const before = await page.evaluate(() => window.maskwatchPage.frames);
    await page.click("#start");
    await page.waitForFunction((n) => window.maskwatchPage.frames >= n + 3, before,
                               { timeout: 60000 });
    seen.restarted = true;
    seen.missing = missing;
    await context.close();
  }
});
