// Drives headless Chromium through the status page, a target's page and /docs.
// Usage: node status_page.mjs BASE_URL EXPECTED_JSON SCREENSHOT_DIR
// EXPECTED_JSON: [{"repo", "server", "state"}] in the order the page lists them.
// Exits non-zero with a message on the first failed check. Run by tests/status_page_browser.rs.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, expectedJson, screenshots] = process.argv.slice(2);
if (!base || !expectedJson || !screenshots) {
  console.error('usage: node status_page.mjs BASE_URL EXPECTED_JSON SCREENSHOT_DIR');
  process.exit(2);
}
const expected = JSON.parse(expectedJson);
mkdirSync(screenshots, { recursive: true });

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function same(actual, wanted, what) {
  const [a, w] = [JSON.stringify(actual), JSON.stringify(wanted)];
  check(a === w, `${what}: expected ${w}, got ${a}`);
}

/** The target table's rows as {repo, server, state, label, color}. */
async function listedTargets(page) {
  return page.locator('table#targets tbody tr').evaluateAll((rows) =>
    rows.map((row) => {
      const chip = row.querySelector('.state');
      return {
        repo: row.cells[0].textContent.trim(),
        server: row.querySelector('th a').textContent.trim(),
        state: row.dataset.state,
        label: chip.textContent.trim(),
        color: getComputedStyle(chip).backgroundColor,
      };
    }),
  );
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  // The pages must work with JavaScript off.
  const plain = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
  const page = await plain.newPage();
  const foreign = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(base)) foreign.push(request.url());
  });

  const response = await page.goto(`${base}/`);
  same(response.status(), 200, 'GET / status');
  check((await page.title()).includes('Status'), `title: ${await page.title()}`);
  const refresh = await page.locator('meta[http-equiv="refresh"]').getAttribute('content');
  check(Number(refresh) > 0, `self-refresh: ${refresh}`);

  const targets = await listedTargets(page);
  same(
    targets.map(({ repo, server, state }) => ({ repo, server, state })),
    expected,
    'targets listed on /',
  );
  for (const target of targets) {
    check(target.label.length > 0, `state of ${target.repo}/${target.server} has no text label`);
  }
  const colors = new Map(targets.map((target) => [target.state, target.color]));
  check(
    new Set(colors.values()).size === colors.size,
    `each state has its own color: ${JSON.stringify([...colors])}`,
  );
  await page.screenshot({ path: join(screenshots, 'status-page.png'), fullPage: true });

  // Readable on a phone: the page itself does not scroll sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  check(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);
  await page.screenshot({ path: join(screenshots, 'status-page-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // The filter is a plain GET form.
  await page.selectOption('select#state', 'OUT_OF_SYNC');
  await Promise.all([page.waitForURL(/state=OUT_OF_SYNC/), page.click('form button[type=submit]')]);
  same(
    (await listedTargets(page)).map(({ repo, server }) => ({ repo, server })),
    expected.filter((t) => t.state === 'OUT_OF_SYNC').map(({ repo, server }) => ({ repo, server })),
    'targets listed with state=OUT_OF_SYNC',
  );

  // Follow the first drifting target's link to its own page.
  const drifting = expected.find((t) => t.state === 'OUT_OF_SYNC');
  await Promise.all([
    page.waitForURL(/\/target\?/),
    page.locator('table#targets tbody tr').filter({ hasText: drifting.server }).locator('th a').click(),
  ]);
  const heading = (await page.locator('h1').textContent()).replace(/\s+/g, ' ');
  check(
    heading.includes(`${drifting.repo} / ${drifting.server}`),
    `target page heading "${heading}" names ${drifting.repo} / ${drifting.server}`,
  );
  const transitions = await page.locator('table#transitions tbody tr').count();
  check(transitions >= 2, `target page lists ${transitions} transitions, expected at least 2`);
  const checks = await page.locator('table#checks tbody tr').count();
  check(checks >= transitions, `target page lists ${checks} recent checks`);
  const segments = await page.locator('.timeline span').count();
  same(segments, transitions, 'timeline segments');
  await page.screenshot({ path: join(screenshots, 'target-page.png'), fullPage: true });
  same(foreign, [], 'requests to other hosts');
  await plain.close();

  // Swagger UI needs JavaScript; it must load the served spec from this server only.
  const scripted = await browser.newContext();
  const docs = await scripted.newPage();
  const docsForeign = [];
  docs.on('request', (request) => {
    if (!request.url().startsWith(base)) docsForeign.push(request.url());
  });
  const specLoaded = docs.waitForResponse((r) => r.url() === `${base}/openapi.json` && r.status() === 200);
  await docs.goto(`${base}/docs/`);
  await specLoaded;
  await docs.locator('.swagger-ui .info .title').filter({ hasText: 'gitops-status-server' }).waitFor();
  await docs.locator('.opblock-summary-path', { hasText: '/badge.svg' }).first().waitFor();
  await docs.screenshot({ path: join(screenshots, 'docs.png') });
  same(docsForeign, [], 'requests from /docs to other hosts');
  console.log(`ok: ${targets.length} targets, ${transitions} transitions, /docs loaded the spec`);
} catch (error) {
  console.error(`FAILED: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
