// Bookings and the queue people can trust (issue 14), with the real parts: `pxs coordinator`
// (SQLite, a short schedule lead), `pxs session-server` with ONE slot running `pxs streamer`, and
// headless Chromium contexts, each with its own storage.
//
// - Ann books the demo from the catalog's form, a few seconds ahead: the booking page counts
//   down. She closes the browser. The title's empty timeout is 5 s: before, her session was ended
//   `empty` 5 s after it started because nobody was there. She comes back (a new context with her
//   saved storage) well after that: "My sessions" lists the session as running, leads back to it,
//   and she gets frames, inside her window.
// - Meanwhile, in a Russian browser, the catalog, the scheduling form, a booking page (booked two
//   hours ahead, then cancelled) and "My sessions" show none of words-catalog.ts's English.
// - The queue: with Ann's session holding the only slot, the catalog says so and Cid's Launch
//   waits: his page shows his position and an estimate (Ann's window ends in about 15 minutes),
//   and his session starts, with frames, when Ann's ends.
//
// Screenshots of the catalog, booking and My sessions pages in English and Russian go to
// test-artifacts/bookings/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PXS_BIN, REPO_DIR, fatal, freePort, frameCounter, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, apiCaller, coordinatorUrl } from './harness.mjs';
import { dictionaries, englishFragments, englishIn, visibleText } from './i18n-check.mjs';

const artifactsDir = join(REPO_DIR, 'test-artifacts', 'bookings');
const ADMIN = 'pxs_adm_bookings_e2e_admin_token_0123456789';
const NODE = 'pxs_node_bookings_e2e_node_token_0123456789';
const EMPTY_S = 5;
const FRAMES = 30;

const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 20_000, intervalMs: 100, ...options });

