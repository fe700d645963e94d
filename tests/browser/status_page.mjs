// Drives headless Chromium through the status page, a target's page, a badge and /docs.
// Usage: node status_page.mjs BASE_URL EXPECTED_JSON SCREENSHOT_DIR SILENCES_JSON
// EXPECTED_JSON: [{"repo", "server", "state", "last"?, "ack"?, "silenced"?}] in the order the page
// lists them; "last" is the last result a STALE target must still show, "ack" the acknowledgement
// that applies ({id, reason, by, until, until_text}), "silenced" the reason of the running silence
// that covers it.
// SILENCES_JSON: [{id, reason, by, running, repos, servers}] as the page lists them, newest first.
// Exits non-zero with a message on the first failed check. Run by tests/status_page_browser.rs.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, expectedJson, screenshots, silencesJson] = process.argv.slice(2);
if (!base || !expectedJson || !screenshots || !silencesJson) {
  console.error('usage: node status_page.mjs BASE_URL EXPECTED_JSON SCREENSHOT_DIR SILENCES_JSON');
  process.exit(2);
}
const expected = JSON.parse(expectedJson);
const silences = JSON.parse(silencesJson);
mkdirSync(screenshots, { recursive: true });

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function same(actual, wanted, what) {
  const [a, w] = [JSON.stringify(actual), JSON.stringify(wanted)];
  check(a === w, `${what}: expected ${w}, got ${a}`);
}

/** The target table's rows as {repo, server, state, last, acknowledged, silenced, label, color,
 * stateText, files}. */
async function listedTargets(page) {
  return page.locator('table#targets tbody tr').evaluateAll((rows) =>
    rows.map((row) => {
      const chip = row.querySelector('.state');
      return {
        repo: row.cells[0].textContent.trim(),
        server: row.querySelector('th a').textContent.trim(),
        state: row.dataset.state,
        last: row.dataset.syncStatus,
        acknowledged: row.dataset.acknowledged ?? null,
        silenced: row.dataset.silenced === 'true',
        label: chip.textContent.trim(),
        color: getComputedStyle(chip).backgroundColor,
        stateText: row.cells[2].innerText.replace(/\s+/g, ' ').trim(),
        files: row.cells[4].innerText.replace(/\s+/g, ' ').trim(),
      };
    }),
  );
}

/** Words in the page's labels that a line break cuts in two (file paths and names may wrap). */
async function brokenWords(page) {
  return page.evaluate(() => {
    const broken = [];
    const scopes = document.querySelectorAll(
      '.state, .tag, .last, ul.summary li, form label, legend, button, caption, thead th, dt, h1',
    );
    for (const scope of scopes) {
      const walker = document.createTreeWalker(scope, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const match of node.data.matchAll(/\S+/g)) {
          const range = document.createRange();
          range.setStart(node, match.index);
          range.setEnd(node, match.index + match[0].length);
          const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
          if (lines.size > 1) broken.push(match[0]);
        }
      }
    }
    return broken;
  });
}

