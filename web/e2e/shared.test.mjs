// A shared session with the real parts: `pxs coordinator` (SQLite), `pxs session-server` running
// `pxs streamer` (with an input log), and two headless Chromium contexts, each with its own
// storage, on the coordinator's own player page.
//
// A (Alice) launches the demo from the catalog and sees video; she invites a viewer from the
// side panel; B opens the link, gives his name (Bob), sees video and Alice in the list. Bob's
// click does not reach the application; Bob asks for control and Alice gives it: Bob's click
// now arrives (at the right place, as his player) and Alice's no longer does. Alice's chat
// message reaches Bob and is still there after he reloads. Then nobody moves: both pages warn
// with a countdown, and the session ends `idle` with both pages saying why.
//
// Screenshots of both pages with the side panel go to test-artifacts/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PXS_BIN, REPO_DIR, fatal, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, freePort, frameCounter, readInputLog, videoPoint, apiCaller, coordinatorUrl } from './harness.mjs';

const artifactsDir = join(REPO_DIR, 'test-artifacts');
const ADMIN = 'pxs_adm_shared_e2e_admin_token_0123456789';
const NODE = 'pxs_node_shared_e2e_node_token_0123456789';
const IDLE_S = 20;
const FRAMES = 30;

const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 20_000, intervalMs: 100, ...options });

