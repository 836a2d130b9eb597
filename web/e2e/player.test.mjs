// The player's own controls, with the real parts: `pxs up` (coordinator, session server, the demo
// `pxs streamer`) and headless Chromium on the player page.
//
// - Sound: the stream starts muted (browsers allow sound only after a click); Unmute unmutes the
//   media element that plays the stream, the volume slider sets its volume, and both are kept
//   for the stream.
// - Fullscreen: the button puts the stage in fullscreen and takes it out again.
// - Statistics: the box shows the picture size the application sends, a frame rate above zero,
//   a bitrate, the round trip and the path (direct here).
// - Pointer lock: the button makes a click on the picture capture the pointer, and frees it.
// - Picture size: 480p asks the application for 854×480 (the demo honours UE's
//   Resolution.Width/Height command) and the video becomes 854×480; "Application's size" brings
//   back 1280×720.
// - A network blip (the kernel tears down the browser's TCP connections to pxs, `ss -K`): the
//   library reconnects and the page keeps its place: the same session, still in control, video.
// - A phone (390×844, touch): the header keeps the title's name, the End button and the
//   stream's controls stay reachable.
// - `?relay=1` on this service, which has no TURN server: the page says the relay cannot be
//   forced.
// Screenshots to test-artifacts/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dictionaries, englishFragments, englishIn, visibleText } from './i18n-check.mjs';
import { REPO_DIR, fatal, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, freePort, frameCounter, videoPoint } from './harness.mjs';

const artifactsDir = join(REPO_DIR, 'test-artifacts');
const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 20_000, intervalMs: 100, ...options });

const media = (page) => page.evaluate(() => {
    const v = document.querySelector('#player video');
    return v ? { muted: v.muted, volume: v.volume, width: v.videoWidth, height: v.videoHeight } : null;
});
const statText = (page, id) => page.locator(`[data-testid="stats-${id}"]`).textContent();

async function launchDemo(page, url) {
    await page.goto(url, { waitUntil: 'load' });
    await page.evaluate(() => localStorage.setItem('pxs_name', 'Pat'));
    await waitFor('the demo with a free slot', async () => {
        const text = await page.locator('[data-testid="availability-demo"]').textContent({ timeout: 2_000 }).catch(() => null);
        if (text && /free slot/.test(text)) return true;
        await page.reload({ waitUntil: 'load' });
        return false;
    }, { timeoutMs: 30_000, intervalMs: 1_000 });
    await page.locator('[data-testid="launch-demo"]').click();
    await page.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
    const frames = frameCounter(page);
    await waitFor('30 frames', async () => (await frames()) >= 30, { timeoutMs: 60_000 });
}

