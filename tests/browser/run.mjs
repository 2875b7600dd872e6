// How every browser test runs: Debian's chromium (or $CHROMIUM), a test body that fills `out`,
// then one JSON line on stdout and exit status 0 only if the body finished.
import { chromium } from "playwright-core";

export async function run(args, body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [...args, "--no-sandbox"],
  });
  const out = {};
  try {
    await body(browser, out);
    out.ok = true;
  } catch (error) {
    out.ok = false;
    out.error = String(error);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}