/** Holds `probe` falsy for `ms`; fails as soon as it is truthy. */
async function holdsFor(what, probe, ms) {
    const until = Date.now() + ms;
    while (Date.now() < until) {
        const v = await probe();
        if (v) throw new Error(`${what}: ${JSON.stringify(v)}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}




const me = (page) => page.evaluate(() => window.pxsPlayer.room?.me ?? null);
const hasControl = (page) => page.evaluate(() => document.body.dataset.control === 'mine');

test('two browsers share a session: invitation, enforced control, handoff, chat, idle end', { timeout: 240_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    const dir = await mkdtemp(join(tmpdir(), 'pxs-shared-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    const procs = [];
    const inputLog = join(dir, 'input.jsonl');
    try {
        // ---- the coordinator and a session server
        const coordinator = startPxs(
            ['coordinator', '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'coordinator.db')}`, '--admin-token', ADMIN, '--node-token', NODE],
            { name: 'coordinator' }
        );
        procs.push(coordinator);
        cleanups.push(() => coordinator.stop('SIGTERM', { killAfterMs: 10_000 }));
        const url = await coordinatorUrl(coordinator);
        const admin = apiCaller(url, ADMIN);
        await admin('POST', '/api/v1/titles', {
            id: 'demo', name: 'pxs demo', description: 'A test pattern', application_id: 'demo', visibility: 'public',
            max_players: 4, idle_timeout: IDLE_S, empty_timeout: 120, max_duration: 0
        });
        const nodePort = await freePort();
        const ports = 24000 + (nodePort % 500) * 10;
        const nodeToml = [
            '[node]', 'name = "e2e"', `public_url = "http://127.0.0.1:${nodePort}"`, `listen = "127.0.0.1:${nodePort}"`,
            `data_dir = ${JSON.stringify(join(dir, 'node'))}`, 'max_sessions = 2', `streamer_ports = "${ports}-${ports + 9}"`,
            'kill_grace = "3s"', 'heartbeat_interval = "500ms"', 'gpus = "none"', '',
            '[coordinator]', `url = ${JSON.stringify(url)}`, `token = ${JSON.stringify(NODE)}`, '',
            '[[applications]]', 'id = "demo"', 'name = "pxs demo"', `executable = ${JSON.stringify(PXS_BIN)}`,
            `args = ${JSON.stringify(['streamer', '-RenderOffScreen', '--input-log', inputLog])}`,
            'res_x = 1280', 'res_y = 720', 'start_timeout = "30s"', ''
        ].join('\n');
        await writeFile(join(dir, 'node.toml'), nodeToml);
        const node = startPxs(['session-server', '--config', join(dir, 'node.toml')], { name: 'session-server' });
        procs.push(node);
        cleanups.push(() => node.stop('SIGTERM', { killAfterMs: 15_000 }));

        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        const contextA = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        const contextB = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        const alice = await contextA.newPage();
        const bob = await contextB.newPage();
        recordPage(alice, 'alice', { consoleLines, pageErrors });
        recordPage(bob, 'bob', { consoleLines, pageErrors });

        // ---- Alice launches the demo and sees video
        await alice.goto(url, { waitUntil: 'load' });
        await alice.evaluate(() => localStorage.setItem('pxs_name', 'Alice'));
        await waitFor('the demo with a free slot', async () => {
            const text = await alice.locator('[data-testid="availability-demo"]').textContent({ timeout: 2_000 }).catch(() => null);
            if (text && /free slot/.test(text)) return true;
            await alice.reload({ waitUntil: 'load' });
            return false;
        }, { timeoutMs: 30_000, intervalMs: 1_000 });
        await alice.locator('[data-testid="launch-demo"]').click();
        await alice.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        const sessionId = alice.url().split('/play/')[1];
        assert.ok(!alice.url().includes('#'), `the owner key left the address: ${alice.url()}`);
        const aliceFrames = frameCounter(alice);
        await waitFor(`${FRAMES} frames for Alice`, async () => (await aliceFrames()) >= FRAMES, { timeoutMs: 60_000 });
        assert.equal((await me(alice))?.role, 'owner');
        assert.ok(await hasControl(alice), 'the owner has control at first');

        // Someone who only knows the session's id sees nothing of it.
        const stranger = await fetch(new URL(`/api/v1/sessions/${sessionId}`, url));
        assert.equal(stranger.status, 404, 'an anonymous session is not open to whoever knows its id');

        // ---- Alice invites a viewer
        await alice.locator('[data-testid="invite-role"]').selectOption('viewer');
        await alice.locator('[data-testid="invite-create"]').click();
        const link = await waitFor('the invitation link', async () => {
            const v = await alice.locator('[data-testid="invite-url"]').inputValue();
            return v && v.includes('#key=') ? v : null;
        });
        assert.ok(link.startsWith(`${url}/play/${sessionId}#key=`), link);
        await waitFor('the link in Alice\'s list', async () => (await alice.locator('[data-testid="link"]').count()) === 1);

        // ---- Bob opens it, gives his name, and watches
        await bob.goto(link, { waitUntil: 'load' });
        await bob.locator('[data-testid="name-input"]').fill('Bob');
        await bob.locator('[data-testid="name-join"]').click();
        const bobFrames = frameCounter(bob);
        await waitFor(`${FRAMES} frames for Bob`, async () => (await bobFrames()) >= FRAMES, { timeoutMs: 60_000 });
        assert.ok(!bob.url().includes('#'), `the link key left the address: ${bob.url()}`);
        const bobMe = await waitFor('Bob to be a viewer', async () => {
            const m = await me(bob);
            return m?.role === 'viewer' ? m : null;
        });
        assert.equal(bobMe.name, 'Bob');
        await bob.locator('[data-testid="user-Alice"]').waitFor({ timeout: 10_000 });
        assert.match(await bob.locator('[data-testid="user-Alice"]').textContent(), /has control/);
        assert.match(await bob.locator('[data-testid="control-hint"]').textContent(), /Alice has control/);
        await alice.locator('[data-testid="user-Bob"]').waitFor({ timeout: 10_000 });
        // A guest leaves; only the owner ends the session for everyone, and invites.
        assert.equal((await bob.locator('[data-testid="end-session"]').textContent()).trim(), 'Leave');
        assert.equal((await alice.locator('[data-testid="end-session"]').textContent()).trim(), 'End session for everyone');
        assert.equal(await bob.locator('#invite').isHidden(), true, 'no invitations from a viewer');
        assert.equal(await bob.locator('[data-testid="kick-Alice"]').count(), 0);

        // Alice's click arrives; Bob's does not (no input channel, input off on his page).
        const aliceMe = await me(alice);
        const downs = async () => (await readInputLog(inputLog)).filter((m) => m.name === 'MouseDown');
        let p = await videoPoint(alice, 0.25, 0.75);
        await alice.mouse.click(p.x, p.y);
        await waitFor('Alice\'s MouseDown', async () => (await downs()).find((m) => m.player_id === aliceMe.playerId));
        p = await videoPoint(bob, 0.5, 0.5);
        await bob.mouse.click(p.x, p.y);
        await bob.keyboard.press('B');
        await holdsFor('input from Bob reached the application', async () =>
            (await readInputLog(inputLog)).find((m) => m.player_id === bobMe.playerId), 2_000);

        // ---- Bob asks, Alice gives
        await bob.locator('[data-testid="control-hint-request"]').click();
        await waitFor('Alice to see Bob asking', async () =>
            /asks for control/.test((await alice.locator('[data-testid="user-Bob"]').textContent()) ?? ''));
        await alice.locator('[data-testid="give-Bob"]').click();
        await waitFor('Bob to have control', () => hasControl(bob));
        await waitFor('Alice to see Bob in control', async () =>
            /has control/.test((await alice.locator('[data-testid="user-Bob"]').textContent()) ?? ''));
        // Both keep their video through the renegotiation.
        for (const [who, frames] of [['Alice', aliceFrames], ['Bob', bobFrames]]) {
            const before = await frames();
            await waitFor(`${who}'s video to go on after the handoff`, async () => (await frames()) >= before + FRAMES, { timeoutMs: 30_000 });
        }
        await mkdir(artifactsDir, { recursive: true });
        await alice.screenshot({ path: join(artifactsDir, 'shared-owner.png') });
        await bob.screenshot({ path: join(artifactsDir, 'shared-viewer.png') });

        // Bob's click now arrives, where he clicked, as his; Alice's no longer does.
        p = await videoPoint(bob, 0.75, 0.25);
        await waitFor('Bob\'s click to arrive', async () => {
            await bob.mouse.click(p.x, p.y);
            return (await downs()).find((m) => m.player_id === bobMe.playerId);
        }, { intervalMs: 1_000 });
        const bobDown = (await downs()).find((m) => m.player_id === bobMe.playerId);
        assert.ok(Math.abs(bobDown.fields.x - 49152) <= 1, `x = 49152 ± 1: ${JSON.stringify(bobDown)}`);
        assert.ok(Math.abs(bobDown.fields.y - 16384) <= 1, `y = 16384 ± 1: ${JSON.stringify(bobDown)}`);
        const aliceBefore = (await downs()).filter((m) => m.player_id === aliceMe.playerId).length;
        p = await videoPoint(alice, 0.5, 0.5);
        await alice.mouse.click(p.x, p.y);
        await holdsFor('Alice\'s click arrived without control', async () => {
            const n = (await downs()).filter((m) => m.player_id === aliceMe.playerId).length;
            return n > aliceBefore ? n : null;
        }, 2_000);

        // ---- chat, kept across Bob's reload
        await alice.locator('[data-testid="chat-input"]').fill('hello Bob');
        await alice.locator('[data-testid="chat-send"]').click();
        const chatLine = (page) => page.locator('[data-testid="chat-line"]', { hasText: 'hello Bob' });
        await chatLine(bob).waitFor({ timeout: 10_000 });
        assert.match(await chatLine(bob).textContent(), /Alice/);
        await bob.reload({ waitUntil: 'load' });
        await chatLine(bob).waitFor({ timeout: 20_000 });
        assert.equal((await me(bob))?.name, 'Bob', 'Bob comes back under his name, without being asked');

        // ---- Alice invites Carol to control, then revokes the link: Carol is out for good
        alice.on('dialog', (d) => d.accept());
        await alice.locator('[data-testid="invite-role"]').selectOption('controller');
        await alice.locator('[data-testid="invite-create"]').click();
        const link2 = await waitFor('the second link', async () => {
            const v = await alice.locator('[data-testid="invite-url"]').inputValue();
            return v && v !== link ? v : null;
        });
        await waitFor('two links in Alice\'s list', async () => (await alice.locator('[data-testid="link"]').count()) === 2);
        const contextC = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        const carol = await contextC.newPage();
        recordPage(carol, 'carol', { consoleLines, pageErrors });
        await carol.goto(link2, { waitUntil: 'load' });
        await carol.locator('[data-testid="name-input"]').fill('Carol');
        await carol.locator('[data-testid="name-join"]').click();
        await waitFor('Carol to join as a controller', async () => (await me(carol))?.role === 'controller');
        await alice.locator('[data-testid="user-Carol"]').waitFor({ timeout: 10_000 });
        await alice.locator('[data-testid="link"]', { hasText: 'To control' }).locator('button').click();
        await waitFor('Carol\'s page to say her invitation was withdrawn', async () =>
            /invitation you joined with was withdrawn/.test((await carol.locator('[data-testid="overlay"]').textContent()) ?? ''));
        await alice.locator('[data-testid="user-Carol"]').waitFor({ state: 'detached', timeout: 10_000 });
        await waitFor('one link left in Alice\'s list', async () => (await alice.locator('[data-testid="link"]').count()) === 1);
        const revoked = await fetch(new URL(`/api/v1/sessions/${sessionId}`, url), { headers: { Authorization: `Bearer ${new URL(link2).hash.replace('#key=', '')}` } });
        assert.equal(revoked.status, 401, 'a revoked link opens nothing');
        await contextC.close();

        // ---- nobody moves: warned on both pages, then ended idle on both
        for (const [who, page] of [['Alice', alice], ['Bob', bob]]) {
            await page.locator('[data-testid="warning"]').waitFor({ state: 'visible', timeout: (IDLE_S + 15) * 1000 });
            assert.match(await page.locator('[data-testid="warning"]').textContent(), /The session ends in \d:\d\d because nobody is using it/, who);
        }
        for (const [who, page] of [['Alice', alice], ['Bob', bob]]) {
            await waitFor(`${who}'s page to say the session ended idle`, async () => {
                const status = await page.locator('[data-testid="status"]').textContent();
                return /ended \(nobody used it for a while\)/.test(status ?? '') ? status : null;
            }, { timeoutMs: 30_000 });
            assert.match(await page.locator('[data-testid="overlay"]').textContent(), /nobody used it for a while/);
        }
        const ended = await admin('GET', `/api/v1/sessions/${sessionId}`);
        assert.equal(ended.end_reason, 'idle', JSON.stringify(ended));
        assert.deepEqual(pageErrors, []);
    } catch (e) {
        console.error(consoleLines.slice(-120).join('\n'));
        for (const p of procs) console.error(`---- ${p.name}\n${p.output().slice(-6_000)}`);
        throw e;
    } finally {
        await runCleanups(cleanups.reverse());
    }
});
