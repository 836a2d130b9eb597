// End-to-end test of `pxs up`, as a user runs it: start it on a fresh data dir, open the catalog
// it prints in headless Chromium, launch the demo title, watch the stream play, press Ctrl-C (SIGINT)
// and check that pxs exits cleanly and leaves no process behind.
//
// It runs as for a LAN demo: `--listen 0.0.0.0:<port> --public-url http://127.0.0.2:<port>`. The
// browser uses only the public address: the pages, the API and the signalling WebSocket on the
// one port (`/node/local/...`), and the video from the public address's host.
//
// Run from web/:  PXS_BIN=../target/debug/pxs npm test      (builds the pages first)
// Environment:    PXS_BIN        the pxs binary under test (required; scripts/test sets it)
//                 CHROMIUM_BIN   browser (default /usr/bin/chromium); never downloaded
// Artifacts:      web/test-artifacts/catalog.png, player.png (where a person would look),
//                 up-pxs.log (pxs's stdout and stderr), up-console.log (the browser console);
//                 on failure also up-failure.png and the logs found under the data dir (up-data/).
//
// "No process left behind": while pxs runs, the test keeps sampling its descendants (/proc/*/stat,
// parent pid chains), so it knows every streamer pxs started even after they are re-parented.
// After pxs exits, none of them may be alive (same pid and start time), and no process may carry
// the data dir in its command line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { WEB_DIR, fatal, launchChromium, recordPage, stamp, startPxs, waitFor, freePort } from './harness.mjs';

const artifactsDir = join(WEB_DIR, 'test-artifacts');

const TEST_TIMEOUT_MS = 240_000;
const URL_TIMEOUT_MS = 60_000; // pxs up prints its URL (database, node link, demo title)
const CATALOG_TIMEOUT_MS = 30_000; // the demo title shows a free slot
const PLAY_TIMEOUT_MS = 60_000; // launch → 30 decoded frames (spawn, signalling, WebRTC)
const EXIT_TIMEOUT_MS = 20_000; // SIGINT → exit
const LEFTOVER_GRACE_MS = 2_000; // a killed child may take a moment to leave /proc
const MIN_FRAMES = 30;

// ---------------------------------------------------------------------------------------------
// Processes

/** pid → { ppid, start, state } of every process now, from /proc/<pid>/stat. */
function processTable() {
    const table = new Map();
    for (const name of readdirSync('/proc')) {
        if (!/^\d+$/.test(name)) continue;
        const info = statOf(Number(name));
        if (info) table.set(Number(name), info);
    }
    return table;
}

/** { ppid, start, state } of one process, or null if it is gone. */
function statOf(pid) {
    let text;
    try {
        text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
        return null;
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields follow the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], ppid: Number(fields[1]), start: fields[19] };
}

function cmdlineOf(pid) {
    try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    } catch {
        return '';
    }
}

/** Adds every descendant of `rootPid` to `seen` (pid → { start, cmdline }). */
function recordDescendants(rootPid, seen) {
    const table = processTable();
    const children = new Map();
    for (const [pid, info] of table) {
        if (!children.has(info.ppid)) children.set(info.ppid, []);
        children.get(info.ppid).push(pid);
    }
    const queue = [...(children.get(rootPid) ?? [])];
    while (queue.length > 0) {
        const pid = queue.shift();
        const info = table.get(pid);
        const known = seen.get(pid);
        if (!known || known.start !== info.start) {
            seen.set(pid, { start: info.start, cmdline: cmdlineOf(pid) });
        } else if (!known.cmdline) {
            known.cmdline = cmdlineOf(pid);
        }
        queue.push(...(children.get(pid) ?? []));
    }
}

/** Processes that outlived pxs: recorded descendants still alive, and anything naming the data dir. */
function leftovers(descendants, dataDir) {
    const left = new Map();
    for (const [pid, { start, cmdline }] of descendants) {
        const now = statOf(pid);
        if (now && now.start === start && now.state !== 'Z') left.set(pid, cmdlineOf(pid) || cmdline);
    }
    for (const name of readdirSync('/proc')) {
        if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
        const cmdline = cmdlineOf(Number(name));
        const state = statOf(Number(name))?.state;
        if (cmdline.includes(dataDir) && state && state !== 'Z') left.set(Number(name), cmdline);
    }
    return left;
}

/** Fails a wait at once with pxs's exit status when pxs is gone. */
function checkAlive(pxs) {
    if (pxs.exit) throw fatal(`pxs exited early: ${JSON.stringify(pxs.exit)}`);
}