test('the player: sound, fullscreen, statistics, picture size, and a phone layout', { timeout: 180_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pxs-player-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    let pxs;
    try {
        const port = await freePort();
        pxs = startPxs(['up', '--listen', `127.0.0.1:${port}`, '--data-dir', dir], { name: 'pxs up' });
        cleanups.push(() => pxs.stop('SIGINT', { killAfterMs: 15_000 }));
        const url = await waitFor('pxs up to print its URL', () => {
            if (pxs.exit) throw fatal(`pxs up exited: ${pxs.output()}`);
            return /pxs up: (http:\/\/\S+)\n/.exec(pxs.stdout)?.[1];
        }, { timeoutMs: 60_000 });
        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        await mkdir(artifactsDir, { recursive: true });

        // ---- a desktop browser
        const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        const page = await context.newPage();
        recordPage(page, 'desktop', { consoleLines, pageErrors });
        await launchDemo(page, url);
        await page.locator('[data-testid="toolbar"]').waitFor({ state: 'visible', timeout: 10_000 });

        // Sound
        assert.equal((await media(page)).muted, true, 'the stream starts muted');
        await page.locator('[data-testid="mute"]').click();
        await waitFor('the video element to be unmuted', async () => (await media(page)).muted === false);
        assert.equal((await page.locator('[data-testid="mute"]').textContent()).trim(), 'Mute');
        await page.locator('[data-testid="volume"]').fill('0.4');
        await waitFor('the volume at 0.4', async () => Math.abs((await media(page)).volume - 0.4) < 0.01);
        await page.locator('[data-testid="mute"]').click();
        await waitFor('muted again', async () => (await media(page)).muted === true);

        // Fullscreen
        await page.locator('[data-testid="fullscreen"]').click();
        await waitFor('the stage in fullscreen', () => page.evaluate(() => document.fullscreenElement?.id === 'stage'));
        assert.equal((await page.locator('[data-testid="fullscreen"]').textContent()).trim(), 'Exit fullscreen');
        await page.locator('[data-testid="fullscreen"]').click();
        await waitFor('out of fullscreen', () => page.evaluate(() => document.fullscreenElement === null));

        // Statistics
        await page.locator('[data-testid="stats-toggle"]').click();
        await page.locator('[data-testid="stats"]').waitFor({ state: 'visible' });
        await waitFor('a frame rate above zero', async () => Number(await statText(page, 'fps')) > 0);
        await waitFor('the picture size', async () => (await statText(page, 'resolution')) === '1280×720');
        assert.match(await statText(page, 'bitrate'), /^\d+\.\d Mbit\/s$/);
        assert.match(await statText(page, 'path'), /^direct$/);
        await waitFor('a round trip', async () => /^\d+ ms$/.test(await statText(page, 'rtt')));
        await page.screenshot({ path: join(artifactsDir, 'player-desktop.png') });

        // Pointer lock (the owner has control): a click on the picture captures the pointer
        await page.locator('[data-testid="pointer-lock"]').click();
        assert.equal((await page.locator('[data-testid="pointer-lock"]').textContent()).trim(), 'Free pointer');
        const centre = await videoPoint(page, 0.5, 0.5);
        await page.mouse.click(centre.x, centre.y);
        await waitFor('the pointer captured', () => page.evaluate(() => document.pointerLockElement !== null));
        await page.evaluate(() => document.exitPointerLock());
        await page.locator('[data-testid="pointer-lock"]').click();
        assert.equal((await page.locator('[data-testid="pointer-lock"]').textContent()).trim(), 'Lock pointer');
        await page.mouse.click(centre.x, centre.y);
        assert.equal(await page.evaluate(() => document.pointerLockElement), null, 'hovering: a click captures nothing');

        // Picture size (the owner has control)
        await page.locator('[data-testid="quality"]').selectOption('854x480');
        await waitFor('the video at 854×480', async () => {
            const m = await media(page);
            return m.width === 854 && m.height === 480;
        }, { timeoutMs: 30_000 });
        await page.locator('[data-testid="quality"]').selectOption('app');
        await waitFor('the video back at 1280×720', async () => {
            const m = await media(page);
            return m.width === 1280 && m.height === 720;
        }, { timeoutMs: 30_000 });

        // A network blip: every TCP connection of the browser to pxs (the signalling WebSocket,
        // the session's events) is torn down by the kernel. The library reconnects; the page
        // keeps its place: the same session, the same user in control, video again.
        const sessionId = page.url().split('/play/')[1];
        const before = await page.evaluate(() => window.pxsPlayer.room?.me ?? null);
        const frames = frameCounter(page);
        const kill = spawnSync('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', `:${port}`], { encoding: 'utf8' });
        assert.equal(kill.status, 0, `ss -K: ${kill.stderr}`);
        assert.match(kill.stdout, new RegExp(`127\\.0\\.0\\.1:${port}`), 'the browser\'s connections were torn down');
        await waitFor('the stream to come back', async () => {
            const me = await page.evaluate(() => window.pxsPlayer.room?.me ?? null);
            return me && me.playerId !== before.playerId && (await page.locator('[data-testid="overlay"]').isHidden()) ? me : null;
        }, { timeoutMs: 30_000 });
        const start = await frames();
        await waitFor('frames after the blip', async () => (await frames()) >= start + 30, { timeoutMs: 30_000 });
        assert.equal(page.url().split('/play/')[1], sessionId, 'the same session');
        assert.equal(await page.evaluate(() => window.pxsPlayer.session?.state), 'ready');
        assert.equal(await page.evaluate(() => document.body.dataset.control), 'mine', 'still in control');

        await page.locator('[data-testid="end-session"]').click();
        await waitFor('the session to end', async () => /ended/.test(await page.locator('[data-testid="status"]').textContent()));
        await context.close();

        // ---- a phone
        const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
        const mobile = await phone.newPage();
        recordPage(mobile, 'phone', { consoleLines, pageErrors });
        await launchDemo(mobile, url);
        const title = await mobile.locator('#title-name').boundingBox();
        assert.ok(title && title.width > 20, `the title's name stays in the header: ${JSON.stringify(title)}`);
        assert.equal((await mobile.locator('#title-name').textContent()).trim(), 'pxs demo');
        for (const id of ['end-session', 'mute', 'fullscreen', 'stats-toggle']) {
            const box = await mobile.locator(`[data-testid="${id}"]`).boundingBox();
            assert.ok(box && box.x >= 0 && box.x + box.width <= 390 + 1 && box.y >= 0 && box.y + box.height <= 844 + 1, `${id} on the screen: ${JSON.stringify(box)}`);
        }
        await mobile.screenshot({ path: join(artifactsDir, 'player-phone.png') });
        await mobile.locator('[data-testid="end-session"]').click();
        await waitFor('the phone\'s session to end', async () => /ended/.test(await mobile.locator('[data-testid="status"]').textContent()));

        // ---- in Russian: a browser that prefers it gets the player with no English left on it
        const messages = await dictionaries();
        const english = englishFragments(messages);
        const ru = await browser.newContext({ viewport: { width: 1280, height: 720 }, locale: 'ru-RU' });
        const russian = await ru.newPage();
        recordPage(russian, 'russian', { consoleLines, pageErrors });
        await russian.goto(url, { waitUntil: 'load' });
        await russian.evaluate(() => localStorage.setItem('pxs_name', 'Pat'));
        await russian.locator('[data-testid="launch-demo"]').click();
        await russian.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        const ruFrames = frameCounter(russian);
        await waitFor('30 frames in Russian', async () => (await ruFrames()) >= 30, { timeoutMs: 60_000 });
        await russian.locator('[data-testid="stats-toggle"]').click();
        await waitFor('statistics in Russian', async () => Number(await statText(russian, 'fps')) > 0);
        assert.equal((await russian.locator('[data-testid="mute"]').textContent()).trim(), 'Включить звук');
        assert.deepEqual(englishIn(await visibleText(russian), english), [], 'English on the Russian player');
        await russian.screenshot({ path: join(artifactsDir, 'player-ru.png') });
        // The switch turns it into English at once, and back.
        await russian.locator('[data-testid="lang"]').selectOption('en');
        await waitFor('the player in English', async () => (await russian.locator('[data-testid="mute"]').textContent()).trim() === 'Unmute');
        await russian.locator('[data-testid="lang"]').selectOption('ru');
        await russian.locator('[data-testid="end-session"]').click();
        await waitFor('the Russian session to end', async () => (await russian.locator('body').getAttribute('data-state')) === 'ended');
        assert.deepEqual(englishIn(await visibleText(russian), english), [], 'English on the ended Russian player');
        await ru.close();

        // ---- the relay forced (?relay=1, kept as localStorage pxs_relay) on a service without
        // TURN: the page says so rather than trying forever
        await mobile.evaluate(() => localStorage.setItem('pxs_relay', '1'));
        await mobile.goto(url, { waitUntil: 'load' });
        await mobile.locator('[data-testid="launch-demo"]').click();
        await mobile.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        await waitFor('the page to say there is no relay', async () =>
            /This service has no TURN relay/.test((await mobile.locator('[data-testid="overlay"]').textContent()) ?? ''));
        assert.deepEqual(pageErrors, []);
    } catch (e) {
        console.error(consoleLines.slice(-120).join('\n'));
        if (pxs) console.error(pxs.output().slice(-8_000));
        throw e;
    } finally {
        await runCleanups(cleanups.reverse());
    }
});
