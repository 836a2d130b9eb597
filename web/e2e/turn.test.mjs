// TURN with the real parts: Debian's coturn with the sample deploy/turnserver.conf
// (`use-auth-secret`), moved onto loopback and allowed to relay to loopback peers for this test, `pxs coordinator` with `[ice]` naming it and the
// shared secret, two `pxs session-server`s running `pxs streamer --input-log`, and headless
// Chromium forcing the relay (`?relay=1`: the library's ForceTURN, iceTransportPolicy 'relay').
//
// - Through the coordinator's TURN settings: the page's selected candidate pair is a relay
//   candidate on the browser's side (getStats), frames are decoded, and a click reaches the
//   application. The signalling's `config` gave this browser a username and credential of its
//   own (coturn's REST scheme), not the secret.
// - A node with its own `[ice]` (a per-node override) whose secret is wrong: coturn refuses the
//   browser's allocations, no path exists, and the page says the stream could not reach it.
// - The secret is in no API response, no log line of the coordinator or the nodes, and nothing
//   the page was sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PXS_BIN, REPO_DIR, fatal, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, freePort, frameCounter, readInputLog, videoPoint, apiCaller, coordinatorUrl } from './harness.mjs';

const TURNSERVER = process.env.TURNSERVER_BIN || '/usr/bin/turnserver';
const artifactsDir = join(REPO_DIR, 'test-artifacts');
const ADMIN = 'pxs_adm_turn_e2e_admin_token_0123456789';
const NODE = 'pxs_node_turn_e2e_node_token_0123456789';
const FRAMES = 30;

const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 20_000, intervalMs: 100, ...options });

/** Whether a STUN server answers a Binding request on udp 127.0.0.1:`port` within a second. */
function stunAnswers(port) {
    return new Promise((resolve) => {
        const socket = createSocket('udp4');
        const request = Buffer.alloc(20);
        request.writeUInt16BE(0x0001, 0); // Binding request, no attributes
        request.writeUInt32BE(0x2112a442, 4); // magic cookie
        randomBytes(12).copy(request, 8);
        const done = (ok) => {
            clearTimeout(timer);
            socket.close();
            resolve(ok);
        };
        const timer = setTimeout(() => done(false), 1_000);
        socket.on('message', (m) => done(m.length >= 20 && m.readUInt16BE(0) === 0x0101 && m.subarray(8, 20).equals(request.subarray(8, 20))));
        socket.on('error', () => done(false));
        socket.send(request, port, '127.0.0.1');
    });
}

function nodeToml({ name, port, dir, coordinatorUrl, app, inputLog, ice }) {
    const ports = 24000 + (port % 500) * 10;
    return [
        '[node]', `name = "${name}"`, `public_url = "http://127.0.0.1:${port}"`, `listen = "127.0.0.1:${port}"`,
        `data_dir = ${JSON.stringify(join(dir, name))}`, 'max_sessions = 2', `streamer_ports = "${ports}-${ports + 9}"`,
        'kill_grace = "3s"', 'heartbeat_interval = "500ms"', 'gpus = "none"', '',
        '[coordinator]', `url = ${JSON.stringify(coordinatorUrl)}`, `token = ${JSON.stringify(NODE)}`, '',
        ...(ice ? ['[ice]', `urls = ${JSON.stringify(ice.urls)}`, `turn_secret = ${JSON.stringify(ice.secret)}`, ''] : []),
        '[[applications]]', `id = "${app}"`, `name = "${app}"`, `executable = ${JSON.stringify(PXS_BIN)}`,
        `args = ${JSON.stringify(['streamer', '-RenderOffScreen', '--input-log', inputLog])}`,
        'res_x = 1280', 'res_y = 720', 'start_timeout = "30s"', ''
    ].join('\n');
}