/** The state boxes that are ticked. */
async function tickedStates(page) {
  return page
    .locator('fieldset#state input[type=checkbox]:checked')
    .evaluateAll((boxes) => boxes.map((box) => box.value));
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
    expected.map(({ repo, server, state }) => ({ repo, server, state })),
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
  // Not by colour alone: each state's chip says something different in text too.
  const labels = new Map(targets.map((target) => [target.state, target.label]));
  check(
    new Set(labels.values()).size === labels.size,
    `each state has its own text: ${JSON.stringify([...labels])}`,
  );
  check(labels.get('ERROR') !== undefined && !labels.get('ERROR').includes('sync'), `ERROR chip: ${labels.get('ERROR')}`);
  // A stale target still says what its last check found.
  for (const target of targets.filter((t) => t.state === 'STALE')) {
    const wanted = expected.find((t) => t.repo === target.repo && t.server === target.server);
    same(target.last, wanted.last, `last result of stale ${target.server}`);
    check(
      target.stateText.includes('(last:') && target.stateText.includes(labels.get(wanted.last) ?? ''),
      `stale ${target.server} shows "${target.stateText}", not its last result ${wanted.last}`,
    );
  }
  const staleDrift = targets.find((t) => t.state === 'STALE' && t.last === 'OUT_OF_SYNC');
  check(staleDrift, 'a stale target whose last check drifted');
  check(
    /Stale \(last: .*Out of sync, 2 files\)/.test(staleDrift.stateText),
    `stale drift shows "${staleDrift.stateText}"`,
  );
  // The reason for an ERROR is on the index, in full on hover.
  const error = targets.find((t) => t.state === 'ERROR');
  check(error.files.includes('Connection refused'), `ERROR row shows "${error.files}"`);
  const title = await page.locator('tr[data-state="ERROR"] .message').getAttribute('title');
  check(title.includes('port 22: Connection refused'), `message title: ${title}`);
  // Acknowledged drift: the tag, by whom, until when (a <time> with the exact instant) and why,
  // beside a state chip that is unchanged. A row a running silence covers says so and why.
  for (const [index, wanted] of expected.entries()) {
    const target = targets[index];
    const row = page.locator('table#targets tbody tr').nth(index);
    const name = `${wanted.repo}/${wanted.server}`;
    if (wanted.ack) {
      same(target.acknowledged, String(wanted.ack.id), `data-acknowledged of ${name}`);
      for (const part of ['Acknowledged', `by ${wanted.ack.by}`, `until ${wanted.ack.until_text}`, wanted.ack.reason]) {
        check(target.stateText.includes(part), `${name} shows "${target.stateText}", without "${part}"`);
      }
      check(await row.locator('.tag-ack').isVisible(), `the Acknowledged tag of ${name} is visible`);
      same(await row.locator('[data-ack] time').getAttribute('datetime'), wanted.ack.until, `until of ${name}`);
      const tag = await row.locator('.tag-ack').evaluate((el) => getComputedStyle(el).backgroundColor);
      check(![...colors.values()].includes(tag), `the Acknowledged tag (${tag}) has a color no state has`);
    } else {
      check(
        target.acknowledged === null && !target.stateText.includes('Acknowledged'),
        `${name} is not acknowledged: "${target.stateText}"`,
      );
    }
    if (wanted.silenced) {
      check(target.silenced, `${name} is marked silenced`);
      check(
        target.stateText.includes('Silenced until') && target.stateText.includes(wanted.silenced),
        `silenced ${name} shows "${target.stateText}"`,
      );
    } else {
      check(!target.silenced && !target.stateText.includes('Silenced'), `${name} is not silenced: "${target.stateText}"`);
    }
  }
  // The silences running now and coming, newest first: what they cover, who made them and why.
  check(await page.getByRole('heading', { name: 'Maintenance silences' }).isVisible(), 'the silences heading');
  const listedSilences = await page.locator('table#silences tbody tr').evaluateAll((rows) =>
    rows.map((row) => ({ id: row.id, running: row.dataset.running, text: row.innerText.replace(/\s+/g, ' ').trim() })),
  );
  same(
    listedSilences.map(({ id, running }) => [id, running]),
    silences.map(({ id, running }) => [`silence-${id}`, String(running)]),
    'silences listed',
  );
  for (const [index, wanted] of silences.entries()) {
    const { text } = listedSilences[index];
    for (const part of [wanted.running ? 'Running' : 'Coming', wanted.reason, wanted.repos, wanted.servers, wanted.by]) {
      check(text.includes(part), `silence ${wanted.id} shows "${text}", without "${part}"`);
    }
  }
  const running = silences.find((silence) => silence.running);
  same(
    await page.locator('table#targets tbody tr[data-silenced] [data-silence] a').first().getAttribute('href'),
    `#silence-${running.id}`,
    'a silenced row links to its silence',
  );
  // The favicon the page links is served.
  const icon = await page.locator('link[rel=icon]').getAttribute('href');
  const iconResponse = await page.request.get(`${base}${icon}`);
  same(iconResponse.status(), 200, `GET ${icon}`);
  same(await brokenWords(page), [], 'words broken across lines at desktop width');
  await page.screenshot({ path: join(screenshots, 'status-page.png'), fullPage: true });
  // Dark mode: the tags stay legible on the dark background.
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: join(screenshots, 'status-page-dark.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });

  // Readable on a phone: the page itself does not scroll sideways, and no label breaks mid-word.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  check(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);
  same(await brokenWords(page), [], 'words broken across lines on a phone');
  await page.screenshot({ path: join(screenshots, 'status-page-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // The state filter is a plain GET form with one box per state; several ticked boxes survive a
  // re-submit, and the API takes the same selection as a comma-separated list.
  const wantedStates = ['ERROR', 'STALE'];
  const selected = expected
    .filter((t) => wantedStates.includes(t.state))
    .map(({ repo, server }) => ({ repo, server }));
  for (const state of wantedStates) {
    await page.check(`fieldset#state input[value="${state}"]`);
  }
  await Promise.all([page.waitForURL(/state=ERROR&state=STALE/), page.click('form button[type=submit]')]);
  const firstUrl = page.url();
  same(await tickedStates(page), wantedStates, 'boxes ticked after the first submit');
  same(
    (await listedTargets(page)).map(({ repo, server }) => ({ repo, server })),
    selected,
    'targets listed with state=ERROR&state=STALE',
  );
  await Promise.all([page.waitForNavigation(), page.click('form button[type=submit]')]);
  same(page.url(), firstUrl, 'the URL after a re-submit');
  same(await tickedStates(page), wantedStates, 'boxes ticked after a re-submit');
  same(
    (await listedTargets(page)).map(({ repo, server }) => ({ repo, server })),
    selected,
    'targets listed after a re-submit',
  );
  const counts = await page.locator('ul.summary li').evaluateAll((items) =>
    items.map((item) => item.innerText.replace(/\s+/g, ' ').trim()),
  );
  check(
    counts.filter((text) => text.includes('(not shown)')).length === 2,
    `the counts mark the states the filter hides: ${JSON.stringify(counts)}`,
  );
  await page.screenshot({ path: join(screenshots, 'status-page-filtered.png'), fullPage: true });
  const api = await (await page.request.get(`${base}/status.json?state=${wantedStates.join(',')}`)).json();
  same(
    api.map(({ repo, server }) => ({ repo, server })),
    selected,
    '/status.json with the same states as a comma-separated list',
  );
  await page.goto(`${base}/?state=${wantedStates.join(',')}`);
  same(await tickedStates(page), wantedStates, 'boxes ticked from a comma-separated link');
  for (const state of wantedStates) {
    await page.uncheck(`fieldset#state input[value="${state}"]`);
  }
  await page.check('fieldset#state input[value="OUT_OF_SYNC"]');
  await Promise.all([page.waitForURL(/state=OUT_OF_SYNC(&|$)/), page.click('form button[type=submit]')]);
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
  // Its acknowledgement in force, its acknowledgements' list, and the silence that covers it.
  if (drifting.ack) {
    check(heading.includes('Acknowledged'), `target page heading "${heading}" says Acknowledged`);
    const facts = (await page.locator('#acknowledged + dd').innerText()).replace(/\s+/g, ' ');
    for (const part of [`By ${drifting.ack.by}`, drifting.ack.reason, drifting.ack.until_text, 'Files any']) {
      check(facts.includes(part), `acknowledgement in force shows "${facts}", without "${part}"`);
    }
    const acks = await page.locator('table#acks tbody tr').evaluateAll((rows) =>
      rows.map((row) => row.innerText.replace(/\s+/g, ' ').trim()),
    );
    check(
      acks.length === 1 && acks[0].includes('In force') && acks[0].includes(drifting.ack.by),
      `acknowledgements: ${JSON.stringify(acks)}`,
    );
  }
  if (drifting.silenced) {
    const facts = (await page.locator('dl').first().innerText()).replace(/\s+/g, ' ');
    check(facts.includes('Silenced until') && facts.includes(drifting.silenced), `target facts: ${facts}`);
  }
  await page.screenshot({ path: join(screenshots, 'target-page.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const targetOverflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  check(targetOverflow <= 0, `the target page is ${targetOverflow}px wider than a phone screen`);
  await page.screenshot({ path: join(screenshots, 'target-page-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // A stale target's own page: when it went stale, and what it last found.
  const stale = expected.find((t) => t.state === 'STALE' && t.last === 'OUT_OF_SYNC');
  await page.goto(`${base}/target?repo=${encodeURIComponent(stale.repo)}&server=${encodeURIComponent(stale.server)}`);
  const staleHeading = (await page.locator('h1').innerText()).replace(/\s+/g, ' ');
  check(/Stale \(last: .*Out of sync, 2 files\)/.test(staleHeading), `stale target heading: ${staleHeading}`);
  const facts = (await page.locator('dl').first().innerText()).replace(/\s+/g, ' ');
  check(facts.includes('Stale since'), `stale target facts: ${facts}`);
  await page.screenshot({ path: join(screenshots, 'stale-target-page.png'), fullPage: true });

  // The badge of an acknowledged drift says so, in its own color.
  const acknowledged = expected.find((t) => t.ack);
  await page.goto(
    `${base}/badge.svg?repo=${encodeURIComponent(acknowledged.repo)}&server=${encodeURIComponent(acknowledged.server)}&label=target`,
  );
  const badge = await page.locator('svg').textContent();
  check(badge.includes('out of sync (ack)'), `badge says "${badge}"`);
  await page.locator('svg').screenshot({ path: join(screenshots, 'badge-acknowledged.png') });
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
