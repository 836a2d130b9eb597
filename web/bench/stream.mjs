// Streamer benchmark: `pxs streamer` → `pxs webrtc-session` → Epic's frontend library in headless
// Chromium, on this machine. For each resolution it measures
//   - time to the first decoded frame: from the streamer's start, from the player's `subscribe`,
//     and from the streamer's `player_connected` (several starts; median and max);
//   - steady state with 1 and then 2 viewers, over a fixed window: streamer CPU (% of one core,
//     from /proc/<pid>/stat, with a per-thread split), encode time per frame (from the streamer's
//     `--stats-interval` lines), frames decoded per second in the page, Chromium's CPU (all its
//     processes, split by type) and the server's;
//   - glass-to-glass latency: performance.timeOrigin + now at requestVideoFrameCallback minus the
//     encode time stamped in the picture's strip (same machine, same clock), p50/p95/max.
// Anything else using more than 10% of a core during a window marks the window as disturbed.
//
// Usage (from web/, after `npm run build` and `cargo build --release -p pxs`):
//   npm run bench:stream
//   node bench/stream.mjs [--pxs PATH] [--chromium PATH] [--resolutions 1280x720,1920x1080]
//                         [--fps 30] [--window 10] [--warmup 3] [--starts 5] [--json FILE]
//                         [--strip videoframe|canvas]
// --strip: how the page reads the strip: `videoframe` (default) copies the strip's rows of the
// luma plane out of a VideoFrame; `canvas` draws the frame onto a canvas and reads the pixels
// back, as the test does, which costs Chromium a full-frame colour conversion per frame.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
    CHROMIUM_BIN, REPO_DIR, WEB_DIR, launchChromium, portsOf, runCleanups, stamp, startPxs, startSignallingServer,
    waitFor as waitForWithin
} from '../e2e/harness.mjs';

const httpRoot = join(WEB_DIR, 'dist', 'e2e', 'stream');

const { values: opts } = parseArgs({
    options: {
        pxs: { type: 'string', default: join(REPO_DIR, 'target', 'release', 'pxs') },
        chromium: { type: 'string', default: CHROMIUM_BIN },
        resolutions: { type: 'string', default: '1280x720,1920x1080' },
        fps: { type: 'string', default: '30' },
        window: { type: 'string', default: '10' },
        warmup: { type: 'string', default: '3' },
        starts: { type: 'string', default: '5' },
        strip: { type: 'string', default: 'videoframe' },
        json: { type: 'string' },
        help: { type: 'boolean', default: false }
    }
});
if (opts.help) {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('//')).join('\n'));
    process.exit(0);
}
const FPS = Number(opts.fps);
const WINDOW_S = Number(opts.window);
const WARMUP_S = Number(opts.warmup);
const STARTS = Math.max(1, Number(opts.starts));
const RESOLUTIONS = opts.resolutions.split(',').map((r) => {
    const m = /^(\d+)x(\d+)$/.exec(r.trim());
    if (!m) throw new Error(`bad resolution ${r} (want WxH)`);
    return { w: Number(m[1]), h: Number(m[2]) };
});
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
/** A window is disturbed if anything else used more than this fraction of a core... */
const DISTURBED_CORE_FRACTION = 0.10;
/** ...and is then measured again, up to this many times in all. */
const WINDOW_ATTEMPTS = 3;

// ---------------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** How long a step (a process's event, a page's state) may take. */
const STEP_TIMEOUT_MS = 20_000;

/** harness.mjs's waitFor, with this benchmark's step timeout and a finer poll. */
const waitFor = (what, probe, options = {}) =>
    waitForWithin(what, probe, { timeoutMs: STEP_TIMEOUT_MS, intervalMs: 20, ...options });

function percentile(sorted, p) {
    if (!sorted.length) return NaN;
    const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[i];
}

function median(values) {
    return percentile([...values].sort((a, b) => a - b), 50);
}

function log(line) {
    process.stderr.write(`[${stamp()}] ${line}\n`);
}

// ---------------------------------------------------------------------------------------------
// /proc

/** utime + stime of a process (or a thread's stat file), in clock ticks; null if gone. */
function cpuTicks(statPath) {
    try {
        const text = readFileSync(statPath, 'utf8');
        const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
        // fields[0] is field 3 (state); utime is field 14, stime field 15.
        return Number(fields[11]) + Number(fields[12]);
    } catch {
        return null;
    }
}