test('players reach the stream through a TURN relay with per-connection credentials; a wrong secret fails and the page says so', { timeout: 240_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    assert.ok(existsSync(TURNSERVER), `${TURNSERVER}: no such file (scripts/setup --tests installs coturn)`);
    const dir = await mkdtemp(join(tmpdir(), 'pxs-turn-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    const procs = [];
    const secret = `pxs-turn-e2e-${randomBytes(12).toString('hex')}`;
    const wrongSecret = `pxs-turn-e2e-wrong-${randomBytes(8).toString('hex')}`;
    const inputLog = join(dir, 'input.jsonl');
    try {
        // ---- coturn with the sample config (deploy/turnserver.conf), moved onto loopback: free
        // ports, the test's secret, no TLS (no certificate here), logs to stdout, and the
        // "GPU machines' network" it may relay to is 127.0.0.1
        const turnPort = await freePort();
        const relayPorts = 50000 + (turnPort % 700) * 20;
        const set = {
            'listening-port': turnPort, 'tls-listening-port': await freePort(), 'min-port': relayPorts, 'max-port': relayPorts + 19,
            'static-auth-secret': secret, 'log-file': 'stdout'
        };
        const sample = await readFile(join(REPO_DIR, 'deploy', 'turnserver.conf'), 'utf8');
        const conf = sample.split('\n').flatMap((line) => {
            const key = /^([a-z0-9-]+)(=|$)/.exec(line)?.[1];
            if (key === 'cert' || key === 'pkey') return [];
            return key in set ? [`${key}=${set[key]}`] : [line];
        });
        assert.equal(conf.filter((l) => /^(static-auth-secret|listening-port|min-port)=/.test(l)).length, 3, 'the sample names its secret and ports');
        conf.push('listening-ip=127.0.0.1', 'relay-ip=127.0.0.1', 'allowed-peer-ip=127.0.0.1', 'allow-loopback-peers', 'no-tls', 'no-dtls',
            'verbose', `pidfile=${join(dir, 'turnserver.pid')}`, `userdb=${join(dir, 'turndb')}`);
        await writeFile(join(dir, 'turnserver.conf'), conf.join('\n'));
        const coturn = startPxs(['-c', join(dir, 'turnserver.conf')], { bin: TURNSERVER, name: 'coturn' });
        procs.push(coturn);
        cleanups.push(() => coturn.stop('SIGTERM', { killAfterMs: 5_000 }));
        await waitFor('coturn to answer STUN', async () => {
            if (coturn.exit) throw fatal(`coturn exited: ${coturn.output()}`);
            return stunAnswers(turnPort);
        });
        assert.doesNotMatch(coturn.stdout + coturn.stderr, /Bad configuration|ERROR/, 'coturn takes the sample config as it is');
        const turnUrl = `turn:127.0.0.1:${turnPort}?transport=udp`;

        // ---- the coordinator, with the TURN server and its secret (from a file)
        await writeFile(join(dir, 'turn-secret'), `${secret}\n`, { mode: 0o600 });
        const coordinator = startPxs(
            ['coordinator', '--listen', '127.0.0.1:0', '--database-url', `sqlite://${join(dir, 'coordinator.db')}`, '--admin-token', ADMIN, '--node-token', NODE,
                '--ice-urls', turnUrl, '--ice-turn-secret-file', join(dir, 'turn-secret')],
            { name: 'coordinator' }
        );
        procs.push(coordinator);
        cleanups.push(() => coordinator.stop('SIGTERM', { killAfterMs: 10_000 }));
        const url = await coordinatorUrl(coordinator);
        const apiResponses = [];
        const admin = apiCaller(url, ADMIN, { onText: (method, path, text) => apiResponses.push(`${method} ${path}: ${text}`) });
        for (const [id, app] of [['demo', 'demo'], ['walled', 'walled']]) {
            await admin('POST', '/api/v1/titles', {
                id, name: `pxs ${id}`, description: 'A test pattern', application_id: app, visibility: 'public',
                max_players: 4, idle_timeout: 120, empty_timeout: 120, max_duration: 0
            });
        }

        // ---- node "relay" uses the coordinator's TURN; node "walled" has its own, with a wrong secret
        const nodes = [];
        for (const [name, app, ice] of [['relay', 'demo', null], ['walled', 'walled', { urls: [turnUrl], secret: wrongSecret }]]) {
            const port = await freePort();
            await writeFile(join(dir, `${name}.toml`), nodeToml({ name, port, dir, coordinatorUrl: url, app, inputLog, ice }));
            const node = startPxs(['session-server', '--config', join(dir, `${name}.toml`)], { name: `session-server ${name}` });
            procs.push(node);
            nodes.push(node);
            cleanups.push(() => node.stop('SIGTERM', { killAfterMs: 15_000 }));
        }

        const browser = await launchChromium();
        cleanups.push(() => browser.close());
        const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
        const page = await context.newPage();
        recordPage(page, 'player', { consoleLines, pageErrors });
        // Everything the signalling sent this page.
        const received = [];
        page.on('websocket', (ws) => ws.on('framereceived', (f) => received.push(String(f.payload))));

        // ---- through the relay
        await page.goto(url, { waitUntil: 'load' });
        await page.evaluate(() => localStorage.setItem('pxs_name', 'Tess'));
        const launch = async (title) => {
            await waitFor(`${title} with a free slot`, async () => {
                const text = await page.locator(`[data-testid="availability-${title}"]`).textContent({ timeout: 2_000 }).catch(() => null);
                if (text && /free slot/.test(text)) return true;
                await page.reload({ waitUntil: 'load' });
                return false;
            }, { timeoutMs: 30_000, intervalMs: 1_000 });
            await page.locator(`[data-testid="launch-${title}"]`).click();
            await page.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
            return page.url().split('/play/')[1];
        };
        // `?relay=1` would do the same from the address; the stored setting survives the
        // catalog's redirect to the player.
        await page.evaluate(() => localStorage.setItem('pxs_relay', '1'));
        const relayed = await launch('demo');
        const frames = frameCounter(page);
        await waitFor(`${FRAMES} frames through the relay`, async () => (await frames()) >= FRAMES, { timeoutMs: 60_000 });
        const pair = await page.evaluate(() => window.pxsPlayer.selectedPair());
        assert.equal(pair?.local.type, 'relay', `the browser's side of the selected pair: ${JSON.stringify(pair)}`);
        const me = await page.evaluate(() => window.pxsPlayer.room?.me ?? null);
        const p = await videoPoint(page, 0.25, 0.75);
        await page.mouse.click(p.x, p.y);
        const down = await waitFor('the click at the application', async () =>
            (await readInputLog(inputLog)).find((m) => m.name === 'MouseDown' && m.player_id === me.playerId));
        assert.ok(Math.abs(down.fields.x - 16384) <= 700 && Math.abs(down.fields.y - 49152) <= 700, `click at ${JSON.stringify(down)}`);
        await mkdir(artifactsDir, { recursive: true });
        await page.screenshot({ path: join(artifactsDir, 'turn-relayed.png') });

        // The page got TURN credentials of its own: coturn's REST scheme, never the secret.
        const configs = received.map((t) => { try { return JSON.parse(t); } catch { return null; } }).filter((m) => m?.type === 'config');
        assert.ok(configs.length >= 1, 'a config message');
        const servers = configs[0].peerConnectionOptions?.iceServers ?? [];
        const turnEntry = servers.find((s) => (s.urls ?? []).includes(turnUrl));
        assert.ok(turnEntry, `the TURN server in config: ${JSON.stringify(configs[0])}`);
        const [expiry, id] = turnEntry.username.split(':');
        const inADay = Date.now() / 1000 + 86_400;
        assert.ok(Math.abs(Number(expiry) - inADay) < 120 && id, `username ${turnEntry.username}: a day's expiry and this connection's id`);
        assert.match(turnEntry.credential, /^[A-Za-z0-9+/]{27}=$/, 'an HMAC-SHA1, base64');
        assert.match(coturn.stdout, new RegExp(`user <${turnEntry.username}>`), 'coturn saw this connection\'s username');
        await page.locator('[data-testid="end-session"]').click();
        await waitFor('the relayed session to end', async () => (await admin('GET', `/api/v1/sessions/${relayed}`)).state === 'ended');

        // ---- the node with a wrong secret: no path, and the page says so
        await page.goto(url, { waitUntil: 'load' });
        const walled = await launch('walled');
        const overlay = page.locator('[data-testid="overlay"]');
        await waitFor('the page to say the stream could not reach it', async () =>
            /The stream could not reach you: your network may block it\./.test((await overlay.textContent()) ?? ''), { timeoutMs: 45_000 });
        assert.equal(await page.evaluate(() => window.pxsPlayer.framesDecoded()), 0, 'no frame through a relay that refused us');
        assert.ok((await admin('GET', `/api/v1/sessions/${walled}`)).node_id === 'walled');
        assert.match(coturn.stdout, /401|[Uu]nauthori[sz]ed|cannot find credentials|wrong|check_stun_auth/, 'coturn refused the wrong credentials');
        await page.screenshot({ path: join(artifactsDir, 'turn-unreachable.png') });

        // ---- the secret is nowhere it should not be
        for (const path of ['/api/v1/nodes', '/api/v1/sessions', `/api/v1/sessions/${relayed}`, `/api/v1/sessions/${walled}`, '/api/v1/titles', '/api/v1/openapi.json']) {
            await admin('GET', path);
        }
        apiResponses.push(`/metrics: ${await (await fetch(new URL('/metrics', url))).text()}`);
        for (const [what, text] of [
            ['an API response', apiResponses.join('\n')],
            ['the coordinator\'s output', coordinator.stdout + coordinator.stderr],
            ...nodes.map((n) => [`${n.name}'s output`, n.stdout + n.stderr]),
            ['what the page was sent', received.join('\n')],
            ['the page\'s console', consoleLines.join('\n')]
        ]) {
            for (const s of [secret, wrongSecret]) assert.ok(!text.includes(s), `the TURN secret is in ${what}`);
        }
        assert.deepEqual(pageErrors, []);
    } catch (e) {
        console.error(consoleLines.slice(-120).join('\n'));
        for (const p of procs) console.error(`---- ${p.name}\n${p.output().slice(-6_000)}`);
        throw e;
    } finally {
        await runCleanups(cleanups.reverse());
    }
});