async function listLogs(dir) {
    const found = [];
    const walk = async (d) => {
        for (const entry of await readdir(d, { withFileTypes: true }).catch(() => [])) {
            const p = join(d, entry.name);
            if (entry.isDirectory()) await walk(p);
            else if (/\.(log|jsonl|txt|toml)$/.test(entry.name)) found.push(p);
        }
    };
    await walk(dir);
    return found;
}


// ---------------------------------------------------------------------------------------------

test('pxs up: the catalog launches the demo, it streams, and Ctrl-C stops everything', { timeout: TEST_TIMEOUT_MS }, async () => {
    const pxsBin = process.env.PXS_BIN;
    if (!pxsBin) {
        throw new Error('PXS_BIN is not set: point it at the pxs binary to test, e.g. PXS_BIN=$PWD/../target/debug/pxs npm test (scripts/test sets it)');
    }
    if (!existsSync(pxsBin)) throw new Error(`PXS_BIN=${pxsBin}: no such file (build it with cargo build -p pxs)`);

    await mkdir(artifactsDir, { recursive: true });
    const dataDir = await mkdtemp(join(tmpdir(), 'pxs-up-e2e-'));
    const consoleLines = [];
    const pageErrors = [];
    const descendants = new Map();
    let pxs = null;
    let browser = null;
    let page = null;
    let sampler = null;
    let failure = null;
    const step = (what) => consoleLines.push(`${stamp()} [test] ${what}`);

    try {
        // ---- pxs up, exactly as a user starts it
        const port = await freePort('0.0.0.0');
        const publicUrl = `http://127.0.0.2:${port}`;
        pxs = startPxs(['up', '--listen', `0.0.0.0:${port}`, '--public-url', publicUrl, '--data-dir', dataDir], { bin: pxsBin });
        const pxsPid = pxs.pid;
        sampler = setInterval(() => {
            try {
                recordDescendants(pxsPid, descendants);
            } catch {
                // /proc raced with an exiting process: the next sample catches up.
            }
        }, 200);
        const url = await waitFor('pxs up to print "pxs up: http://..." on stdout', () => {
            checkAlive(pxs);
            return /pxs up: (http:\/\/\S+)\n/.exec(pxs.stdout)?.[1];
        }, { timeoutMs: URL_TIMEOUT_MS });
        step(`pxs up printed ${url}`);
        assert.equal(url, `${publicUrl}/`, 'pxs up prints the public URL');

        // ---- the catalog
        browser = await launchChromium();
        const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        // The player page logs the library's messages too (localStorage pxs_debug): for diagnostics.
        await context.addInitScript(() => {
            try {
                window.localStorage.setItem('pxs_debug', '1');
            } catch {
                // no storage: fewer log lines
            }
        });
        page = await context.newPage();
        recordPage(page, 'page', { consoleLines, pageErrors });

        const response = await page.goto(url, { waitUntil: 'load' });
        assert.ok(response && response.ok(), `GET ${url} -> ${response && response.status()}`);
        // The demo's node registers a moment after pxs up prints its URL: reload until it has a slot.
        await waitFor('the catalog to show the demo title with a free slot', async () => {
            checkAlive(pxs);
            const text = await page.locator('[data-testid="availability-demo"]').textContent({ timeout: 2_000 }).catch(() => null);
            if (text && /free slot/.test(text)) return true;
            await page.reload({ waitUntil: 'load' });
            return false;
        }, { timeoutMs: CATALOG_TIMEOUT_MS, intervalMs: 1_000 });
        const launch = page.locator('[data-testid="launch-demo"]');
        assert.ok(await launch.isVisible(), 'the Launch button of the demo title is visible');
        await page.screenshot({ path: join(artifactsDir, 'catalog.png') });
        step('catalog shows the demo title');

        // ---- launch → the player page → frames
        await launch.click();
        await page.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
        step(`player page ${page.url()}`);
        let frames = 0;
        await waitFor(`${MIN_FRAMES} decoded video frames on the player page`, async () => {
            checkAlive(pxs);
            const state = await page.evaluate(() => ({
                state: document.body.dataset.state,
                status: document.querySelector('[data-testid="status"]')?.textContent ?? ''
            }));
            if (['ended', 'failed', 'error'].includes(state.state)) {
                throw fatal(`the session is ${state.state}: "${state.status}"`);
            }
            frames = await page.evaluate(() => (window.pxsPlayer ? window.pxsPlayer.framesDecoded() : 0));
            return frames >= MIN_FRAMES;
        }, { timeoutMs: PLAY_TIMEOUT_MS, intervalMs: 250 }).catch((e) => {
            throw new Error(`${e.message} (decoded so far: ${frames})`);
        });
        assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready');
        // Everything through the public address: signalling on the one port, video from its host.
        const joinUrl = await page.evaluate(() => window.pxsPlayer.session?.join_url ?? '');
        assert.ok(joinUrl.startsWith(`ws://127.0.0.2:${port}/node/local/sessions/`), `join_url ${joinUrl}`);
        const media = await page.evaluate(() => window.pxsPlayer.remoteAddress());
        assert.equal(media, '127.0.0.2', 'the video comes from the public address');
        assert.match(await page.locator('[data-testid="status"]').textContent(), /Demo|demo/);
        step(`${frames} frames decoded`);

        // Moving the mouse over the video reports activity on the signalling socket (idle policy).
        await page.mouse.move(400, 300);
        await page.mouse.move(420, 330);
        await waitFor('an activity message after mouse moves over the video', () =>
            page.evaluate(() => window.pxsPlayer.activitySent >= 1), { timeoutMs: 5_000 });
        await page.screenshot({ path: join(artifactsDir, 'player.png') });
        step('player screenshot taken');

        // ---- Ctrl-C, with the player still connected
        recordDescendants(pxsPid, descendants);
        const streamers = [...descendants.values()].filter((d) => / streamer( |$)/.test(d.cmdline));
        assert.ok(streamers.length >= 1, `pxs started a streamer (descendants seen: ${JSON.stringify([...descendants.values()].map((d) => d.cmdline))})`);
        clearInterval(sampler);
        sampler = null;
        step('SIGINT to pxs');
        const stopped = await pxs.stop('SIGINT', { killAfterMs: EXIT_TIMEOUT_MS });
        const exited = stopped.forced ? 'timeout' : 'exited';
        assert.equal(exited, 'exited', `pxs exits within ${EXIT_TIMEOUT_MS / 1000} s of SIGINT`);
        assert.deepEqual(pxs.exit, { code: 0, signal: null }, 'pxs exits with code 0 after SIGINT');

        let left = new Map();
        await waitFor('no process left from pxs up', () => {
            left = leftovers(descendants, dataDir);
            return left.size === 0;
        }, { timeoutMs: LEFTOVER_GRACE_MS }).catch(() => {
            const list = [...left].map(([pid, cmd]) => `  ${pid}: ${cmd}`).join('\n');
            throw new Error(`processes left after pxs exited:\n${list}`);
        });
        assert.deepEqual(pageErrors, [], 'no uncaught errors on the pages');
    } catch (e) {
        failure = e;
        throw e;
    } finally {
        if (sampler) clearInterval(sampler);
        if (failure && page && !page.isClosed()) {
            await page.screenshot({ path: join(artifactsDir, 'up-failure.png') }).catch(() => {});
        }
        if (browser) await browser.close().catch(() => {});
        // Stop what is still running, by pid: pxs first, then whatever it left.
        if (pxs) await pxs.stop('SIGKILL');
        for (const pid of leftovers(descendants, dataDir).keys()) {
            try {
                process.kill(pid, 'SIGKILL');
            } catch {
                // gone already
            }
        }
        if (pxs) await writeFile(join(artifactsDir, 'up-pxs.log'), pxs.output()).catch(() => {});
        await writeFile(join(artifactsDir, 'up-console.log'), consoleLines.join('\n') + '\n').catch(() => {});
        let dataLogs = [];
        if (failure) {
            dataLogs = await listLogs(dataDir);
            const saved = join(artifactsDir, 'up-data');
            await rm(saved, { recursive: true, force: true }).catch(() => {});
            for (const file of dataLogs) {
                await mkdir(dirname(join(saved, relative(dataDir, file))), { recursive: true }).catch(() => {});
                await cp(file, join(saved, relative(dataDir, file))).catch(() => {});
            }
            const parts = [`\n===== diagnostics for pxs up: ${failure.message}`];
            if (pxs) parts.push(pxs.output());
            for (const file of dataLogs) {
                let text = '';
                try {
                    text = readFileSync(file, 'utf8');
                } catch {
                    continue;
                }
                parts.push(`--- ${relative(dataDir, file)} (last 60 lines) ---`, text.split('\n').slice(-60).join('\n'));
            }
            parts.push('--- browser console (last 200 lines) ---', ...consoleLines.slice(-200));
            parts.push(`(artifacts in ${artifactsDir})`);
            console.error(parts.join('\n'));
        }
        await rm(dataDir, { recursive: true, force: true }).catch(() => {});
    }
});
