// PENDING: this test fails today and is not part of `npm test` (it lives outside e2e/*.test.mjs).
// It reproduces the open problem of control handoffs (docs/shared-sessions.md, "Handoffs in the
// browser"): the signalling server renegotiates in place, and Epic's frontend library applies the
// application's new offer to its existing RTCPeerConnection, which Chromium refuses when the
// input channel's m-line is gone ("The order of m-lines in subsequent offer doesn't match order
// from previous offer/answer"), so the page's video stops. When handoffs work, move it back to
// e2e/shared.test.mjs.
//
// A shared session in a real browser: the owner's page plays the demo with Epic's library; a
// second user (another owner connection, a plain WebSocket in a second page) takes control and
// gives it back. Each handoff makes the application offer the page's player a new connection,
// without and then with the input channel: the page's video must keep playing through both.
//
// Run from web/:  PXS_BIN=../target/debug/pxs node --test e2e/pending/handoff.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fatal, launchChromium, PXS_BIN, recordPage, runCleanups, startPxs, waitFor } from '../harness.mjs';

const FRAMES = 30;

/** Frames decoded by the page, summed over the peer connections it had (a renegotiation
 *  starts a new one whose count starts again at 0). */
function frameCounter(page) {
    let total = 0;
    let last = 0;
    return async () => {
        const now = await page.evaluate(() => (window.pxsPlayer ? window.pxsPlayer.framesDecoded() : 0));
        if (now < last) total += last;
        last = now;
        return total + now;
    };
}

test('a handoff of control keeps the owner page playing, without and then with input', { timeout: 180_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    const dataDir = await mkdtemp(join(tmpdir(), 'pxs-shared-e2e-'));
    const cleanups = [() => rm(dataDir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    try {
        const pxs = startPxs(['up', '--port', '0', '--data-dir', dataDir]);
        cleanups.push(() => pxs.stop('SIGINT', { killAfterMs: 20_000 }));
        const url = await waitFor('pxs up to print its URL', () => {
            if (pxs.exit) throw fatal(`pxs exited: ${pxs.output()}`);
            return /pxs up: (http:\/\/\S+)\n/.exec(pxs.stdout)?.[1];
        }, { timeoutMs: 60_000 });

        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        const page = await context.newPage();
        recordPage(page, 'owner', { consoleLines, pageErrors });
        await page.goto(url, { waitUntil: 'load' });
        await waitFor('the demo title with a free slot', async () => {
            const text = await page.locator('[data-testid="availability-demo"]').textContent({ timeout: 2_000 }).catch(() => null);
            if (text && /free slot/.test(text)) return true;
            await page.reload({ waitUntil: 'load' });
            return false;
        }, { timeoutMs: 30_000, intervalMs: 1_000 });
        await page.locator('[data-testid="launch-demo"]').click();
        await page.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        const sessionId = page.url().split('/play/')[1];
        const frames = frameCounter(page);
        await waitFor(`${FRAMES} frames on the owner's page`, async () => (await frames()) >= FRAMES, { timeoutMs: 60_000, intervalMs: 250 });

        // The second user: the session's join URL (an owner's), from a plain WebSocket.
        const session = await (await fetch(new URL(`/api/v1/sessions/${sessionId}`, url))).json();
        assert.ok(session.join_url, JSON.stringify(session));
        const other = await context.newPage();
        await other.goto(url, { waitUntil: 'load' });
        await other.evaluate(({ joinUrl, streamerId }) => new Promise((resolve, reject) => {
            const ws = new WebSocket(joinUrl);
            window.seen = [];
            ws.onmessage = (e) => window.seen.push(JSON.parse(e.data));
            ws.onopen = () => {
                ws.send(JSON.stringify({ type: 'subscribe', streamerId }));
                resolve();
            };
            ws.onerror = () => reject(new Error('the second user could not connect'));
            window.second = ws;
        }), { joinUrl: session.join_url, streamerId: sessionId });
        const users = await waitFor('the second user to see both users', () => other.evaluate(() => {
            const u = window.seen.filter((m) => m.type === 'users').pop();
            return u && u.users.length === 2 ? u.users : null;
        }));
        const pagePlayer = users.find((u) => u.control);
        assert.ok(pagePlayer, `the page's user has control: ${JSON.stringify(users)}`);

        for (const [what, msg] of [
            ['the second user takes control', { type: 'control', action: 'take' }],
            ['the second user gives it back', { type: 'control', action: 'give', playerId: pagePlayer.playerId }]
        ]) {
            const before = await frames();
            await other.evaluate((m) => window.second.send(JSON.stringify(m)), msg);
            await waitFor(`${what}: ${FRAMES} more frames on the owner's page`, async () => (await frames()) >= before + FRAMES, { timeoutMs: 30_000, intervalMs: 250 });
            const after = await other.evaluate(() => window.seen.filter((m) => m.type === 'users').pop().users);
            const holder = after.find((u) => u.control)?.playerId;
            assert.equal(holder === pagePlayer.playerId, msg.action === 'give', `${what}: ${JSON.stringify(after)}`);
        }
        assert.deepEqual(pageErrors, []);
    } catch (e) {
        console.error(consoleLines.slice(-80).join('\n'));
        throw e;
    } finally {
        await runCleanups(cleanups.reverse());
    }
});