function parentOf(pid) {
    try {
        const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]);
    } catch {
        return null;
    }
}

/** Every descendant of `root`, found through the parent pids in /proc. */
function descendants(root) {
    const children = new Map();
    for (const name of readdirSync('/proc')) {
        if (!/^\d+$/.test(name)) continue;
        const ppid = parentOf(Number(name));
        if (ppid === null) continue;
        if (!children.has(ppid)) children.set(ppid, []);
        children.get(ppid).push(Number(name));
    }
    const out = [];
    const stack = [root];
    while (stack.length) {
        const pid = stack.pop();
        for (const c of children.get(pid) || []) {
            out.push(c);
            stack.push(c);
        }
    }
    return out;
}

/** Chromium's processes (descendants of this node process that are not ours), by --type. */
function chromiumProcesses(exclude) {
    const procs = [];
    for (const pid of descendants(process.pid)) {
        if (exclude.has(pid)) continue;
        let cmdline = '';
        try {
            cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
        } catch {
            continue;
        }
        if (!/chrom/i.test(cmdline)) continue;
        const type = /--type=([\w-]+)/.exec(cmdline)?.[1] || 'browser';
        const sub = /--utility-sub-type=([\w.]+)/.exec(cmdline)?.[1];
        procs.push({ pid, type: sub ? `utility:${sub.split('.').pop()}` : type });
    }
    return procs;
}

/** Busy and total jiffies of the whole machine (all CPUs). */
function machineTicks() {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    return { busy: user + nice + system + irq + softirq + steal, total: v.reduce((a, b) => a + b, 0), idle: idle + iowait };
}

function threadTicks(pid) {
    const out = new Map();
    let tids = [];
    try {
        tids = readdirSync(`/proc/${pid}/task`);
    } catch {
        return out;
    }
    for (const tid of tids) {
        let comm = '?';
        try {
            comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
        } catch {
            continue;
        }
        const ticks = cpuTicks(`/proc/${pid}/task/${tid}/stat`);
        if (ticks === null) continue;
        // The main thread carries the binary's name; numbered workers are grouped by name.
        const name = tid === String(pid) ? 'main' : comm;
        out.set(name, (out.get(name) || 0) + ticks);
    }
    return out;
}

/** CPU ticks of every process on the machine, by pid (to name whatever disturbed a window). */
function allProcessTicks() {
    const out = new Map();
    for (const name of readdirSync('/proc')) {
        if (!/^\d+$/.test(name)) continue;
        try {
            const text = readFileSync(`/proc/${name}/stat`, 'utf8');
            const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
            const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
            out.set(Number(name), { comm, ticks: Number(fields[11]) + Number(fields[12]) });
        } catch {
            // gone
        }
    }
    return out;
}

/** A snapshot of everything whose CPU we account for. */
function snapshot(pids) {
    const chrome = chromiumProcesses(new Set([pids.server, pids.streamer].filter(Boolean)));
    const byType = new Map();
    let chromeTotal = 0;
    for (const p of chrome) {
        const t = cpuTicks(`/proc/${p.pid}/stat`) ?? 0;
        chromeTotal += t;
        byType.set(p.type, (byType.get(p.type) || 0) + t);
    }
    const self = process.cpuUsage();
    return {
        at: performance.now(),
        machine: machineTicks(),
        streamer: pids.streamer ? cpuTicks(`/proc/${pids.streamer}/stat`) ?? 0 : 0,
        streamerThreads: pids.streamer ? threadTicks(pids.streamer) : new Map(),
        server: pids.server ? cpuTicks(`/proc/${pids.server}/stat`) ?? 0 : 0,
        chrome: chromeTotal,
        chromePids: chrome.map((p) => p.pid).sort().join(','),
        chromeByType: byType,
        selfMs: (self.user + self.system) / 1000,
        all: allProcessTicks(),
        ours: new Set([process.pid, pids.streamer, pids.server, ...chrome.map((p) => p.pid)])
    };
}