/** `d` as a datetime-local value with seconds (the user's local time). */
function localValue(d) {
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The English of the catalog's, booking's and My sessions' own words (words-catalog.ts). */
async function catalogEnglish() {
    const messages = await dictionaries();
    const mine = (dict) => Object.fromEntries(Object.entries(dict).filter(([k]) => /^(catalog|book|my)\./.test(k)));
    return englishFragments({ en: mine(messages.en), ru: mine(messages.ru) });
}

test('bookings: the form, a countdown, a late user, My sessions after a restart, the queue with an estimate, Russian', { timeout: 240_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    const english = await catalogEnglish();
    assert.ok(english.length > 30, `English fragments of words-catalog.ts: ${english.length}`);
    const dir = await mkdtemp(join(tmpdir(), 'pxs-bookings-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    const procs = [];
    try {
        await mkdir(artifactsDir, { recursive: true });
        // ---- the coordinator (bookings start 2 s ahead) and a session server with one slot
        await writeFile(join(dir, 'coordinator.toml'), '[timing]\nschedule_lead = "2s"\ntick = "200ms"\n');
        const coordinator = startPxs(
            ['coordinator', '--config', join(dir, 'coordinator.toml'), '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'coordinator.db')}`, '--admin-token', ADMIN, '--node-token', NODE],
            { name: 'coordinator' }
        );
        procs.push(coordinator);
        cleanups.push(() => coordinator.stop('SIGTERM', { killAfterMs: 10_000 }));
        const url = await coordinatorUrl(coordinator);
        const admin = apiCaller(url, ADMIN);
        await admin('POST', '/api/v1/titles', {
            id: 'demo', name: 'pxs demo', description: 'A test pattern', application_id: 'demo', visibility: 'public',
            max_players: 4, idle_timeout: 120, empty_timeout: EMPTY_S, max_duration: 0
        });
        const nodePort = await freePort();
        const ports = 25000 + (nodePort % 500) * 10;
        await writeFile(join(dir, 'node.toml'), [
            '[node]', 'name = "e2e"', `public_url = "http://127.0.0.1:${nodePort}"`, `listen = "127.0.0.1:${nodePort}"`,
            `data_dir = ${JSON.stringify(join(dir, 'node'))}`, 'max_sessions = 1', `streamer_ports = "${ports}-${ports + 9}"`,
            'kill_grace = "3s"', 'heartbeat_interval = "500ms"', 'gpus = "none"', '',
            '[coordinator]', `url = ${JSON.stringify(url)}`, `token = ${JSON.stringify(NODE)}`, '',
            '[[applications]]', 'id = "demo"', 'name = "pxs demo"', `executable = ${JSON.stringify(PXS_BIN)}`,
            `args = ${JSON.stringify(['streamer', '-RenderOffScreen'])}`, 'res_x = 1280', 'res_y = 720', 'start_timeout = "30s"', ''
        ].join('\n'));
        const node = startPxs(['session-server', '--config', join(dir, 'node.toml')], { name: 'session-server' });
        procs.push(node);
        cleanups.push(() => node.stop('SIGTERM', { killAfterMs: 15_000 }));
        await waitFor('the node online with the demo', async () => {
            const t = await admin('GET', '/api/v1/titles/demo');
            return t.availability.nodes === 1 && t.availability.free_slots === 1;
        }, { timeoutMs: 30_000 });

        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        const viewport = { width: 1280, height: 800 };

        // ---- Ann books from the catalog's form, a few seconds ahead
        const annContext = await browser.newContext({ viewport, locale: 'en-GB' });
        const ann = await annContext.newPage();
        recordPage(ann, 'ann', { consoleLines, pageErrors });
        await ann.goto(url, { waitUntil: 'load' });
        await ann.locator('[data-testid="availability-demo"]').filter({ hasText: '1 free slot' }).waitFor({ timeout: 15_000 });
        await ann.screenshot({ path: join(artifactsDir, 'catalog-en.png') });
        await ann.locator('[data-testid="book-demo"]').click();
        await ann.locator('[data-testid="book-form-demo"]').waitFor({ state: 'visible' });
        const startAt = new Date(Date.now() + 12_000);
        await ann.locator('[data-testid="book-when-demo"]').fill(localValue(startAt));
        await ann.locator('[data-testid="book-length-demo"]').selectOption(String(15 * 60));
        await ann.screenshot({ path: join(artifactsDir, 'catalog-form-en.png') });
        await ann.locator('[data-testid="book-submit-demo"]').click();
        await ann.waitForURL(/\/book\/[^/?#]+$/, { timeout: 15_000 });
        const booked = decodeURIComponent(ann.url().split('/book/')[1]);
        const seconds = async () => Number(await ann.locator('[data-testid="countdown"]').getAttribute('data-seconds'));
        const first = await waitFor('the countdown', async () => {
            const s = await seconds();
            return s > 0 ? s : null;
        });
        assert.ok(first <= 12, `counts down to the booked start: ${first} s`);
        await waitFor('the countdown to go down', async () => (await seconds()) < first);
        assert.match(await ann.locator('[data-testid="book-title"]').textContent(), /pxs demo/);
        await ann.screenshot({ path: join(artifactsDir, 'booking-en.png') });
        let s = await admin('GET', `/api/v1/sessions/${booked}`);
        assert.equal(s.state, 'scheduled');
        assert.equal(s.duration, 900);
        // Ann closes her browser; what it keeps (the booking's key) stays with her.
        const annStorage = await annContext.storageState();
        await annContext.close();

        // ---- meanwhile, in Russian: catalog, form, a booking (then cancelled), My sessions
        const ruContext = await browser.newContext({ viewport, locale: 'ru-RU' });
        const ru = await ruContext.newPage();
        recordPage(ru, 'ru', { consoleLines, pageErrors });
        ru.on('dialog', (d) => void d.accept());
        await ru.goto(url, { waitUntil: 'load' });
        await ru.locator('[data-testid="launch-demo"]').waitFor();
        await waitFor('the Russian catalog', async () => (await ru.locator('[data-testid="launch-demo"]').textContent()) === 'Запустить');
        assert.deepEqual(englishIn(await visibleText(ru), english), [], 'English on the Russian catalog');
        await ru.screenshot({ path: join(artifactsDir, 'catalog-ru.png') });
        await ru.locator('[data-testid="book-demo"]').click();
        await ru.locator('[data-testid="book-form-demo"]').waitFor({ state: 'visible' });
        assert.deepEqual(englishIn(await visibleText(ru), english), [], 'English on the Russian scheduling form');
        await ru.screenshot({ path: join(artifactsDir, 'catalog-form-ru.png') });
        await ru.locator('[data-testid="book-when-demo"]').fill(localValue(new Date(Date.now() + 2 * 3600_000)));
        await ru.locator('[data-testid="book-submit-demo"]').click();
        await ru.waitForURL(/\/book\/[^/?#]+$/, { timeout: 15_000 });
        const ruBooking = decodeURIComponent(ru.url().split('/book/')[1]);
        await ru.locator('[data-testid="countdown"]').filter({ hasText: /\d\d:\d\d/ }).waitFor();
        assert.deepEqual(englishIn(await visibleText(ru), english), [], 'English on the Russian booking page');
        await ru.screenshot({ path: join(artifactsDir, 'booking-ru.png') });
        await ru.locator('[data-testid="book-cancel"]').click();
        await waitFor('the booking cancelled', async () => (await admin('GET', `/api/v1/sessions/${ruBooking}`)).end_reason === 'cancelled');
        await ru.locator('[data-testid="book-state"]').filter({ hasText: /завершена/ }).waitFor();
        await ru.goto(new URL('/my', url).href, { waitUntil: 'load' });
        await ru.locator(`[data-testid="my-session-${ruBooking}"]`).waitFor();
        assert.deepEqual(englishIn(await visibleText(ru), english), [], 'English on the Russian My sessions');
        await ru.screenshot({ path: join(artifactsDir, 'my-sessions-ru.png') });
        await ruContext.close();

        // ---- Ann's booking starts; nobody comes for longer than the title's empty timeout
        s = await waitFor('the booking to be ready', async () => {
            const v = await admin('GET', `/api/v1/sessions/${booked}`);
            if (v.state === 'ended' || v.state === 'failed') throw fatal(`the booking ended: ${JSON.stringify(v)}`);
            return v.state === 'ready' ? v : null;
        }, { timeoutMs: 60_000 });
        // Before, the node ended it `empty` EMPTY_S after it was ready: wait past that (and a
        // heartbeat) for it to still be there, within its window.
        const lateBy = (EMPTY_S + 4) * 1000;
        await waitFor(`${lateBy / 1000} s after the booking was ready`, async () => {
            const v = await admin('GET', `/api/v1/sessions/${booked}`);
            if (v.state !== 'ready') throw fatal(`the booking did not wait for its late user: ${JSON.stringify(v)}`);
            return Date.now() - new Date(v.ready_at).getTime() > lateBy;
        }, { timeoutMs: 30_000, intervalMs: 500 });

        // ---- Ann comes back (a new browser context with her storage): My sessions leads her in
        const ann2Context = await browser.newContext({ viewport, locale: 'en-GB', storageState: annStorage });
        const ann2 = await ann2Context.newPage();
        recordPage(ann2, 'ann-again', { consoleLines, pageErrors });
        await ann2.goto(url, { waitUntil: 'load' });
        await ann2.locator('[data-testid="my-sessions"]').click();
        await ann2.waitForURL(/\/my$/);
        const row = ann2.locator('[data-testid="my-live"]').locator(`[data-testid="my-session-${booked}"]`);
        await row.waitFor({ timeout: 15_000 });
        assert.match(await row.textContent(), /pxs demo/);
        await ann2.screenshot({ path: join(artifactsDir, 'my-sessions-en.png') });
        await row.locator(`[data-testid="my-open-${booked}"]`).click();
        await ann2.waitForURL(new RegExp(`/play/${booked}$`));
        const annFrames = frameCounter(ann2);
        await waitFor(`${FRAMES} frames for the late Ann`, async () => (await annFrames()) >= FRAMES, { timeoutMs: 60_000 });
        s = await admin('GET', `/api/v1/sessions/${booked}`);
        assert.equal(s.state, 'ready');
        assert.ok(Date.now() < new Date(s.start_at).getTime() + s.duration * 1000, 'inside the booked window');

        // ---- the queue: the only slot is Ann's; Cid's Launch waits with a position and an estimate
        const cidContext = await browser.newContext({ viewport, locale: 'en-GB' });
        const cid = await cidContext.newPage();
        recordPage(cid, 'cid', { consoleLines, pageErrors });
        await cid.goto(url, { waitUntil: 'load' });
        const avail = await cid.locator('[data-testid="availability-demo"]').textContent();
        assert.match(avail, /all busy/, `the catalog promises no slot: ${avail}`);
        await cid.locator('[data-testid="launch-demo"]').click();
        await cid.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        const queued = decodeURIComponent(cid.url().split('/play/')[1]);
        const q = await admin('GET', `/api/v1/sessions/${queued}`);
        assert.equal(q.state, 'queued');
        assert.equal(q.queue_position, 1);
        assert.equal(q.queue_reason, 'slot');
        // Ann's window ends 15 minutes after its start: that is when the slot frees.
        const expected = (new Date(s.start_at).getTime() + 900_000 - Date.now()) / 1000;
        assert.ok(Math.abs(q.estimated_wait_s - expected) < 30, `estimate ${q.estimated_wait_s} s, window ends in ${expected} s`);
        await waitFor('the position and the estimate on Cid\'s page', async () => {
            const text = await cid.locator('body').innerText();
            return /number 1 in line/i.test(text) && /About 1[45] min to wait/.test(text);
        });
        await cid.screenshot({ path: join(artifactsDir, 'queue-en.png') });
        // Ann ends hers: Cid starts.
        await admin('DELETE', `/api/v1/sessions/${booked}`);
        const cidFrames = frameCounter(cid);
        await waitFor(`${FRAMES} frames for Cid once the slot freed`, async () => (await cidFrames()) >= FRAMES, { timeoutMs: 60_000 });
        assert.deepEqual(pageErrors, [], 'no uncaught errors on the pages');
    } catch (e) {
        await mkdir(artifactsDir, { recursive: true }).catch(() => {});
        const logs = procs.map((p) => p.output()).join('\n') + `\n--- browser console ---\n${consoleLines.join('\n')}\n`;
        await writeFile(join(artifactsDir, 'failure.log'), logs).catch(() => {});
        throw e;
    } finally {
        await runCleanups(cleanups);
    }
});
