// The admin console (/admin) with the real parts: `pxs coordinator` (SQLite) and `pxs
// session-server` running `pxs streamer`, in headless Chromium.
//
// An operator signs in with the admin token (a wrong token and a user token are turned away);
// drains the node and resumes it (the API says so each time); ends a live session a user started
// (the API says it ended, by an admin, and the history lists it with that reason); creates a
// title and finds it on the public catalog page, then edits it; mints a user token and a node
// token bound to a name (listed, shown once) and revokes the node token; the charts show the
// coordinator's numbers and the API reference lists every path. Then the console switches to
// Russian: the choice outlives a reload, and on every section (and the sign-in form, and the API
// reference) none of the console's English strings is visible. The English strings are the
// `en` dictionary of web/app/i18n.ts itself, bundled here with esbuild, so a string added to the
// console is checked without touching this test. Data (names, ids, URLs) is marked
// translate="no" by the page and not checked.
//
// Screenshots of each section in English and Russian go to test-artifacts/admin/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dictionaries, englishFragments, englishIn, visibleText } from './i18n-check.mjs';
import { PXS_BIN, REPO_DIR, WEB_DIR, fatal, freePort, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, apiCaller, coordinatorUrl } from './harness.mjs';

const artifactsDir = join(REPO_DIR, 'test-artifacts', 'admin');
const ADMIN = 'pxs_adm_admin_e2e_admin_token_0123456789';
const NODE = 'pxs_node_admin_e2e_node_token_0123456789';
const SECTIONS = ['overview', 'nodes', 'sessions', 'history', 'titles', 'tokens'];

const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 20_000, intervalMs: 100, ...options });

