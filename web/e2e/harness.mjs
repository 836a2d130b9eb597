// Shared pieces of the browser tests and benchmarks: the pxs processes they start (and the JSON
// events those print), Chromium and its pages, bounded waits and log lines. Each test file keeps
// its own scenario; only what is the same everywhere lives here.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(WEB_DIR, '..');
/** The pxs binary under test: PXS_BIN, else the debug build. */
export const PXS_BIN = process.env.PXS_BIN || join(REPO_DIR, 'target', 'debug', 'pxs');
/** The browser: CHROMIUM_BIN, else Debian's; never downloaded. */
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

// ---------------------------------------------------------------------------------------------
// Waiting

/** An error that ends a `waitFor` at once instead of being retried until the timeout. */
export const fatal = (message) => Object.assign(new Error(message), { fatal: true });

/**
 * Polls `probe` until it returns a truthy value, or throws once `timeoutMs` has passed. An error
 * thrown by `probe` is retried (and named in the timeout's message), unless it is `fatal`.
 */
export async function waitFor(what, probe, { timeoutMs = 10_000, intervalMs = 50 } = {}) {
    const deadline = Date.now() + timeoutMs;
    let lastError;
    for (;;) {
        try {
            const value = await probe();
            if (value) return value;
        } catch (e) {
            if (e && e.fatal) throw e;
            lastError = e;
        }
        if (Date.now() >= deadline) {
            const cause = lastError ? ` (last error: ${lastError.message})` : '';
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
        }
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

/** Runs and empties a stack of cleanups, newest first; a failing one is reported, not thrown. */
export async function runCleanups(cleanups, report = (e) => console.error(`cleanup failed: ${e.message}`)) {
    while (cleanups.length > 0) {
        const cleanup = cleanups.pop();
        try {
            await cleanup();
        } catch (e) {
            report(e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pxs processes

/** After SIGKILL, how long `stop` still waits for the exit before it gives up. */
const KILL_WAIT_MS = 5_000;

/**
 * Starts `pxs <args>` with its output captured. Every line of stdout that is a JSON object
 * (`{"event":"listening",...}`) is parsed and kept in `events`, with `at`, the time it arrived
 * (Date.now()). Options:
 *   bin          the binary (default PXS_BIN)
 *   name         for messages and the output dump (default 'pxs')
 *   env          added to this process's environment (NO_COLOR is always set: no ANSI codes in logs)
 *   onEvent      called with each parsed event as it arrives
 *   timeoutMs    waitForEvent's default timeout (default 10 s)
 *   outputLimit  keep only the last this many characters of stdout and of stderr (default: all)
 *
 * The returned object: `proc`, `pid`, `name`, `command`, `startedAt`; `stdout`, `stderr` (text);
 * `events`; `exit` (null while running, then { code, signal } or { error }); `exited` (a promise
 * of `exit`); and
 *   event(type, predicate?)                 the first event of that type (and predicate), or undefined
 *   waitForEvent(predicate, what?, timeoutMs?)
 *                                           the first event matching `predicate` (an event type, or
 *                                           a function of the event), waited for; fails at once
 *                                           if the process exited and its output is all read
 *   stop(signal = 'SIGTERM', { killAfterMs = 3000 })
 *                                           sends `signal`, SIGKILL after `killAfterMs`, waits for
 *                                           the exit; resolves to { ...exit, forced } (forced: it
 *                                           took the SIGKILL); at once if the process is gone
 *   output()                                the command, stdout, stderr and exit, for a log file
 */
export function startPxs(args, { bin = PXS_BIN, name = 'pxs', env = {}, onEvent, timeoutMs = 10_000, outputLimit = Infinity } = {}) {
    if (!existsSync(bin)) throw new Error(`pxs binary not found: ${bin} (build it with cargo build -p pxs, or set PXS_BIN)`);
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } });
    const keep = (text) => (text.length > outputLimit ? text.slice(-outputLimit) : text);
    let closed = false; // exited, and stdout and stderr are at their end
    const child = {
        name,
        proc,
        pid: proc.pid,
        command: [bin, ...args].join(' '),
        startedAt: Date.now(),
        stdout: '',
        stderr: '',
        events: [],
        exit: null,
        exited: null,
        event(type, predicate = () => true) {
            return child.events.find((e) => e.event === type && predicate(e));
        },
        waitForEvent(predicate, what, waitMs = timeoutMs) {
            const matches = typeof predicate === 'function' ? predicate : (e) => e.event === predicate;
            const description = what ?? (typeof predicate === 'function'
                ? `an event from ${name}`
                : `${name} to print {"event":"${predicate}",...}`);
            return waitFor(description, () => {
                const found = child.events.find(matches);
                if (found) return found;
                if (child.exit) {
                    const message = `${name} exited: ${JSON.stringify(child.exit)}` +
                        (child.stderr ? `; stderr ends:\n${child.stderr.slice(-2_000)}` : '');
                    // Until its output is all read, the event may still come.
                    throw closed ? fatal(message) : new Error(message);
                }
                return null;
            }, { timeoutMs: waitMs });
        },
        async stop(signal = 'SIGTERM', { killAfterMs = 3_000 } = {}) {
            let forced = false;
            if (!child.exit) {
                proc.kill(signal);
                if (!(await exitWithin(killAfterMs))) {
                    forced = true;
                    proc.kill('SIGKILL');
                    await exitWithin(KILL_WAIT_MS);
                }
            }
            return { ...child.exit, forced };
        },
        output() {
            return `$ ${child.command}\n--- ${name} stdout ---\n${child.stdout}\n--- ${name} stderr ---\n${child.stderr}` +
                `\n--- ${name} exit: ${child.exit ? JSON.stringify(child.exit) : 'still running'} ---\n`;
        }
    };
    child.exited = new Promise((resolveExit) => {
        proc.on('exit', (code, signal) => resolveExit((child.exit = { code, signal })));
        proc.on('error', (err) => resolveExit((child.exit = { error: err.message })));
    });
    proc.on('close', () => (closed = true));
    /** Whether the process exits within `ms`. */
    async function exitWithin(ms) {
        let timer;
        const exited = await Promise.race([
            child.exited.then(() => true),
            new Promise((r) => (timer = setTimeout(r, ms, false)))
        ]);
        clearTimeout(timer);
        return exited;
    }

    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => (child.stderr = keep(child.stderr + chunk)));
    let pending = '';
    const parse = (line) => {
        line = line.trim();
        if (!line.startsWith('{')) return;
        let event;
        try {
            event = { ...JSON.parse(line), at: Date.now() };
        } catch {
            return; // not JSON: it stays in child.stdout
        }
        child.events.push(event);
        if (onEvent) onEvent(event);
    };
    proc.stdout.on('data', (chunk) => {
        child.stdout = keep(child.stdout + chunk);
        pending += chunk;
        let nl;
        while ((nl = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, nl);
            pending = pending.slice(nl + 1);
            parse(line);
        }
    });
    proc.stdout.on('end', () => parse(pending));
    return child;
}

/**
 * `pxs webrtc-session` on 127.0.0.1 with every port chosen by the system, serving `httpRoot`'s
 * index.html. Not waited for: `await server.waitForEvent('listening')`, then `portsOf` it.
 * `options` are startPxs's (name defaults to 'server'), plus `logLevel` (default 'debug').
 */
export function startSignallingServer(httpRoot, { logLevel = 'debug', ...options } = {}) {
    return startPxs([
        'webrtc-session',
        '--bind_address', '127.0.0.1',
        '--streamer_port', '0',
        '--player_port', '0',
        '--sfu_port', '0',
        '--serve',
        '--http_root', httpRoot,
        '--homepage', 'index.html',
        '--log_level_console', logLevel
    ], { name: 'server', ...options });
}

/** The ports of the server's `listening` event: { streamer, player, sfu }. */
export function portsOf(listening) {
    const port = (addr) => {
        const m = /:(\d+)$/.exec(String(addr));
        assert.ok(m, `the listening line has an address with a port: ${JSON.stringify(listening)}`);
        return Number(m[1]);
    };
    return { streamer: port(listening.streamer), player: port(listening.player), sfu: port(listening.sfu) };
}

// ---------------------------------------------------------------------------------------------
// Chromium

/** Chromium as root, headless, offline, with WebRTC allowed on loopback (never downloaded). */
export const CHROMIUM_ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--autoplay-policy=no-user-gesture-required'
];

/**
 * Headless Chromium with CHROMIUM_ARGS and `extraArgs` (e.g. '--ignore-certificate-errors' for a
 * test's self-signed certificate). Playwright's launch() always uses a fresh temporary profile
 * (--user-data-dir) that it deletes on close; it refuses an explicit --user-data-dir.
 */
export function launchChromium(executablePath = CHROMIUM_BIN, extraArgs = []) {
    return chromium.launch({ executablePath, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs] });
}

