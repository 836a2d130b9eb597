// The front door (issue 12) with the real parts: Debian's NGINX, configured by
// `pxs nginx-config`, terminates TLS (a self-signed certificate for 127.0.0.1 made with the
// openssl CLI) in front of `pxs coordinator` (SQLite, trusted_proxies = 127.0.0.1) and two
// `pxs session-server`s ("east" and "west", one slot each, running `pxs streamer`), each
// advertising public_url https://127.0.0.1:<https port>/node/<name>.
//
// `pxs nginx-config` runs once (no node yet) and NGINX starts with that file; then
// `pxs nginx-config --watch` follows the coordinator and, when the nodes link, rewrites the file
// and reloads NGINX (`nginx -s reload`, an argument vector). Through NGINX only: plain HTTP is
// redirected to HTTPS; both nodes' /healthz answer under /node/<name>/; a share link made
// through it says https (the coordinator trusts NGINX's X-Forwarded-Proto). Then Chromium
// (--ignore-certificate-errors) opens the catalog over https and launches the demo twice, from
// two contexts: one session lands on each node, and each page decodes frames with its signalling
// over wss://127.0.0.1:<https port>/node/<name>/ through NGINX.
//
// Everything started is stopped in cleanup (NGINX included). On failure the processes' output,
// NGINX's logs and configuration and the browser console go to test-artifacts/nginx/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PXS_BIN, REPO_DIR, fatal, launchChromium, recordPage, runCleanups, startPxs, waitFor as waitForWithin, freePort } from './harness.mjs';

const NGINX_BIN = process.env.NGINX_BIN || '/usr/sbin/nginx';
const artifactsDir = join(REPO_DIR, 'test-artifacts', 'nginx');
const ADMIN = 'pxs_adm_nginx_e2e_admin_token_0123456789';
const NODE = 'pxs_node_nginx_e2e_node_token_0123456789';
const NODES = ['east', 'west'];
const FRAMES = 30;

const run = promisify(execFile);
const waitFor = (what, probe, options = {}) => waitForWithin(what, probe, { timeoutMs: 30_000, intervalMs: 100, ...options });


