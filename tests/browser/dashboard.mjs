// Opens maskwatch's dashboard in Debian's chromium and reports the camera table and the camera
// choices: first as the server starts, then while a browser session sends a frame, then after
// the session has closed.
// Usage: node dashboard.mjs BASE_URL TOKEN ; prints one JSON line.
import { run, watch } from "./run.mjs";

const [base, token] = process.argv.slice(2);
const board = () => ({
  rows: [...document.querySelectorAll("#cameras tbody tr")].map((tr) =>
    [...tr.cells].map((td) => ({ text: td.textContent, error: td.classList.contains("error") }))),
  choices: [...document.getElementById("camera").options].map((o) => o.value),
  people: document.getElementById("total-people").textContent,
});
const listed = ({ name, present }) => [...document.querySelectorAll("#cameras tbody tr")]
  .some((tr) => tr.cells[0].textContent === name) === present;
await run([], async (browser, out) => {
  const page = await browser.newPage();
  await watch(page);
  await page.goto(`${base}/dashboard?token=${token}`);
  await page.waitForFunction(
    () => document.querySelectorAll("#cameras tbody tr").length > 0, null, { timeout: 30000 });
  out.start = await page.evaluate(board);
  out.reply = await page.evaluate(async (token) => {
    const canvas = Object.assign(document.createElement("canvas"), { width: 160, height: 120 });
    const jpeg = await new Promise((done) => canvas.toBlob(done, "image/jpeg"));
    const socket = new WebSocket(
      `${location.origin.replace(/^http/, "ws")}/ws/detect?token=${token}`);
    window.session = socket;
    await new Promise((done) => { socket.onopen = done; });
    socket.send(jpeg);
    return JSON.parse(await new Promise((done) => { socket.onmessage = (m) => done(m.data); }));
  }, token);
  await page.waitForFunction(listed, { name: out.reply.camera, present: true },
    { timeout: 30000 });
  out.during = await page.evaluate(board);
  await page.evaluate(() => window.session.close());
  await page.waitForFunction(listed, { name: out.reply.camera, present: false },
    { timeout: 30000 });
  out.after = await page.evaluate(board);
});