test('the admin console: sign in, drain and resume, end a session, titles, tokens, charts, Russian', { timeout: 240_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    const messages = await dictionaries();
    const english = englishFragments(messages);
    assert.ok(english.length > 150, `the English strings of the console: ${english.length}`);

    const dir = await mkdtemp(join(tmpdir(), 'pxs-admin-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    const procs = [];
    try {
        await mkdir(artifactsDir, { recursive: true });
        // ---- the coordinator and a session server running the demo
        const coordinator = startPxs(
            ['coordinator', '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'coordinator.db')}`, '--admin-token', ADMIN, '--node-token', NODE],
            { name: 'coordinator' }
        );
        procs.push(coordinator);
        cleanups.push(() => coordinator.stop('SIGTERM', { killAfterMs: 10_000 }));
        const url = await coordinatorUrl(coordinator);
        const call = apiCaller(url, ADMIN);
        await call('POST', '/api/v1/titles', {
            id: 'demo', name: 'pxs demo', description: 'A test pattern', application_id: 'demo', visibility: 'public',
            max_players: 4, idle_timeout: 600, empty_timeout: 600, max_duration: 0
        });
        const nodePort = await freePort();
        const ports = 25000 + (nodePort % 500) * 10;
        await writeFile(join(dir, 'node.toml'), [
            '[node]', 'name = "e2e"', `public_url = "http://127.0.0.1:${nodePort}"`, `listen = "127.0.0.1:${nodePort}"`,
            `data_dir = ${JSON.stringify(join(dir, 'node'))}`, 'max_sessions = 2', `streamer_ports = "${ports}-${ports + 9}"`,
            'kill_grace = "3s"', 'heartbeat_interval = "500ms"', 'gpus = "none"', '',
            '[coordinator]', `url = ${JSON.stringify(url)}`, `token = ${JSON.stringify(NODE)}`, '',
            '[[applications]]', 'id = "demo"', 'name = "pxs demo"', `executable = ${JSON.stringify(PXS_BIN)}`,
            `args = ${JSON.stringify(['streamer', '-RenderOffScreen'])}`,
            'res_x = 640', 'res_y = 360', 'start_timeout = "30s"', ''
        ].join('\n'));
        const node = startPxs(['session-server', '--config', join(dir, 'node.toml')], { name: 'session-server' });
        procs.push(node);
        cleanups.push(() => node.stop('SIGTERM', { killAfterMs: 15_000 }));
        const nodeState = async () => (await call('GET', '/api/v1/nodes/e2e').catch(() => null))?.state;
        await waitFor('node e2e online', async () => (await nodeState()) === 'online', { timeoutMs: 30_000 });

        // ---- the browser, in English
        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, locale: 'en-US' });
        const page = await context.newPage();
        recordPage(page, 'admin', { consoleLines, pageErrors });
        page.on('dialog', (d) => d.accept());
        const tid = (id) => page.locator(`[data-testid="${id}"]`);
        const tab = async (section) => {
            await tid(`tab-${section}`).click();
            await tid(`section-${section}`).waitFor({ state: 'visible' });
        };
        const shoot = (name) => page.screenshot({ path: join(artifactsDir, `${name}.png`), fullPage: true });

        await page.goto(`${url}/admin`, { waitUntil: 'load' });
        await tid('login').waitFor({ state: 'visible' });
        assert.equal(await page.getAttribute('html', 'lang'), 'en', 'an English browser gets English');
        await shoot('en-sign-in');

        // Turned away: a wrong token, then a user's token. The API decides; the page says why.
        await tid('login-token').fill('pxs_adm_not_a_real_token');
        await tid('login-submit').click();
        await waitFor('the wrong token refused', async () => /not valid/.test(await tid('login-error').textContent()));
        const user = await call('POST', '/api/v1/tokens', { name: 'ada', role: 'user' });
        await tid('login-token').fill(user.token);
        await tid('login-submit').click();
        await waitFor('the user token refused', async () => /not an admin token/.test(await tid('login-error').textContent()));
        assert.ok(await tid('console').isHidden(), 'no console without an admin token');

        await tid('login-token').fill(ADMIN);
        await tid('login-submit').click();
        await tid('console').waitFor({ state: 'visible' });
        assert.equal(await page.evaluate(() => sessionStorage.getItem('pxs_admin_token')), ADMIN, 'kept for this tab');
        assert.equal(await page.evaluate(() => localStorage.getItem('pxs_admin_token')), null, 'not on the device unless asked');

        // ---- nodes: drain, then resume; the API changes each time
        await tab('nodes');
        await tid('node-e2e').waitFor();
        assert.match(await tid('node-state-e2e').textContent(), /online/);
        await tid('drain-e2e').click();
        await waitFor('the API to show e2e drained', async () => ['draining', 'drained'].includes(await nodeState()));
        await waitFor('the page to show e2e drained', async () => /drain/.test(await tid('node-state-e2e').textContent()));
        await tid('resume-e2e').waitFor();
        await shoot('en-nodes-drained');
        await tid('resume-e2e').click();
        await waitFor('the API to show e2e online again', async () => (await nodeState()) === 'online');
        await waitFor('the page to show e2e online', async () => /online/.test(await tid('node-state-e2e').textContent()));
        await tid('drain-e2e').waitFor();

        // ---- a user's live session: listed with its owner, ended from the console
        const started = await call('POST', '/api/v1/sessions', { title_id: 'demo' }, user.token);
        await waitFor('the session ready', async () => (await call('GET', `/api/v1/sessions/${started.id}`)).state === 'ready', { timeoutMs: 60_000 });
        await tab('sessions');
        const row = tid(`session-${started.id}`);
        await row.waitFor();
        await waitFor('the session shown ready, owned by ada', async () => {
            const text = await row.textContent();
            return /ready/.test(text) && /ada/.test(text) && /pxs demo/.test(text);
        });
        await shoot('en-sessions');
        await tid(`end-${started.id}`).click();
        const ended = await waitFor('the API to show the session ended', async () => {
            const s = await call('GET', `/api/v1/sessions/${started.id}`);
            return s.state === 'ended' ? s : null;
        }, { timeoutMs: 30_000 });
        assert.equal(ended.end_reason, 'stopped', JSON.stringify(ended));
        assert.equal(ended.ended_by, 'admin', JSON.stringify(ended));
        await row.waitFor({ state: 'detached' });

        // ---- history: the ended session with its reason, and the filters
        await tab('history');
        await tid(`history-${started.id}`).waitFor();
        assert.match(await tid(`history-reason-${started.id}`).textContent(), /ended by an operator/);
        await tid('history-reason').selectOption('crashed');
        await tid(`history-${started.id}`).waitFor({ state: 'detached' });
        await tid('history-reason').selectOption('stopped');
        await tid('history-node').selectOption('e2e');
        await tid(`history-${started.id}`).waitFor();
        await shoot('en-history');

        // ---- titles: create one, find it on the catalog, edit it
        await tab('titles');
        await tid('title-name').fill('Moon base');
        await tid('title-id').fill('moonbase');
        await tid('title-application').fill('demo');
        await tid('title-image').fill(`${url}/assets/moonbase.png`);
        await tid('title-visibility').selectOption('public');
        await tid('title-max-players').fill('2');
        await tid('title-description').fill('A base on the moon');
        await tid('title-save').click();
        await tid('title-moonbase').waitFor();
        const created = await call('GET', '/api/v1/titles/moonbase');
        assert.equal(created.name, 'Moon base');
        assert.equal(created.visibility, 'public');
        assert.equal(created.max_players, 2);
        assert.equal(created.image_url, `${url}/assets/moonbase.png`);
        const catalog = await context.newPage();
        recordPage(catalog, 'catalog', { consoleLines, pageErrors });
        await catalog.goto(url, { waitUntil: 'load' });
        await catalog.locator('[data-testid="title-moonbase"]').waitFor();
        assert.match(await catalog.locator('[data-testid="title-moonbase"]').textContent(), /Moon base/);
        await catalog.evaluate(() => localStorage.removeItem('pxs_token'));
        const anonymous = await fetch(new URL('/api/v1/titles/moonbase', url));
        assert.equal(anonymous.status, 200, 'anyone sees the public title');
        await catalog.close();
        await tid('edit-moonbase').click();
        await tid('title-name').fill('Moon base two');
        await tid('title-save').click();
        await waitFor('the API to show the new name', async () => (await call('GET', '/api/v1/titles/moonbase')).name === 'Moon base two');
        await waitFor('the table to show the new name', async () => /Moon base two/.test(await tid('title-moonbase').textContent()));
        assert.equal(await tid('title-idle').inputValue(), '600', 'the form is back to the defaults for the next title');
        await shoot('en-titles');

        // ---- tokens: a node token bound to gpu-7 (shown once, listed), then revoked
        await tab('tokens');
        await tid(`api-token-${user.id}`).waitFor();
        await tid('node-token-name').fill('rack 7');
        await tid('node-token-node').fill('gpu-7');
        await tid('node-token-mint').click();
        const secret = await waitFor('the minted token shown', async () => {
            const v = await tid('minted-token').inputValue().catch(() => '');
            return v.startsWith('pxs_node_') ? v : null;
        });
        const nodeTokens = (await call('GET', '/api/v1/node-tokens')).items;
        const minted = nodeTokens.find((x) => x.name === 'rack 7');
        assert.ok(minted, JSON.stringify(nodeTokens));
        assert.equal(minted.node, 'gpu-7');
        assert.ok(!JSON.stringify(nodeTokens).includes(secret), 'listings never show a secret');
        await tid(`node-token-${minted.id}`).waitFor();
        assert.match(await tid(`node-token-${minted.id}`).textContent(), /gpu-7/);
        await shoot('en-tokens');
        await tid(`revoke-${minted.id}`).click();
        await tid(`node-token-${minted.id}`).waitFor({ state: 'detached' });
        assert.ok(!(await call('GET', '/api/v1/node-tokens')).items.some((x) => x.id === minted.id), 'revoked');

        // ---- charts: the numbers of GET /api/v1/metrics
        await tab('overview');
        await waitFor('the start-time chart to show a mean', async () => /\d\.\d\d s/.test(await tid('chart-latency-value').textContent()));
        await waitFor('a sparkline drawn', async () => (await page.locator('[data-testid="chart-sessions"] svg polyline').count()) > 0);
        await shoot('en-overview');
        // The check used on the Russian pages below finds the English ones here.
        const englishHere = englishIn(await visibleText(page), english);
        assert.ok(englishHere.length >= 10, `the English overview shows English: ${englishHere.join(', ')}`);

        // ---- the API reference lists every path of the document
        const doc = await (await fetch(new URL('/api/v1/openapi.json', url))).json();
        const reference = await context.newPage();
        recordPage(reference, 'reference', { consoleLines, pageErrors });
        await reference.goto(`${url}/admin/api`, { waitUntil: 'load' });
        await reference.locator('body[data-loaded="true"]').waitFor();
        for (const [path, ops] of Object.entries(doc.paths)) {
            for (const method of Object.keys(ops)) {
                assert.equal(await reference.locator(`[data-testid="op-${method}-${path}"]`).count(), 1, `${method} ${path}`);
            }
        }
        await reference.locator('[data-testid="op-get-/api/v1/sessions"] summary').click();
        assert.match(await reference.locator('[data-testid="op-get-/api/v1/sessions"]').textContent(), /end_reason/);
        await reference.screenshot({ path: join(artifactsDir, 'en-api-reference.png') });

        // ---- Russian: the switch, kept across a reload; no English left on any section
        await tid('lang').selectOption('ru');
        assert.equal(await page.getAttribute('html', 'lang'), 'ru');
        await page.reload({ waitUntil: 'load' });
        await tid('console').waitFor({ state: 'visible' });
        assert.equal(await page.getAttribute('html', 'lang'), 'ru', 'the choice outlives a reload');
        assert.equal(await tid('lang').inputValue(), 'ru');
        for (const section of SECTIONS) {
            await tab(section);
            await page.locator('body[data-loaded="true"]').waitFor();
            if (section === 'nodes') await tid('node-e2e').waitFor();
            if (section === 'history') await tid(`history-${started.id}`).waitFor();
            if (section === 'titles') await tid('title-moonbase').waitFor();
            const left = englishIn(await visibleText(page), english);
            assert.deepEqual(left, [], `English on the Russian ${section} section`);
            await shoot(`ru-${section}`);
        }
        // A message of the console too: drain, in Russian, and back.
        await tab('nodes');
        await tid('drain-e2e').click();
        await waitFor('e2e drained', async () => ['draining', 'drained'].includes(await nodeState()));
        await waitFor('the notice in Russian', async () => /выводится из работы/.test(await tid('notice').textContent()));
        assert.deepEqual(englishIn(await visibleText(page), english), [], 'English in a notice');
        await shoot('ru-nodes-drained');
        await tid('resume-e2e').click();
        await waitFor('e2e online', async () => (await nodeState()) === 'online');
        // Signed out, the sign-in form is Russian too.
        await tid('sign-out').click();
        await tid('login').waitFor({ state: 'visible' });
        await tid('login-token').fill('wrong');
        await tid('login-submit').click();
        await waitFor('the refusal in Russian', async () => /недействителен/.test(await tid('login-error').textContent()));
        assert.deepEqual(englishIn(await visibleText(page), english), [], 'English on the sign-in form');
        await shoot('ru-sign-in');
        // The API reference in Russian: its own words translated, the document's left as they are.
        await reference.reload({ waitUntil: 'load' });
        await reference.locator('body[data-loaded="true"]').waitFor();
        assert.equal(await reference.getAttribute('html', 'lang'), 'ru');
        await reference.locator('[data-testid="op-get-/api/v1/sessions"] summary').click();
        assert.deepEqual(englishIn(await visibleText(reference), english), [], 'English on the Russian API reference');
        await reference.screenshot({ path: join(artifactsDir, 'ru-api-reference.png') });

        assert.deepEqual(pageErrors, []);
    } catch (e) {
        console.error(consoleLines.slice(-120).join('\n'));
        for (const p of procs) console.error(`---- ${p.name}\n${p.output().slice(-6_000)}`);
        throw e;
    } finally {
        await runCleanups(cleanups.reverse());
    }
});
