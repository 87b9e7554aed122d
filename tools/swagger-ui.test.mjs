// Browser test of the browsable API: Swagger UI at /docs/ in Debian's headless Chromium, driven by
// playwright-core (no browser download). It checks that the page loads with no request leaving the
// server, that every operation of /openapi.json is listed, and that "Try it out" -> Execute on
// listAudiences, after filling the Authorize dialog, gets a 200 from the server.
//
// Usage: BASE_URL=http://127.0.0.1:8080 node tools/swagger-ui.test.mjs
// Optional: CHROMIUM=/usr/bin/chromium, SCREENSHOT=/tmp/swagger-ui.png (the page after Execute;
// the operations overview goes beside it as swagger-ui-operations.png)

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = process.env.SCREENSHOT || join(tmpdir(), 'swagger-ui.png');
const credentials = {
  bearerAuth: 'swagger-ui-test-token',
  apiKey: 'swagger-ui-test-key',
  imsOrg: '1BD6382559DF0C130A49422D@AdobeOrg',
  sandboxName: 'swagger-ui-test',
};

function fail(message) {
  throw new Error(message);
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'swagger-ui-test-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 1400 },
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const foreign = [];
    const pageErrors = [];
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== new URL(base).origin) {
        foreign.push(r.url());
      }
    });
    page.on('pageerror', (e) => pageErrors.push(String(e)));

    // One audience, so that the list shows something.
    const headers = {
      Authorization: `Bearer ${credentials.bearerAuth}`,
      'x-api-key': credentials.apiKey,
      'x-gw-ims-org-id': credentials.imsOrg,
      'x-sandbox-name': credentials.sandboxName,
    };
    const created = await context.request.post(`${base}/data/core/ups/audiences`, {
      headers,
      data: { name: 'Created by the Swagger UI browser test', description: 'browser test' },
    });
    if (created.status() !== 200) fail(`creating an audience answered ${created.status()}`);

    const documentResponse = await context.request.get(`${base}/openapi.json`);
    const document = await documentResponse.json();
    const operations = [];
    for (const [path, item] of Object.entries(document.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (op && op.operationId) operations.push({ path, method, id: op.operationId, tag: (op.tags || ['default'])[0] });
      }
    }

    const response = await page.goto(`${base}/docs`, { waitUntil: 'load' });
    if (!response || response.status() !== 200) fail(`/docs answered ${response && response.status()}`);
    if (!page.url().endsWith('/docs/')) fail(`/docs did not land on /docs/ but on ${page.url()}`);
    await page.waitForSelector('.opblock', { timeout: 20000 });
    const title = (await page.textContent('.info .title')) || '';
    if (!title.includes(document.info.title)) fail(`page title is "${title}"`);

    // Every documented operation is listed (operation ids are displayed).
    const listed = await page.$$eval('.opblock-summary-operation-id', (els) => els.map((e) => e.textContent.trim()));
    const missing = operations.filter((op) => !listed.includes(op.id)).map((op) => op.id);
    if (missing.length) fail(`operations not listed: ${missing.join(', ')}`);
    console.log(`listed ${listed.length} operations: ${listed.join(', ')}`);
    const overview = screenshot.replace(/\.png$/, '') + '-operations.png';
    await page.screenshot({ path: overview, fullPage: true });

    // Authorize: one value per security scheme.
    await page.click('.auth-wrapper .authorize');
    await page.waitForSelector('.modal-ux .auth-container');
    const containers = await page.$$('.modal-ux .auth-container');
    for (const container of containers) {
      const heading = (await container.$eval('h4', (h) => h.textContent)) || '';
      const scheme = Object.keys(credentials).find((name) => heading.trim().startsWith(name));
      if (!scheme) fail(`unexpected security scheme in the Authorize dialog: ${heading}`);
      await (await container.$('input')).fill(credentials[scheme]);
    }
    for (const button of await page.$$('.modal-ux button.modal-btn.auth.authorize')) {
      await button.click();
    }
    const logouts = await page.$$('.modal-ux button.modal-btn.auth:not(.authorize)');
    if (logouts.length === 0) fail('the Authorize dialog did not accept the credentials');
    await page.click('.modal-ux button.btn-done');

    // Try it out -> Execute on listAudiences.
    const list = operations.find((op) => op.id === 'listAudiences') || fail('listAudiences is not documented');
    const block = page.locator(`#operations-${list.tag.replace(/\s/g, '_')}-${list.id}`);
    await block.locator('.opblock-summary').first().click();
    await block.locator('button.try-out__btn').click();
    const [apiResponse] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === list.path && r.request().method() === 'GET', { timeout: 20000 }),
      block.locator('button.execute').click(),
    ]);
    const sent = apiResponse.request().headers();
    for (const [name, value] of Object.entries(headers)) {
      if (sent[name.toLowerCase()] !== value) fail(`Execute sent ${name}: ${sent[name.toLowerCase()]}`);
    }
    const status = block.locator('.live-responses-table tr.response .response-col_status').first();
    await status.waitFor({ timeout: 20000 });
    const shown = (await status.textContent()).trim();
    if (apiResponse.status() !== 200 || shown !== '200') {
      fail(`Execute on listAudiences: server answered ${apiResponse.status()}, page shows ${shown}`);
    }
    const body = await block.locator('.live-responses-table tr.response .response-col_description pre').first().textContent();
    if (!body.includes('Created by the Swagger UI browser test')) fail(`the response shown does not hold the audience: ${body.slice(0, 300)}`);
    await block.scrollIntoViewIfNeeded();
    await page.screenshot({ path: screenshot, fullPage: false });
    console.log(`Execute on listAudiences: 200 shown; screenshot ${screenshot}`);

    if (foreign.length) fail(`requests left the server: ${foreign.join(', ')}`);
    if (pageErrors.length) fail(`errors in the page: ${pageErrors.join('; ')}`);
    console.log('swagger-ui browser test: OK');
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`swagger-ui browser test: FAILED: ${e.message}`);
  process.exit(1);
});
