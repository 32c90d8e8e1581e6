// Opens a `skyfuse report` page from file:// in Debian's chromium through playwright-core.
// Usage: node report_page.mjs FILE_URL SCREENSHOT
// Prints one JSON line: the models table rows, image sizes, console errors, failed and non-file requests.
import { launch } from './chromium.mjs';

const [url, screenshot] = process.argv.slice(2);

const { page, close } = await launch({ width: 1280, height: 900 });
let failed = null;
try {
  const errors = [];
  const failedRequests = [];
  const requests = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('requestfailed', (r) => failedRequests.push(r.url()));
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  const rows = await page.$$eval('#models tbody tr', (trs) =>
    trs.map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent.trim())),
  );
  const images = await page.$$eval('img', (imgs) =>
    imgs.map((img) => ({ alt: img.alt, complete: img.complete, width: img.naturalWidth })),
  );
  const runs = await page.$$eval('#runs tbody tr', (trs) => trs.length);
  await page.screenshot({ path: screenshot, fullPage: true });
  const offsite = requests.filter((u) => !u.startsWith('file://') && !u.startsWith('data:'));
  console.log(JSON.stringify({ rows, images, runs, errors, failedRequests, offsite, requests: requests.length }));
} catch (e) {
  failed = e;
} finally {
  await close();
}
if (failed) {
  console.error(String(failed.stack || failed));
  process.exit(1);
}