/** One HTTP(S) request: { status, headers, text, json }. Over https, `ca` is the only trusted CA. */
function fetchWith(url, { ca, method = 'GET', headers = {}, body } = {}) {
    const u = new URL(url);
    const send = u.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
        const req = send(u, { method, headers: { ...headers, ...(body ? { 'Content-Type': 'application/json' } : {}) }, ca, timeout: 10_000 }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (c) => (text += c));
            res.on('end', () => {
                let json = null;
                try {
                    json = JSON.parse(text);
                } catch {
                    // not JSON
                }
                resolve({ status: res.statusCode, headers: res.headers, text, json });
            });
        });
        req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within 10 s`)));
        req.on('error', reject);
        if (body) req.write(JSON.stringify(body));
        req.end();
    });
}

test('NGINX from pxs nginx-config: TLS, the catalog, two nodes under /node/<name>/, frames over wss', { timeout: 300_000 }, async () => {
    assert.ok(existsSync(PXS_BIN), `PXS_BIN=${PXS_BIN}: no such file`);
    assert.ok(existsSync(NGINX_BIN), `${NGINX_BIN}: no NGINX (scripts/setup --tests installs Debian's nginx)`);
    const dir = await mkdtemp(join(tmpdir(), 'pxs-nginx-e2e-'));
    const cleanups = [() => rm(dir, { recursive: true, force: true })];
    const consoleLines = [];
    const pageErrors = [];
    const procs = [];
    const pages = [];
    const conf = join(dir, 'pxs.conf');
    const nginxConf = join(dir, 'nginx.conf');
    const errorLog = join(dir, 'error.log');
    const accessLog = join(dir, 'access.log');
    try {
        // ---- a certificate for 127.0.0.1 and localhost
        const cert = join(dir, 'cert.pem');
        const key = join(dir, 'key.pem');
        await run('openssl', [
            'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
            '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
            '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'
        ]);
        const ca = await readFile(cert);

        // ---- the coordinator, trusting NGINX on this machine
        const [coordPort, httpsPort, httpPort] = [await freePort(), await freePort(), await freePort()];
        const front = `https://127.0.0.1:${httpsPort}`;
        await writeFile(join(dir, 'coordinator.toml'), 'trusted_proxies = ["127.0.0.1/32"]\n');
        const coordinator = startPxs([
            'coordinator', '--config', join(dir, 'coordinator.toml'), '--listen', `127.0.0.1:${coordPort}`,
            '--database-url', `sqlite://${join(dir, 'coordinator.db')}`, '--admin-token', ADMIN, '--node-token', NODE
        ], { name: 'coordinator' });
        procs.push(coordinator);
        cleanups.push(() => coordinator.stop('SIGTERM', { killAfterMs: 10_000 }));
        await coordinator.waitForEvent('listening', undefined, 20_000);
        const direct = `http://127.0.0.1:${coordPort}`;

        // ---- the configuration, once (no node yet), and NGINX with it
        const nginxConfigArgs = [
            'nginx-config', '--coordinator', direct, '--coordinator-upstream', direct,
            '--server-name', '127.0.0.1', '--cert', cert, '--key', key,
            '--https-port', String(httpsPort), '--http-port', String(httpPort), '--listen-address', '127.0.0.1',
            '--out', conf
        ];
        // The token comes from the environment, and is never printed.
        const once = startPxs(nginxConfigArgs, { name: 'nginx-config', env: { PXS_NGINX_TOKEN: ADMIN } });
        procs.push(once);
        const onceExit = await once.exited;
        assert.deepEqual(onceExit, { code: 0, signal: null }, once.output());
        const first = await readFile(conf, 'utf8');
        assert.match(first, /# \(no node yet\)/);
        assert.match(first, new RegExp(`listen 127\\.0\\.0\\.1:${httpsPort} ssl;`));

        const asRoot = process.getuid && process.getuid() === 0;
        await writeFile(nginxConf, [
            // As root, NGINX's workers would become `nobody`, who cannot use this test's private
            // temporary directory; they stay root here (a test's NGINX on loopback only).
            ...(asRoot ? ['user root root;'] : []),
            `pid ${join(dir, 'nginx.pid')};`,
            `error_log ${errorLog} info;`,
            'worker_processes 1;',
            'events { worker_connections 512; }',
            'http {',
            `    access_log ${accessLog};`,
            `    client_body_temp_path ${join(dir, 'client_body')};`,
            `    proxy_temp_path ${join(dir, 'proxy')};`,
            `    fastcgi_temp_path ${join(dir, 'fastcgi')};`,
            `    uwsgi_temp_path ${join(dir, 'uwsgi')};`,
            `    scgi_temp_path ${join(dir, 'scgi')};`,
            `    include ${conf};`,
            '}',
            ''
        ].join('\n'));
        const nginxArgs = ['-p', dir, '-c', nginxConf, '-e', errorLog];
        const nginx = startPxs([...nginxArgs, '-g', 'daemon off;'], { bin: NGINX_BIN, name: 'nginx' });
        procs.push(nginx);
        cleanups.push(() => nginx.stop('SIGTERM', { killAfterMs: 10_000 }));
        await waitFor('the coordinator through NGINX', async () => {
            if (nginx.exit) throw fatal(`nginx exited: ${nginx.output()}`);
            return (await fetchWith(`${front}/healthz`, { ca })).status === 200;
        });
        const redirect = await fetchWith(`http://127.0.0.1:${httpPort}/play/x?y=1`);
        assert.equal(redirect.status, 301, 'plain HTTP is sent to HTTPS');
        assert.equal(redirect.headers.location, `${front}/play/x?y=1`);

        // ---- the watcher: rewrites the file and reloads NGINX when the nodes change
        const watcher = startPxs([
            ...nginxConfigArgs, '--watch', '--interval', '250ms',
            ...[NGINX_BIN, ...nginxArgs, '-s', 'reload'].flatMap((a) => ['--reload-cmd', a])
        ], { name: 'nginx-config-watch', env: { PXS_NGINX_TOKEN: ADMIN } });
        procs.push(watcher);
        cleanups.push(() => watcher.stop('SIGTERM', { killAfterMs: 5_000 }));

        // ---- the title and two session servers behind NGINX
        const api = async (method, path, body) => {
            const r = await fetchWith(`${front}${path}`, { ca, method, body, headers: { Authorization: `Bearer ${ADMIN}` } });
            assert.ok(r.status >= 200 && r.status < 300, `${method} ${path}: ${r.status} ${r.text}`);
            return r.json;
        };
        await api('POST', '/api/v1/titles', {
            id: 'demo', name: 'pxs demo', description: 'A test pattern', application_id: 'demo', visibility: 'public',
            max_players: 2, idle_timeout: 300, empty_timeout: 120, max_duration: 0
        });
        for (const name of NODES) {
            const port = await freePort();
            const ports = 26000 + (port % 300) * 10;
            await writeFile(join(dir, `${name}.toml`), [
                '[node]', `name = "${name}"`, `public_url = "${front}/node/${name}"`, `listen = "127.0.0.1:${port}"`,
                'trusted_proxies = ["127.0.0.1/32"]',
                `data_dir = ${JSON.stringify(join(dir, name))}`, 'max_sessions = 1', `streamer_ports = "${ports}-${ports + 9}"`,
                'kill_grace = "3s"', 'heartbeat_interval = "500ms"', 'gpus = "none"', '',
                '[coordinator]', `url = "${direct}"`, `token = "${NODE}"`, '',
                '[[applications]]', 'id = "demo"', 'name = "pxs demo"', `executable = ${JSON.stringify(PXS_BIN)}`,
                'args = ["streamer", "-RenderOffScreen"]', 'res_x = 640', 'res_y = 360', 'start_timeout = "30s"', ''
            ].join('\n'));
            const node = startPxs(['session-server', '--config', join(dir, `${name}.toml`)], { name: `session-server ${name}` });
            procs.push(node);
            cleanups.push(() => node.stop('SIGTERM', { killAfterMs: 15_000 }));
        }
        for (const name of NODES) {
            await waitFor(`node ${name} through NGINX`, async () => {
                if (watcher.exit) throw fatal(`the watcher exited: ${watcher.output()}`);
                const r = await fetchWith(`${front}/node/${name}/healthz`, { ca });
                return r.status === 200 && r.json?.node === name;
            });
        }
        assert.match(watcher.stderr, /NGINX configuration written/);
        assert.match(watcher.stderr, /NGINX reloaded/);
        const nodes = (await api('GET', '/api/v1/nodes')).items;
        for (const n of nodes) assert.match(n.upstream_url, /^http:\/\/127\.0\.0\.1:\d+$/, JSON.stringify(n));
        for (const p of [once, watcher]) assert.ok(!(p.stdout + p.stderr).includes(ADMIN), `${p.name} printed the token`);

        // A share link made through NGINX says https: the coordinator believes NGINX's
        // X-Forwarded-Proto and takes the Host it passes on.
        const queued = await api('POST', '/api/v1/sessions', { title_id: 'demo', start_at: new Date(Date.now() + 3_600_000).toISOString(), duration: 60 });
        const link = await api('POST', `/api/v1/sessions/${queued.id}/links`, { role: 'viewer' });
        assert.ok(link.url.startsWith(`${front}/play/${queued.id}#key=`), link.url);
        await api('DELETE', `/api/v1/sessions/${queued.id}`);

        // ---- two users launch the demo over https; one session on each node
        const browser = await launchChromium(undefined, ['--ignore-certificate-errors']);
        cleanups.push(() => browser.close());
        for (const who of ['ann', 'ben']) {
            const context = await browser.newContext({ viewport: { width: 1024, height: 640 } });
            const page = await context.newPage();
            const sockets = [];
            page.on('websocket', (ws) => sockets.push(ws.url()));
            recordPage(page, who, { consoleLines, pageErrors });
            pages.push({ who, page, sockets });
            await page.goto(`${front}/`, { waitUntil: 'load' });
            await waitFor(`${who}: the demo with a free slot`, async () => {
                const text = await page.locator('[data-testid="availability-demo"]').textContent({ timeout: 2_000 }).catch(() => null);
                if (text && /free slot/.test(text)) return true;
                await page.reload({ waitUntil: 'load' });
                return false;
            }, { intervalMs: 500 });
            await page.locator('[data-testid="launch-demo"]').click();
            await page.waitForURL(/\/play\/[^/?#]+$/, { timeout: 15_000 });
            assert.ok(page.url().startsWith(`${front}/play/`), page.url());
            await waitFor(`${who}: ${FRAMES} frames`, async () =>
                (await page.evaluate(() => (window.pxsPlayer ? window.pxsPlayer.framesDecoded() : 0))) >= FRAMES, { timeoutMs: 60_000 });
        }
        const placed = [];
        for (const { who, page, sockets } of pages) {
            const s = await page.evaluate(() => window.pxsPlayer.session);
            assert.ok(NODES.includes(s.node_id), `${who}: ${JSON.stringify(s)}`);
            const prefix = `wss://127.0.0.1:${httpsPort}/node/${s.node_id}/`;
            assert.ok(s.join_url.startsWith(`${prefix}sessions/${s.id}/ws?`), `${who}'s join_url: ${s.join_url}`);
            assert.ok(sockets.some((u) => u.startsWith(prefix)), `${who}'s signalling went through NGINX: ${sockets.join(', ')}`);
            placed.push(s.node_id);
        }
        assert.deepEqual([...placed].sort(), NODES, 'one session on each node');
        await mkdir(artifactsDir, { recursive: true });
        await pages[0].page.screenshot({ path: join(artifactsDir, 'player-over-https.png') });
        assert.deepEqual(pageErrors, []);
    } catch (e) {
        await mkdir(artifactsDir, { recursive: true });
        for (const p of procs) await writeFile(join(artifactsDir, `${p.name.replace(/\s+/g, '-')}.log`), p.output());
        for (const f of [conf, nginxConf, errorLog, accessLog]) {
            const text = await readFile(f, 'utf8').catch(() => null);
            if (text !== null) await writeFile(join(artifactsDir, f.split('/').pop()), text);
        }
        await writeFile(join(artifactsDir, 'console.log'), consoleLines.join('\n'));
        for (const { who, page } of pages) await page.screenshot({ path: join(artifactsDir, `failure-${who}.png`) }).catch(() => {});
        console.error(consoleLines.slice(-80).join('\n'));
        for (const p of procs) console.error(`---- ${p.name}\n${p.output().slice(-4_000)}`);
        console.error(`logs and NGINX's configuration: ${artifactsDir}`);
        throw e;
    } finally {
        await runCleanups(cleanups);
    }
});
