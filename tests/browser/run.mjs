// How every browser test runs: Debian's chromium (or $CHROMIUM), a test body that fills `out`,
// then one JSON line on stdout and exit status 0 only if the body finished and no page it
// `watch`ed broke its Content-Security-Policy.
import { chromium } from "playwright-core";

const CSP = "Content-Security-Policy violation:";
const violations = [];

// Prints the page's console errors on stderr and records what its Content-Security-Policy
// blocked (a script, a style, a connection), which fails the run.
export async function watch(page) {
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    console.error("page:", m.text());
    if (m.text().startsWith(CSP)) violations.push(m.text());
  });
  await page.addInitScript((prefix) => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`${prefix} ${e.effectiveDirective} ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
    });
  }, CSP);
  return page;
}

export async function run(args, body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [...args, "--no-sandbox"],
  });
  const out = {};
  try {
    await body(browser, out);
    if (violations.length) throw new Error(violations.join("; "));
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
