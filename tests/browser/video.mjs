// Plays videos in a <video> element of Debian's chromium, each served from the loopback
// address: reports for each whether a frame was decoded (readyState >= 2, its size and how far
// it played) or the media error the browser gave.
// Usage: node video.mjs URL... ; prints one JSON line.
import { run } from "./run.mjs";

const urls = process.argv.slice(2);
await run(["--autoplay-policy=no-user-gesture-required"], async (browser, out) => {
  const page = await browser.newPage();
  out.videos = [];
  for (const url of urls) {
    await page.goto(new URL("/", url).href);
    out.videos.push(await page.evaluate(async (src) => {
      const video = Object.assign(document.createElement("video"), { muted: true, src });
      document.body.append(video);
      const outcome = await new Promise((done) => {
        video.onerror = () => done({ error: video.error ? video.error.code : -1 });
        video.onloadeddata = () => done({});
        setTimeout(() => done({ timeout: true }), 15000);
      });
      if (!outcome.error && !outcome.timeout) {
        await video.play();
        await new Promise((done) => setTimeout(done, 500));
      }
      const state = { src, readyState: video.readyState, width: video.videoWidth,
                      height: video.videoHeight, time: video.currentTime, ...outcome };
      video.remove();
      return state;
    }, url));
  }
});