/** CPU use between two snapshots, in % of one core. */
function cpuBetween(a, b) {
    const seconds = (b.at - a.at) / 1000;
    const pct = (ticks) => (100 * ticks) / CLK_TCK / seconds;
    const streamerThreads = {};
    for (const [name, t] of b.streamerThreads) streamerThreads[name] = pct(t - (a.streamerThreads.get(name) || 0));
    const chromeByType = {};
    for (const [type, t] of b.chromeByType) chromeByType[type] = pct(t - (a.chromeByType.get(type) || 0));
    const machineBusy = pct(b.machine.busy - a.machine.busy);
    const streamer = pct(b.streamer - a.streamer);
    const server = pct(b.server - a.server);
    const chrome = pct(b.chrome - a.chrome);
    const self = (100 * (b.selfMs - a.selfMs)) / 1000 / seconds;
    // The busiest processes that are not ours (for a disturbed window).
    const others = [];
    for (const [pid, p] of b.all) {
        if (b.ours.has(pid) || a.ours.has(pid)) continue;
        const used = pct(p.ticks - (a.all.get(pid)?.ticks ?? 0));
        if (used >= 1) others.push(`${p.comm}[${pid}] ${used.toFixed(0)}%`);
    }
    others.sort((x, y) => parseFloat(y.split('] ')[1]) - parseFloat(x.split('] ')[1]));
    return {
        others: others.slice(0, 5),
        seconds,
        streamer,
        streamerThreads,
        server,
        chrome,
        chromeByType,
        chromeSameProcesses: a.chromePids === b.chromePids,
        bench: self,
        machineBusy,
        other: machineBusy - streamer - server - chrome - self
    };
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Every child process still running, so that a signal can stop them all. */
const running = new Set();

/** Keeps `child` in `running` until it exits. */
function track(child) {
    running.add(child);
    child.exited.then(() => running.delete(child));
    return child;
}

/** pxs's output is kept in part only: the benchmark's processes run for minutes. */
const PXS_OPTIONS = { bin: opts.pxs, timeoutMs: STEP_TIMEOUT_MS, outputLimit: 20_000 };

/** The server, listening; its ports in `server.ports`. */
async function startServer() {
    const server = track(startSignallingServer(httpRoot, { ...PXS_OPTIONS, logLevel: 'warn' }));
    try {
        server.ports = portsOf(await server.waitForEvent('listening'));
    } catch (e) {
        await server.stop();
        throw e;
    }
    return server;
}

// ---------------------------------------------------------------------------------------------
// One resolution

async function openViewer(browser, server, extra = {}) {
    const context = await browser.newContext({ viewport: { width: 960, height: 660 } });
    const page = await context.newPage();
    const params = new URLSearchParams({
        ss: `ws://127.0.0.1:${server.ports.player}`,
        StreamerAutoJoinInterval: '500', // the library's minimum: it polls for a streamer this often
        MaxReconnectAttempts: '100000',
        statsMs: '0', // stats only on demand, so that the page's own cost stays that of a player
        strip: opts.strip,
        ...extra
    });
    await page.goto(`http://127.0.0.1:${server.ports.player}/?${params}`, { waitUntil: 'load' });
    return { context, page };
}

const pageState = (page) => page.evaluate(() => window.__stream);

async function firstFrame(page) {
    return waitFor('the first presented frame', async () => {
        const s = await pageState(page);
        return s.strip.firstFrameAt !== undefined && s;
    });
}

function startStreamer(server, res, inputLog) {
    return track(startPxs([
        'streamer',
        `-PixelStreamingURL=ws://127.0.0.1:${server.ports.streamer}`,
        `-ResX=${res.w}`,
        `-ResY=${res.h}`,
        `-PixelStreamingWebRTCMaxFps=${FPS}`,
        '--input-log', inputLog,
        '--stats-interval', '1'
    ], { ...PXS_OPTIONS, name: 'streamer' }));
}

/**
 * Starts a streamer while a player page waits for it; returns the time line of the start. The
 * viewer and the streamer are registered in `cleanups` as soon as they exist.
 */
async function measureStart(browser, server, res, inputLog, cleanups) {
    const viewer = await openViewer(browser, server);
    cleanups.push(() => viewer.context.close().catch(() => {}));
    // The page is connected and polling for a streamer.
    await waitFor('the page to list streamers', async () => (await pageState(viewer.page)).events.some((e) => e.type === 'streamerListMessage'));
    // Start at a random phase of the library's 500 ms poll for streamers, so that the median
    // start → first frame includes the average wait for the next poll, not a fixed one.
    await sleep(Math.random() * 500);
    const streamer = startStreamer(server, res, inputLog);
    cleanups.push(() => streamer.stop());
    const t0 = streamer.startedAt;
    const state = await firstFrame(viewer.page);
    const firstAt = state.timeOrigin + state.strip.firstFrameAt;
    const registered = await streamer.waitForEvent('registered');
    const connected = streamer.event('player_connected');
    const peer = streamer.event('peer_connected');
    const subscribeAt = state.timeOrigin + state.signalling.subscribeAt;
    return {
        streamer,
        viewer,
        timeline: {
            startToRegistered: registered.at - t0,
            registeredToSubscribe: subscribeAt - registered.at,
            subscribeToPlayerConnected: connected ? connected.at - subscribeAt : NaN,
            playerConnectedToPeerConnected: connected && peer ? peer.at - connected.at : NaN,
            peerConnectedToFirstFrame: peer ? firstAt - peer.at : NaN,
            startToFirstFrame: firstAt - t0,
            subscribeToFirstFrame: firstAt - subscribeAt,
            playerConnectedToFirstFrame: connected ? firstAt - connected.at : NaN
        }
    };
}

/** Measures a window; a disturbed one is measured again, up to `WINDOW_ATTEMPTS` times in all. */
async function measureWindow(label, pids, streamer, viewers) {
    let result;
    for (let attempt = 1; attempt <= WINDOW_ATTEMPTS; attempt++) {
        result = await measureWindowOnce(label, pids, streamer, viewers);
        result.attempts = attempt;
        if (!result.disturbed) break;
        log(`${label}: disturbed by ${result.cpu.others.join(', ') || 'unknown'}${attempt < WINDOW_ATTEMPTS ? '; measuring again' : ''}`);
    }
    return result;
}

/** Measures one steady-state window with the given viewers. */
async function measureWindowOnce(label, pids, streamer, viewers) {
    const sample = async (v) => {
        const s = await v.page.evaluate(() => window.__sampleStats());
        if (!s) throw new Error('the page has no inbound video stats');
        return s;
    };
    const statsBefore = await Promise.all(viewers.map(sample));
    const wallStart = Date.now();
    const a = snapshot(pids);
    await sleep(WINDOW_S * 1000);
    const b = snapshot(pids);
    const wallEnd = Date.now();
    const statsAfter = await Promise.all(viewers.map(sample));
    const states = await Promise.all(viewers.map((v) => pageState(v.page)));
    const cpu = cpuBetween(a, b);

    // Streamer stats lines that fall in the window (one per second, each for the last second).
    const lines = streamer.events.filter((e) => e.event === 'stats' && e.at > wallStart + 500 && e.at <= wallEnd + 500);
    const frames = lines.reduce((n, l) => n + l.frames, 0);
    const encodeMsAvg = frames ? lines.reduce((s, l) => s + l.encode_ms_avg * l.frames, 0) / frames : NaN;
    const encodeMsMax = Math.max(...lines.map((l) => l.encode_ms_max));
    const streamerFps = lines.length ? lines.reduce((s, l) => s + l.fps, 0) / lines.length : NaN;
    const bitrateKbps = lines.length ? lines.reduce((s, l) => s + l.bitrate_kbps, 0) / lines.length : NaN;
    const dropped = lines.reduce((n, l) => n + l.dropped, 0);

    const perViewer = states.map((s, i) => {
        const before = statsBefore[i];
        const after = statsAfter[i];
        const seconds = (after.t - before.t) / 1000;
        const decoded = after.framesDecoded - before.framesDecoded;
        const inWindow = s.strip.readings.filter((r) => {
            const at = s.timeOrigin + r.now;
            return at >= wallStart && at <= wallEnd;
        });
        const lat = inWindow.map((r) => r.latencyMs).sort((x, y) => x - y);
        const toReceive = inWindow.filter((r) => r.receiveTime).map((r) => s.timeOrigin + r.receiveTime - r.wallMs).sort((x, y) => x - y);
        const byDateNow = inWindow.map((r) => r.dateNow - r.wallMs).sort((x, y) => x - y);
        const receiveToShown = inWindow.filter((r) => r.receiveTime).map((r) => r.now - r.receiveTime).sort((x, y) => x - y);
        return {
            decodedFps: decoded / seconds,
            decodeMsPerFrame: decoded ? (1000 * (after.totalDecodeTime - before.totalDecodeTime)) / decoded : NaN,
            jitterBufferMs: (1000 * (after.jitterBufferDelay - before.jitterBufferDelay)) /
                (after.jitterBufferEmittedCount - before.jitterBufferEmittedCount),
            framesDropped: (after.framesDropped ?? 0) - (before.framesDropped ?? 0),
            freezes: (after.freezeCount ?? 0) - (before.freezeCount ?? 0),
            frameSize: `${after.frameWidth}x${after.frameHeight}`,
            presented: inWindow.length,
            misreads: s.strip.failures,
            stripMethod: s.strip.method,
            pageErrors: s.errors,
            latency: { n: lat.length, p50: percentile(lat, 50), p95: percentile(lat, 95), max: lat[lat.length - 1] },
            latencyDateNow: { p50: percentile(byDateNow, 50), p95: percentile(byDateNow, 95), max: byDateNow[byDateNow.length - 1] },
            mismatched: s.strip.mismatched,
            encodeToReceive: { p50: percentile(toReceive, 50), p95: percentile(toReceive, 95) },
            receiveToShown: { p50: percentile(receiveToShown, 50), p95: percentile(receiveToShown, 95) }
        };
    });
    const disturbed = cpu.other > 100 * DISTURBED_CORE_FRACTION;
    log(`${label}: streamer ${cpu.streamer.toFixed(1)}%, chromium ${cpu.chrome.toFixed(1)}%, server ${cpu.server.toFixed(1)}%, ` +
        `bench ${cpu.bench.toFixed(1)}%, other ${cpu.other.toFixed(1)}%${disturbed ? ' DISTURBED' : ''}; encode ${encodeMsAvg.toFixed(2)} ms; ` +
        perViewer.map((v) => `${v.decodedFps.toFixed(1)} fps, latency p50 ${v.latency.p50?.toFixed(1)} ms`).join(' | '));
    return { label, cpu, disturbed, encodeMsAvg, encodeMsMax, streamerFps, bitrateKbps, dropped, streamerFrames: frames, viewers: perViewer };
}

async function runResolution(browser, res) {
    const name = `${res.w}x${res.h}@${FPS}`;
    const tmp = await mkdtemp(join(tmpdir(), 'pxs-bench-stream-'));
    const cleanups = [];
    const result = { name, starts: [] };
    try {
        const server = await startServer();
        cleanups.push(() => server.stop());

        // Time to first frame, several times; the last streamer and viewer stay for the windows.
        let current = null;
        for (let i = 0; i < STARTS; i++) {
            if (current) {
                await current.viewer.context.close();
                await current.streamer.stop();
            }
            current = await measureStart(browser, server, res, join(tmp, `input-${i}.jsonl`), cleanups);
            const t = current.timeline;
            log(`${name} start ${i + 1}/${STARTS}: start→first frame ${t.startToFirstFrame.toFixed(0)} ms, ` +
                `subscribe→first ${t.subscribeToFirstFrame.toFixed(0)} ms, player_connected→first ${t.playerConnectedToFirstFrame.toFixed(0)} ms`);
            result.starts.push(t);
        }
        const { streamer, viewer } = current;
        const pids = { streamer: streamer.pid, server: server.pid };

        await sleep(WARMUP_S * 1000);
        result.one = await measureWindow(`${name}, 1 viewer`, pids, streamer, [viewer]);

        const second = await openViewer(browser, server);
        cleanups.push(() => second.context.close().catch(() => {}));
        await firstFrame(second.page);
        await sleep(WARMUP_S * 1000);
        result.two = await measureWindow(`${name}, 2 viewers`, pids, streamer, [viewer, second]);

        // The cost of the measurement itself: one viewer that does not read the strip.
        await second.context.close();
        await viewer.context.close();
        const plain = await openViewer(browser, server, { strip: '0' });
        cleanups.push(() => plain.context.close().catch(() => {}));
        await firstFrame(plain.page);
        await sleep(WARMUP_S * 1000);
        result.noStrip = await measureWindow(`${name}, 1 viewer, strip not read`, pids, streamer, [plain]);
    } finally {
        await runCleanups(cleanups, (e) => log(`cleanup: ${e.message}`));
        await rm(tmp, { recursive: true, force: true });
    }
    return result;
}

/** Chromium's own floor: the page open and waiting (no stream), over the same window length. */
async function measureIdleBrowser(browser) {
    const server = await startServer();
    try {
        const viewer = await openViewer(browser, server);
        await sleep(WARMUP_S * 1000);
        let cpu;
        for (let attempt = 1; attempt <= WINDOW_ATTEMPTS; attempt++) {
            const a = snapshot({ server: server.pid });
            await sleep(WINDOW_S * 1000);
            cpu = cpuBetween(a, snapshot({ server: server.pid }));
            cpu.disturbed = cpu.other > 100 * DISTURBED_CORE_FRACTION;
            log(`idle page (no streamer): chromium ${cpu.chrome.toFixed(1)}%, other ${cpu.other.toFixed(1)}%` +
                (cpu.disturbed ? ` DISTURBED by ${cpu.others.join(', ') || 'unknown'}` : ''));
            if (!cpu.disturbed) break;
        }
        await viewer.context.close();
        return cpu;
    } finally {
        await server.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Report

const f = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');

function report(results, idle) {
    const rows = [];
    const head = ['metric', 'goal', ...results.map((r) => r.name)];
    const row = (label, goal, fn) => rows.push([label, goal, ...results.map(fn)]);
    const starts = (r, key) => {
        const v = r.starts.map((s) => s[key]);
        return `${f(median(v), 0)} (max ${f(Math.max(...v), 0)})`;
    };
    row('streamer start → first frame, ms: median (max)', '', (r) => starts(r, 'startToFirstFrame'));
    row('  start → registered', '', (r) => starts(r, 'startToRegistered'));
    row('  registered → subscribe (library polls every 500 ms)', '', (r) => starts(r, 'registeredToSubscribe'));
    row('subscribe → first frame, ms', '< 1000', (r) => starts(r, 'subscribeToFirstFrame'));
    row('  subscribe → player_connected', '', (r) => starts(r, 'subscribeToPlayerConnected'));
    row('  player_connected → peer_connected (offer, answer, ICE, DTLS)', '', (r) => starts(r, 'playerConnectedToPeerConnected'));
    row('  peer_connected → first frame (keyframe, decode, present)', '', (r) => starts(r, 'peerConnectedToFirstFrame'));
    row('player_connected → first frame, ms', '', (r) => starts(r, 'playerConnectedToFirstFrame'));
    row('encode ms/frame: avg (max)', '', (r) => `${f(r.one.encodeMsAvg, 2)} (${f(r.one.encodeMsMax, 1)})`);
    row('streamer CPU, % of one core: 1 viewer', '720p30 < 25', (r) => f(r.one.cpu.streamer));
    row('streamer CPU, % of one core: 2 viewers', '', (r) => f(r.two.cpu.streamer));
    row('streamer CPU per frame, ms (1 viewer)', '', (r) => f((10 * r.one.cpu.streamer) / r.one.streamerFps, 2));
    row('streamer fps / bitrate kbit/s / dropped', '', (r) => `${f(r.one.streamerFps)} / ${f(r.one.bitrateKbps, 0)} / ${r.one.dropped}`);
    row('frames decoded per second (viewer 1)', '30', (r) => f(r.one.viewers[0].decodedFps));
    row('frames decoded per second (2 viewers)', '30 each', (r) => r.two.viewers.map((v) => f(v.decodedFps)).join(' / '));
    row('Chromium decode ms/frame', '', (r) => f(r.one.viewers[0].decodeMsPerFrame, 2));
    row('Chromium jitter buffer delay, ms/frame (inbound-rtp)', '', (r) => f(r.one.viewers[0].jitterBufferMs, 1));
    row('glass-to-glass ms, 1 viewer: p50 / p95 / max (frames)', '', (r) => {
        const l = r.one.viewers[0].latency;
        return `${f(l.p50)} / ${f(l.p95)} / ${f(l.max)} (${l.n})`;
    });
    row('  with Date.now() in the callback instead of now: p50 / p95 / max', '', (r) => {
        const l = r.one.viewers[0].latencyDateNow;
        return `${f(l.p50)} / ${f(l.p95)} / ${f(l.max)}`;
    });
    row('  encode stamp → last packet received: p50 / p95', '', (r) => {
        const l = r.one.viewers[0].encodeToReceive;
        return `${f(l.p50)} / ${f(l.p95)}`;
    });
    row('  received → shown (jitter buffer, decode, vsync): p50 / p95', '', (r) => {
        const l = r.one.viewers[0].receiveToShown;
        return `${f(l.p50)} / ${f(l.p95)}`;
    });
    row('glass-to-glass ms, 2 viewers: p50 / p95 / max', '', (r) => r.two.viewers.map((v) => `${f(v.latency.p50)} / ${f(v.latency.p95)} / ${f(v.latency.max)}`).join(' ; '));
    row('Chromium CPU, % of one core: 1 viewer', '', (r) => f(r.one.cpu.chrome));
    row('Chromium CPU, % of one core: 2 viewers', '', (r) => f(r.two.cpu.chrome));
    row('Chromium CPU per extra viewer', '', (r) => f(r.two.cpu.chrome - r.one.cpu.chrome));
    row('Chromium CPU: 1 viewer, strip not read', '', (r) => f(r.noStrip.cpu.chrome));
    row('streamer CPU per extra viewer', '', (r) => f(r.two.cpu.streamer - r.one.cpu.streamer));
    row('server CPU (1 / 2 viewers)', '', (r) => `${f(r.one.cpu.server)} / ${f(r.two.cpu.server)}`);
    row('other load on the machine, % (windows 1 / 2 / 3)', '< 10', (r) => [r.one, r.two, r.noStrip].map((w) => f(w.cpu.other)).join(' / '));

    const widths = head.map((_, i) => Math.max(head[i].length, ...rows.map((r) => String(r[i]).length)));
    const line = (cells) => `| ${cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
    const out = [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)];
    out.push('', `Chromium with the page open and no stream (its floor): ${f(idle.chrome)}% of one core` +
        `${idle.disturbed ? '  ** DISTURBED **' : ''}.`);
    for (const r of results) {
        for (const w of [r.one, r.two, r.noStrip]) {
            const threads = Object.entries(w.cpu.streamerThreads).filter(([, v]) => v >= 0.5).sort((x, y) => y[1] - x[1]);
            const types = Object.entries(w.cpu.chromeByType).filter(([, v]) => v >= 0.5).sort((x, y) => y[1] - x[1]);
            out.push(`${w.label}: streamer threads ${threads.map(([n, v]) => `${n} ${f(v)}%`).join(', ')}; ` +
                `chromium ${types.map(([n, v]) => `${n} ${f(v)}%`).join(', ')}${w.disturbed ? '  ** DISTURBED **' : ''}`);
        }
    }
    const verdicts = [];
    for (const r of results) {
        const sub = Math.max(...r.starts.map((s) => s.subscribeToFirstFrame));
        verdicts.push(`${r.name}: first frame after subscribe ${f(median(r.starts.map((s) => s.subscribeToFirstFrame)), 0)} ms median, ` +
            `${f(sub, 0)} ms max: ${sub < 1000 ? 'MET' : 'NOT MET'} (< 1 s)`);
        if (r.name.startsWith('1280x720')) {
            verdicts.push(`${r.name}: streamer CPU ${f(r.one.cpu.streamer)}% of one core: ${r.one.cpu.streamer < 25 ? 'MET' : 'NOT MET'} (< 25%)`);
        }
    }
    out.push('', ...verdicts);
    return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
    for (const [what, path] of [['pxs', opts.pxs], ['chromium', opts.chromium], ['page', join(httpRoot, 'index.html')]]) {
        if (!existsSync(path)) throw new Error(`${what} not found: ${path}`);
    }
    log(`pxs ${opts.pxs}; ${cpus().length} CPUs; CLK_TCK ${CLK_TCK}; window ${WINDOW_S} s, warm-up ${WARMUP_S} s, ${STARTS} starts`);
    const browser = await launchChromium(opts.chromium);
    const onSignal = async () => {
        for (const child of running) child.proc.kill('SIGKILL');
        await browser.close().catch(() => {});
        process.exit(130);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
        const idle = await measureIdleBrowser(browser);
        const results = [];
        for (const res of RESOLUTIONS) results.push(await runResolution(browser, res));
        const text = report(results, idle);
        console.log(text);
        if (opts.json) {
            await writeFile(opts.json, JSON.stringify({ date: new Date().toISOString(), opts, idle, results }, null, 1));
            log(`wrote ${opts.json}`);
        }
        if (idle.disturbed || results.some((r) => r.one.disturbed || r.two.disturbed || r.noStrip.disturbed)) {
            log('some windows were disturbed by other load: rerun on a quiet machine');
            process.exitCode = 3;
        }
    } finally {
        await browser.close().catch(() => {});
    }
}

main().catch((e) => {
    console.error(e.stack || String(e));
    process.exit(1);
});
