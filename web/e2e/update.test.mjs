// The update procedure of docs/operations.md, with the real parts: `pxs coordinator` (SQLite),
// one `pxs session-server` (a copy of the binary: the "old" version) running `pxs streamer`, and
// headless Chromium on the coordinator's player page.
//
// 1. A user plays a session. The coordinator is killed (SIGKILL) and started again on the same
//    database: the player's video goes on all the while, and the session keeps its record.
// 2. The node is drained by its operator (`pxs session-server drain`): the session goes on, a new
//    session is not placed there (it waits in the queue). The user ends the session.
// 3. The node, now empty, is stopped and started with another copy of the binary (the "new"
//    version), and resumed: the waiting session starts on it and plays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PXS_BIN, fatal, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, freePort, frameCounter, apiCaller } from './harness.mjs';

const ADMIN = 'pxs_adm_update_e2e_admin_token_0123456789';
const NODE_TOKEN = 'pxs_node_update_e2e_node_token_0123456789';
const FRAMES = 30;

const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 30_000, intervalMs: 200, ...options });



test('update: the coordinator restarts under a live session; a drained node is replaced by a new binary', { timeout: 300_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    const dir = await mkdtemp(join(tmpdir(), 'pxs-update-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    const procs = [];
    try {
        // Two copies of the binary: the version running now and the one that replaces it.
        const oldBin = join(dir, 'pxs-old');
        const newBin = join(dir, 'pxs-new');
        for (const b of [oldBin, newBin]) {
            await copyFile(PXS_BIN, b);
            await chmod(b, 0o755);
        }
        const coordPort = await freePort();
        const url = `http://127.0.0.1:${coordPort}`;
        const db = join(dir, 'coordinator.db');
        const startCoordinator = () => {
            const c = startPxs(['coordinator', '--listen', `127.0.0.1:${coordPort}`, '--database-url', `sqlite://${db}`, '--admin-token', ADMIN, '--node-token', NODE_TOKEN], { name: 'coordinator' });
            procs.push(c);
            cleanups.push(() => c.stop('SIGTERM', { killAfterMs: 10_000 }));
            return c;
        };
        const listening = (c) => waitFor('the coordinator to listen', () => {
            if (c.exit) throw fatal(`the coordinator exited: ${c.output()}`);
            return c.stdout.includes('"listening"');
        });
        const admin = apiCaller(url, ADMIN);
        let coordinator = startCoordinator();
        await listening(coordinator);
        await admin('POST', '/api/v1/titles', {
            id: 'demo', name: 'pxs demo', description: 'A test pattern', application_id: 'demo', visibility: 'public',
            max_players: 0, idle_timeout: 600, empty_timeout: 600, max_duration: 0
        });

        const nodePort = await freePort();
        const ports = 26000 + (nodePort % 500) * 10;
        const nodeConfig = join(dir, 'node.toml');
        await writeFile(nodeConfig, [
            '[node]', 'name = "gpu-1"', `public_url = "http://127.0.0.1:${nodePort}"`, `listen = "127.0.0.1:${nodePort}"`,
            `data_dir = ${JSON.stringify(join(dir, 'node'))}`, 'max_sessions = 2', `streamer_ports = "${ports}-${ports + 9}"`,
            'kill_grace = "3s"', 'heartbeat_interval = "500ms"', 'gpus = "none"', '',
            '[coordinator]', `url = ${JSON.stringify(url)}`, `token = ${JSON.stringify(NODE_TOKEN)}`, '',
            '[[applications]]', 'id = "demo"', 'name = "pxs demo"', `executable = ${JSON.stringify(PXS_BIN)}`,
            'args = ["streamer", "-RenderOffScreen"]', 'res_x = 640', 'res_y = 360', 'start_timeout = "30s"', ''
        ].join('\n'));
        const startNode = (bin, name) => {
            const n = startPxs(['session-server', '--config', nodeConfig], { bin, name });
            procs.push(n);
            cleanups.push(() => n.stop('SIGTERM', { killAfterMs: 15_000 }));
            return n;
        };
        let node = startNode(oldBin, 'node (old binary)');
        const nodeState = async () => (await admin('GET', '/api/v1/nodes/gpu-1')).state;
        await waitFor('the node to link', async () => {
            if (node.exit) throw fatal(`the node exited: ${node.output()}`);
            return (await fetch(new URL('/api/v1/nodes/gpu-1', url), { headers: { Authorization: `Bearer ${ADMIN}` } })).ok;
        });

        // ---- a user plays
        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        const context = await browser.newContext({ viewport: { width: 1024, height: 640 } });
        const page = await context.newPage();
        recordPage(page, 'user', { consoleLines, pageErrors });
        await page.goto(url, { waitUntil: 'load' });
        await page.locator('[data-testid="launch-demo"]').click();
        await page.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        const sessionId = page.url().split('/play/')[1];
        const frames = frameCounter(page);
        await waitFor(`${FRAMES} frames`, async () => (await frames()) >= FRAMES, { timeoutMs: 60_000 });
        const before = await admin('GET', `/api/v1/sessions/${sessionId}`);
        assert.equal(before.state, 'ready');

        // ---- 1. the coordinator dies under the live session and comes back
        const killed = await coordinator.stop('SIGKILL');
        assert.equal(killed.signal, 'SIGKILL');
        let seen = await frames();
        await waitFor('video to go on while the coordinator is down', async () => (await frames()) >= seen + FRAMES);
        coordinator = startCoordinator();
        await listening(coordinator);
        await waitFor('the node to link again', async () => (await nodeState()) === 'online', { timeoutMs: 45_000 });
        const after = await admin('GET', `/api/v1/sessions/${sessionId}`);
        assert.deepEqual(
            { state: after.state, node_id: after.node_id, created_at: after.created_at, ready_at: after.ready_at },
            { state: 'ready', node_id: before.node_id, created_at: before.created_at, ready_at: before.ready_at },
            'the session keeps its record'
        );
        seen = await frames();
        await waitFor('video to go on after the restart', async () => (await frames()) >= seen + FRAMES);
        assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready', 'the page still plays');

        // ---- 2. the operator drains the node: the session goes on, a new one waits
        const drain = startPxs(['session-server', '--config', nodeConfig, 'drain'], { bin: oldBin, name: 'drain' });
        await waitFor('`pxs session-server drain` to finish', () => drain.exit);
        assert.equal(drain.exit.code, 0, drain.output());
        await waitFor('the node to report draining', async () => (await nodeState()) === 'draining');
        const waiting = await admin('POST', '/api/v1/sessions', { title_id: 'demo' });
        assert.equal(waiting.state, 'queued', `a drained node takes no new session: ${JSON.stringify(waiting)}`);
        seen = await frames();
        await waitFor('video to go on while draining', async () => (await frames()) >= seen + FRAMES);
        await page.locator('[data-testid="end-session"]').click();
        await waitFor('the session to end', async () => (await admin('GET', `/api/v1/sessions/${sessionId}`)).state === 'ended');
        await waitFor('the node to be drained (empty)', async () => (await nodeState()) === 'drained');
        assert.equal((await admin('GET', `/api/v1/sessions/${waiting.id}`)).state, 'queued', 'still waiting');

        // ---- 3. replace the binary, start, resume: the waiting session runs on the new one
        const stopped = await node.stop('SIGTERM', { killAfterMs: 15_000 });
        assert.equal(stopped.forced, false, 'the old node stops by itself');
        assert.equal(node.exit.code, 0, node.output());
        node = startNode(newBin, 'node (new binary)');
        await waitFor('the new node to link, still drained by its operator', async () => {
            if (node.exit) throw fatal(`the new node exited: ${node.output()}`);
            const r = await fetch(new URL('/api/v1/nodes/gpu-1', url), { headers: { Authorization: `Bearer ${ADMIN}` } });
            return r.ok && ['drained', 'draining'].includes((await r.json()).state);
        });
        const resume = startPxs(['session-server', '--config', nodeConfig, 'resume'], { bin: newBin, name: 'resume' });
        await waitFor('`pxs session-server resume` to finish', () => resume.exit);
        assert.equal(resume.exit.code, 0, resume.output());
        await waitFor('the waiting session to start on the new node', async () =>
            (await admin('GET', `/api/v1/sessions/${waiting.id}`)).state === 'ready', { timeoutMs: 60_000 });
        // It plays: the administrator who started it opens its page.
        const second = await context.newPage();
        recordPage(second, 'admin', { consoleLines, pageErrors });
        await second.goto(url, { waitUntil: 'load' });
        await second.evaluate((t) => localStorage.setItem('pxs_token', t), ADMIN);
        await second.goto(new URL(`/play/${waiting.id}`, url).href, { waitUntil: 'load' });
        const frames2 = frameCounter(second);
        await waitFor(`${FRAMES} frames from the new node`, async () => (await frames2()) >= FRAMES, { timeoutMs: 60_000 });
        assert.deepEqual(pageErrors, []);
    } catch (e) {
        console.error(consoleLines.slice(-80).join('\n'));
        for (const p of procs) console.error(`---- ${p.name}\n${p.output().slice(-5_000)}`);
        throw e;
    } finally {
        await runCleanups(cleanups.reverse());
    }
});