/**
 * Records `page`'s console in `consoleLines` (see consoleLine) and its uncaught errors in
 * `pageErrors` (as "<source>: <message>") and, with their stack, in `consoleLines`.
 */
export function recordPage(page, source, { consoleLines, pageErrors }) {
    page.on('console', (m) => consoleLines.push(consoleLine(source, m)));
    page.on('pageerror', (e) => {
        pageErrors.push(`${source}: ${e.message}`);
        consoleLines.push(`${stamp()} [${source} pageerror] ${e.stack || e.message}`);
    });
}

// ---------------------------------------------------------------------------------------------
// Log lines

export function stamp() {
    return new Date().toISOString().slice(11, 23);
}

/** One console message as a log line; the library appends a stack to every line: keep it for errors only. */
export function consoleLine(source, message) {
    const type = message.type();
    let text = message.text();
    if (type !== 'error' && type !== 'warning') text = text.replace(/\nStack:[\s\S]*$/, '');
    return `${stamp()} [${source} ${type}] ${text}`;
}

// ---------------------------------------------------------------------------------------------
// Shared helpers of the browser tests

/** A TCP port free on `host` now (the caller binds it soon after). */
export function freePort(host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen(0, host, () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/** The JSON lines of a `pxs streamer --input-log` file; none while it does not exist. */
export async function readInputLog(file) {
    let text = '';
    try {
        text = await readFile(file, 'utf8');
    } catch {
        return [];
    }
    return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

/** Frames decoded by the page, summed over its peer connections (a handoff or a reconnect
 *  starts a new one whose count starts again at 0). */
export function frameCounter(page) {
    let total = 0;
    let last = 0;
    return async () => {
        const now = await page.evaluate(() => (window.pxsPlayer ? window.pxsPlayer.framesDecoded() : 0));
        if (now < last) total += last;
        last = now;
        return total + now;
    };
}

/** The page position of (fx, fy), fractions of the picture inside the letterboxed video. */
export async function videoPoint(page, fx, fy) {
    return page.evaluate(([fx, fy]) => {
        const v = document.querySelector('#player video');
        const r = v.getBoundingClientRect();
        const aspect = v.videoWidth / v.videoHeight;
        let { left, top, width, height } = r;
        if (width / height > aspect) {
            const w = height * aspect;
            left += (width - w) / 2;
            width = w;
        } else {
            const h = width / aspect;
            top += (height - h) / 2;
            height = h;
        }
        return { x: left + fx * width, y: top + fy * height };
    }, [fx, fy]);
}

/** The http:// URL a `pxs coordinator --listen 127.0.0.1:0` prints it listens at, waited for;
 *  fails at once if it exits. */
export function coordinatorUrl(coordinator, { timeoutMs = 20_000 } = {}) {
    return waitFor('the coordinator to listen', () => {
        if (coordinator.exit) throw fatal(`the coordinator exited: ${coordinator.output()}`);
        const line = coordinator.stdout.split('\n').find((l) => l.includes('"listening"'));
        return line ? `http://${JSON.parse(line).addr}` : null;
    }, { timeoutMs, intervalMs: 100 });
}

/**
 * A caller of the coordinator's JSON API at `url` as `token` (another token as its fourth
 * argument): asserts a 2xx answer and returns its parsed body. `onText(method, path, text)`
 * sees every answer's text.
 */
export function apiCaller(url, token, { onText } = {}) {
    return async (method, path, body, as = token) => {
        const r = await fetch(new URL(path, url), {
            method,
            headers: { Authorization: `Bearer ${as}`, 'Content-Type': 'application/json' },
            body: body ? JSON.stringify(body) : undefined
        });
        const text = await r.text();
        if (onText) onText(method, path, text);
        if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
        return text ? JSON.parse(text) : null;
    };
}
