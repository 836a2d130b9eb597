// Browser end-to-end test: Epic's Pixel Streaming frontend library (in headless Chromium) plays the
// H.264 (or VP8) video and the Opus audio of `pxs streamer` through `pxs webrtc-session`, and its
// input reaches the streamer.
//
// Run from web/:  npm test            (builds the pages first)
// Environment:    PXS_BIN             pxs binary, for both the server and the streamer
//                                     (default <repo>/target/debug/pxs)
//                 CHROMIUM_BIN        browser (default /usr/bin/chromium); never downloaded
// Artifacts:      <repo>/test-artifacts/stream-browser*.png, stream-browser*-console.log,
//                 stream-server*.log, stream-streamer*.log, stream-input*.jsonl
//
// How the library's input reaches the streamer (lib-pixelstreamingfrontend-ue5.7 0.3.1):
// - Mouse (HoveringMouse): listeners on the <video>'s parent, registered after the WebRTC
//   negotiation; events are ignored until the <video> has metadata. The position is offsetX/Y in
//   the parent, normalised to the video rectangle inside it (InputCoordTranslator, configured from
//   the parent's client size and videoWidth/videoHeight), times 65536. The page's stage has the
//   stream's 16:9 aspect ratio, so there is no letterbox; the test computes it anyway.
// - Keyboard: KeyboardInput is on by default and listens on `document`, so no element needs focus;
//   Playwright's keyboard (page focus) is enough. "A" gives KeyDown 65, KeyPress 65, KeyUp 65.
// - UIInteraction: emitUIInteraction() (refused until the <video> has metadata); the streamer's
//   `Response` goes to every addResponseEventListener() listener.
// - The "stream is playing" events are `videoInitialized` (loadedmetadata) then `playStream`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_DIR, WEB_DIR, launchChromium, portsOf, recordPage, runCleanups, startPxs, startSignallingServer, waitFor as waitForWithin, readInputLog } from './harness.mjs';

const httpRoot = join(WEB_DIR, 'dist', 'e2e', 'stream');
const artifactsDir = join(REPO_DIR, 'test-artifacts');
const RES_X = 1280;
const RES_Y = 720;
const TEST_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Polls `probe` until it is truthy, within this file's step timeout unless told otherwise. */
const waitFor = (what, probe, options = {}) =>
    waitForWithin(what, probe, { timeoutMs: STEP_TIMEOUT_MS, ...options });


async function streamState(page) {
    return page.evaluate(() => window.__stream);
}

async function pageEvent(page, type, timeoutMs = STEP_TIMEOUT_MS) {
    return waitFor(`the library to emit "${type}"`, async () => {
        const { events } = await streamState(page);
        return events.find((e) => e.type === type);
    }, { timeoutMs });
}

/**
 * Runs before the page's own scripts: wraps RTCPeerConnection so that the test can call getStats()
 * on every connection the library makes (the page wraps it again for its video samples; this
 * keeps the test's audio and codec checks out of the page), and remembers the <audio> elements
 * the library creates (it keeps its audio element out of the DOM).
 */
function instrumentPage() {
    const Native = window.RTCPeerConnection;
    window.__testPeerConnections = [];
    window.RTCPeerConnection = class extends Native {
        constructor(...args) {
            super(...args);
            window.__testPeerConnections.push(this);
        }
    };
    window.__testAudioElements = [];
    const createElement = Document.prototype.createElement;
    Document.prototype.createElement = function (...args) {
        const element = createElement.apply(this, args);
        if (element instanceof HTMLAudioElement) window.__testAudioElements.push(element);
        return element;
    };
}

/**
 * Unmutes the stream as a person would with the sound button: the page starts muted
 * (StartVideoMuted, so that autoplay needs no gesture), and Chromium reports an audioLevel of 0
 * for a muted sink. Returns how many media elements have a stream now.
 */
async function unmute(page) {
    return page.evaluate(async () => {
        const elements = [...(window.__testAudioElements || []), ...document.querySelectorAll('video')];
        let playing = 0;
        for (const el of elements) {
            if (!el.srcObject) continue;
            el.muted = false;
            await el.play().catch(() => {});
            playing += 1;
        }
        return playing;
    });
}

/**
 * From getStats() of the page's newest connection: the inbound audio (packets, samples, level)
 * and the mimeType of the inbound video's and audio's codecs.
 */
async function mediaStats(page) {
    return page.evaluate(async () => {
        const pcs = window.__testPeerConnections || [];
        const pc = pcs[pcs.length - 1];
        if (!pc) return null;
        const report = await pc.getStats();
        const out = { audio: null, videoCodec: null, audioCodec: null };
        const codecOf = (s) => (s.codecId && report.get(s.codecId) ? report.get(s.codecId).mimeType : null);
        report.forEach((s) => {
            if (s.type !== 'inbound-rtp') return;
            const kind = s.kind ?? s.mediaType;
            if (kind === 'audio') {
                out.audio = {
                    packetsReceived: s.packetsReceived ?? 0,
                    packetsLost: s.packetsLost,
                    totalSamplesReceived: s.totalSamplesReceived,
                    concealedSamples: s.concealedSamples,
                    audioLevel: s.audioLevel,
                    totalAudioEnergy: s.totalAudioEnergy
                };
                out.audioCodec = codecOf(s);
            } else if (kind === 'video') {
                out.videoCodec = codecOf(s);
            }
        });
        return out;
    });
}

/**
 * The streamer's tone arrives: inbound-rtp kind=audio with packets, Opus, and, where Chromium
 * reports them, samples played out and a level above silence. Returns the stats.
 */
async function assertAudioPlays(page, label) {
    assert.ok(await unmute(page) >= 1, `${label}: a media element plays the stream`);
    let last = null;
    const stats = await waitFor(`${label}: 50 audio packets and played-out samples (inbound-rtp kind=audio)`, async () => {
        const s = (last = await mediaStats(page));
        const a = s && s.audio;
        if (!a || a.packetsReceived < 50) return null;
        if (a.totalSamplesReceived !== undefined && a.totalSamplesReceived <= 0) return null;
        if (a.audioLevel !== undefined && !(a.audioLevel > 0)) return null;
        return s;
    }).catch((e) => {
        throw new Error(`${e.message}; last getStats: ${JSON.stringify(last)}`);
    });
    assert.equal(stats.audioCodec, 'audio/opus', `${label}: the audio codec is Opus`);
    assert.ok(stats.audio.packetsReceived >= 50, `${label}: audio packets received`);
    if (stats.audio.totalSamplesReceived !== undefined) {
        assert.ok(stats.audio.totalSamplesReceived > 0, `${label}: audio samples played out`);
    }
    if (stats.audio.audioLevel !== undefined) {
        // The tone peaks at -30 dBFS, an audioLevel of about 0.03 (linear, 1 = full scale).
        assert.ok(stats.audio.audioLevel > 0.005 && stats.audio.audioLevel < 0.2,
            `${label}: audioLevel ${stats.audio.audioLevel} is the quiet tone`);
    }
    return stats;
}

/** Starts server, streamer and browser, then opens `pageCount` player pages (one at a time). */
async function startSession(name, { pageCount = 1, streamerArgs = [] } = {}) {
    const session = { name, pages: [], consoleLines: [], pageErrors: [] };
    const cleanups = [];
    session.close = () => runCleanups(cleanups);
    try {
        if (!existsSync(join(httpRoot, 'index.html'))) {
            throw new Error(`test page not built: ${httpRoot} (run npm run build in web/)`);
        }
        session.tmp = await mkdtemp(join(tmpdir(), 'pxs-stream-e2e-'));
        session.inputLog = join(session.tmp, 'input.jsonl');

        session.server = startSignallingServer(httpRoot, { timeoutMs: STEP_TIMEOUT_MS });
        cleanups.push(() => session.server.stop());
        session.ports = portsOf(await session.server.waitForEvent('listening'));

        session.streamer = startPxs([
            'streamer',
            `-PixelStreamingURL=ws://127.0.0.1:${session.ports.streamer}`,
            `-ResX=${RES_X}`,
            `-ResY=${RES_Y}`,
            '--input-log', session.inputLog,
            '--stats-interval', '1',
            ...streamerArgs
        ], { name: 'streamer', timeoutMs: STEP_TIMEOUT_MS });
        cleanups.push(() => session.streamer.stop());
        const registered = await session.streamer.waitForEvent('registered');
        assert.equal(registered.streamer_id, 'DefaultStreamer', 'streamer registered as DefaultStreamer');

        session.browser = await launchChromium();
        cleanups.push(() => session.browser.close());

        const params = new URLSearchParams({ ss: `ws://127.0.0.1:${session.ports.player}`, MaxReconnectAttempts: '0' });
        session.url = `http://127.0.0.1:${session.ports.player}/?${params}`;
        for (let i = 0; i < pageCount; i++) {
            // One context (a window of its own) per page: a second tab in the same window would
            // hide the first one, and a hidden page presents no frames (no requestVideoFrameCallback).
            const context = await session.browser.newContext({ viewport: { width: 960, height: 660 } });
            await context.addInitScript(instrumentPage);
            const page = await context.newPage();
            const source = pageCount > 1 ? `page${i}` : 'page';
            recordPage(page, source, session);
            const response = await page.goto(session.url, { waitUntil: 'load' });
            assert.ok(response && response.ok(), `GET ${session.url} -> ${response && response.status()}`);
            session.pages.push(page);
        }
        return session;
    } catch (e) {
        await saveArtifacts(session, '-setup', e);
        throw e;
    }
}

/**
 * Saves screenshots and the browser console, prints diagnostics if `error` is set, then stops
 * everything and saves the server's and streamer's output and the input log.
 */
async function saveArtifacts(session, suffix, error) {
    const base = join(artifactsDir, `stream-browser${suffix}`);
    const states = [];
    try {
        await mkdir(artifactsDir, { recursive: true });
        for (const [i, page] of session.pages.entries()) {
            if (page.isClosed()) continue;
            const shot = session.pages.length > 1 ? `${base}-${i}.png` : `${base}.png`;
            // A passing run has taken its screenshot at the right moment already.
            if (error || !session.screenshotTaken) {
                await page.screenshot({ path: shot }).catch((e) => console.error(`screenshot failed: ${e.message}`));
            }
            states.push(await streamState(page).catch((e) => ({ error: e.message })));
        }
        await writeFile(`${base}-console.log`, session.consoleLines.join('\n') + '\n');
    } catch (e) {
        console.error(`saving browser artifacts failed: ${e.message}`);
    } finally {
        await session.close();
    }

    if (session.server) await writeFile(join(artifactsDir, `stream-server${suffix}.log`), session.server.output()).catch(() => {});
    if (session.streamer) await writeFile(join(artifactsDir, `stream-streamer${suffix}.log`), session.streamer.output()).catch(() => {});
    if (session.inputLog && existsSync(session.inputLog)) {
        await copyFile(session.inputLog, join(artifactsDir, `stream-input${suffix}.jsonl`)).catch(() => {});
    }
    if (session.tmp) await rm(session.tmp, { recursive: true, force: true }).catch(() => {});

    if (error) {
        const parts = [`\n===== diagnostics for "${session.name}": ${error.message}`];
        if (session.server) parts.push(session.server.output());
        if (session.streamer) parts.push(session.streamer.output());
        for (const [i, state] of states.entries()) {
            const brief = state && state.strip ? {
                ...state,
                stats: state.stats.slice(-5),
                strip: { ...state.strip, readings: state.strip.readings.slice(-5) }
            } : state;
            parts.push(`--- page ${i} state ---`, JSON.stringify(brief, null, 1).slice(0, 20_000));
        }
        parts.push('--- browser console ---', ...session.consoleLines.slice(-200));
        console.error(parts.join('\n'));
    }
}

/** Runs `body` with a fresh session; always saves artifacts and cleans up. */
async function withSession(name, suffix, options, body) {
    const session = await startSession(name, options);
    let failure = null;
    try {
        await body(session);
    } catch (e) {
        failure = e;
        throw e;
    } finally {
        await saveArtifacts(session, suffix, failure).catch((e) => console.error(`saving artifacts failed: ${e.message}`));
    }
}

/**
 * Waits until the page decoded at least `count` frames, and returns the first stats sample that
 * shows it together with the time since the signalling websocket opened.
 */
async function waitForDecodedFrames(page, count, timeoutMs = STEP_TIMEOUT_MS) {
    return waitFor(`${count} decoded frames (inbound-rtp framesDecoded)`, async () => {
        const state = await streamState(page);
        const sample = state.stats.find((s) => s.framesDecoded >= count);
        if (!sample) return null;
        return { sample, sinceOpenMs: sample.t - state.signalling.openAt, state };
    }, { timeoutMs });
}

/** Checks the frame numbers read from the strip: enough readings, strictly increasing, sane times. */
async function assertStripReadable(page, label) {
    const state = await waitFor(`${label}: 30 frames read from the timestamp strip`, async () => {
        const s = await streamState(page);
        return s.strip.readings.length >= 30 && s;
    });
    const { readings, failures, callbacks, mismatched, skipped, verified } = state.strip;
    // Each frame read is the callback's own (VideoFrame timestamp = mediaTime), so the order holds.
    assert.equal(verified, true, `${label}: strip frames are verified against the callback's mediaTime`);
    for (let i = 1; i < readings.length; i++) {
        assert.ok(readings[i].frame > readings[i - 1].frame,
            `${label}: strip frame numbers increase (${readings[i - 1].frame} then ${readings[i].frame}): ` +
            JSON.stringify(readings.slice(Math.max(0, i - 3), i + 3)));
        assert.ok(readings[i].wallMs >= readings[i - 1].wallMs, `${label}: strip times do not go back`);
    }
    const first = readings[0];
    const last = readings[readings.length - 1];
    assert.ok(last.frame - first.frame >= 29, `${label}: frames ${first.frame}..${last.frame} span at least 29`);
    assert.equal(last.width, RES_X, `${label}: presented frame width`);
    assert.equal(last.height, RES_Y, `${label}: presented frame height`);
    // Same machine, same wall clock: the strip's time is a little before the frame was shown. `now` is
    // the start of the rendering frame that shows it, which can precede the frame's arrival by
    // up to a vsync interval, so a latency of a few ms below zero is possible (seen: -8 ms).
    for (const r of readings) {
        assert.ok(r.latencyMs > -50 && r.latencyMs < 5000,
            `${label}: frame ${r.frame} shown ${r.latencyMs.toFixed(1)} ms after its strip time`);
    }
    const attempted = readings.length + failures;
    assert.ok(failures <= attempted / 10, `${label}: at most 10% of frames misread (${failures} of ${attempted})`);
    assert.ok(mismatched <= callbacks / 4, `${label}: at most 25% of callbacks found the next frame already (${mismatched} of ${callbacks})`);
    return { first, last, count: readings.length, failures, callbacks, mismatched, skipped };
}

// ---------------------------------------------------------------------------------------------
// Tests

test('the library plays the streamer\'s video; clicks, keys and UIInteraction reach it', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withSession('one player', '', { pageCount: 1 }, async (session) => {
        const [page] = session.pages;

        // The library reports the stream: the <video> got its metadata, then play() was called.
        const initialized = await pageEvent(page, 'videoInitialized');
        const play = await pageEvent(page, 'playStream');
        assert.ok(play.t >= initialized.t, 'playStream follows videoInitialized');

        // At least 30 frames decoded within 5 s of connecting (the signalling websocket opening).
        const { sample, sinceOpenMs } = await waitForDecodedFrames(page, 30);
        console.error(`note: ${sample.framesDecoded} frames decoded ${sinceOpenMs.toFixed(0)} ms after the ` +
            `signalling websocket opened (${sample.frameWidth}x${sample.frameHeight})`);
        assert.ok(sinceOpenMs <= 5000, `30 frames decoded within 5 s of connecting (took ${sinceOpenMs.toFixed(0)} ms)`);
        assert.equal(sample.frameWidth, RES_X, 'decoded width');
        assert.equal(sample.frameHeight, RES_Y, 'decoded height');

        const video = await page.evaluate(() => {
            const v = document.querySelector('#player video');
            return v && { paused: v.paused, readyState: v.readyState, w: v.videoWidth, h: v.videoHeight };
        });
        assert.ok(video, 'the library created a <video>');
        assert.equal(video.paused, false, 'video is playing');
        assert.equal(video.w, RES_X, 'video.videoWidth');
        assert.equal(video.h, RES_Y, 'video.videoHeight');

        // The picture is real: the strip reads back in the browser and its frame number increases.
        const strip = await assertStripReadable(page, 'player');
        console.error(`note: strip read ${strip.count} frames (${strip.first.frame}..${strip.last.frame}), ` +
            `${strip.failures} misread; ${strip.callbacks} callbacks, ${strip.mismatched} found the next frame already, ` +
            `${strip.skipped} had no frame yet; last latency ${strip.last.latencyMs.toFixed(1)} ms`);

        // The tone plays: Opus packets arrive, decode and have a level.
        const media = await assertAudioPlays(page, 'player');
        assert.equal(media.videoCodec, 'video/H264', 'the video codec is H.264');
        console.error(`note: audio ${JSON.stringify(media.audio)}`);

        // The streamer reports its encoder's QP about once a second; the library emits it.
        const qp = await pageEvent(page, 'videoEncoderAvgQP');
        assert.ok(Number(qp.data.avgQP) >= 0 && Number(qp.data.avgQP) <= 51, `VideoEncoderAvgQP ${JSON.stringify(qp.data)} is an H.264 QP`);

        // Click at 25% width, 75% height of the picture, with the real mouse. The library maps the
        // position into the video rectangle (letterboxed or not) inside the video's parent.
        const target = await page.evaluate(() => {
            const v = document.querySelector('#player video');
            const r = v.getBoundingClientRect();
            const videoAspect = v.videoWidth / v.videoHeight;
            let { left, top, width, height } = r;
            if (width / height > videoAspect) {
                const w = height * videoAspect;
                left += (width - w) / 2;
                width = w;
            } else {
                const h = width / videoAspect;
                top += (height - h) / 2;
                height = h;
            }
            return { x: left + 0.25 * width, y: top + 0.75 * height, box: { left: r.left, top: r.top, width: r.width, height: r.height } };
        });
        await page.mouse.click(target.x, target.y);
        const mouseDown = await waitFor('MouseDown in the streamer\'s input log', async () =>
            (await readInputLog(session.inputLog)).find((m) => m.name === 'MouseDown'));
        assert.equal(mouseDown.fields.button, 0, 'MouseDown button');
        assert.ok(Math.abs(mouseDown.fields.x - 16384) <= 1, `MouseDown x = 16384 ± 1 (got ${mouseDown.fields.x}; clicked ${JSON.stringify(target)})`);
        assert.ok(Math.abs(mouseDown.fields.y - 49152) <= 1, `MouseDown y = 49152 ± 1 (got ${mouseDown.fields.y}; clicked ${JSON.stringify(target)})`);
        await waitFor('MouseUp in the input log', async () =>
            (await readInputLog(session.inputLog)).find((m) => m.name === 'MouseUp'));

        // Keyboard: the library listens on the document (KeyboardInput is on by default): no focus needed.
        await page.keyboard.press('A');
        const keyDown = await waitFor('KeyDown in the streamer\'s input log', async () =>
            (await readInputLog(session.inputLog)).find((m) => m.name === 'KeyDown'));
        assert.equal(keyDown.fields.keyCode, 65, 'KeyDown keyCode');
        await waitFor('KeyUp 65 in the input log', async () =>
            (await readInputLog(session.inputLog)).find((m) => m.name === 'KeyUp' && m.fields.keyCode === 65));

        // UIInteraction round trip: the streamer answers with a Response carrying the same string.
        const descriptor = { action: 'jump', nonce: `n${Date.now()}` };
        const sent = await page.evaluate((d) => window.__pixelStreaming.emitUIInteraction(d), descriptor);
        assert.equal(sent, true, 'emitUIInteraction accepted the descriptor');
        const response = await waitFor('the Response to the UIInteraction', async () => {
            const state = await streamState(page);
            return state.responses.find((r) => r.text.includes(descriptor.nonce));
        });
        assert.deepEqual(JSON.parse(response.text), descriptor, 'Response carries the UIInteraction string');
        const logged = (await readInputLog(session.inputLog)).find((m) => m.name === 'UIInteraction');
        assert.ok(logged, 'UIInteraction in the input log');
        assert.deepEqual(JSON.parse(logged.fields.text), descriptor, 'UIInteraction text in the input log');
        for (const m of await readInputLog(session.inputLog)) {
            assert.equal(m.player_id, 'Player0', `input logged for Player0: ${JSON.stringify(m)}`);
        }

        // A screenshot once the picture shows the input: a frame drawn after the response.
        const after = Date.now() + 100;
        await waitFor('a frame drawn after the input', async () => {
            const state = await streamState(page);
            return state.strip.readings.some((r) => r.wallMs > after);
        });
        await mkdir(artifactsDir, { recursive: true });
        await page.screenshot({ path: join(artifactsDir, 'stream-browser.png') });
        session.screenshotTaken = true;

        assert.deepEqual(session.pageErrors, [], 'no uncaught errors in the page');
        const state = await streamState(page);
        assert.deepEqual(state.errors, [], 'the page recorded no errors');
        assert.equal(state.signalling.closes.length, 0, 'signalling websocket stays open');
        assert.equal(session.streamer.exit, null, 'streamer still running');
        assert.equal(session.server.exit, null, 'server still running');
    });
});

test('two players at once both receive video', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withSession('two players', '-two', { pageCount: 2 }, async (session) => {
        const results = [];
        for (const [i, page] of session.pages.entries()) {
            await pageEvent(page, 'playStream');
            results.push(await waitForDecodedFrames(page, 30));
            await assertStripReadable(page, `player ${i}`);
        }
        // Both are still decoding at the same time: each gains frames over the same window.
        const before = await Promise.all(session.pages.map((p) => streamState(p)));
        const base = before.map((s) => s.stats[s.stats.length - 1].framesDecoded);
        await waitFor('both players to decode 15 more frames', async () => {
            const now = await Promise.all(session.pages.map((p) => streamState(p)));
            return now.every((s, i) => s.stats[s.stats.length - 1].framesDecoded >= base[i] + 15);
        });
        const peers = session.streamer.events.filter((e) => e.event === 'peer_connected').map((e) => e.player_id);
        assert.equal(new Set(peers).size, 2, `two peers connected at the streamer (${peers.join(', ')})`);
        console.error(`note: two players: ${results.map((r) => `${r.sample.framesDecoded} frames after ` +
            `${r.sinceOpenMs.toFixed(0)} ms`).join('; ')}`);
        assert.deepEqual(session.pageErrors, [], 'no uncaught errors in the pages');
    });
});

test('with -PixelStreamingEncoderCodec=VP8 the library plays VP8 video (and the tone)', { timeout: TEST_TIMEOUT_MS }, async () => {
    await withSession('VP8', '-vp8', { pageCount: 1, streamerArgs: ['-PixelStreamingEncoderCodec=VP8'] }, async (session) => {
        const [page] = session.pages;
        await pageEvent(page, 'playStream');
        const { sample, sinceOpenMs } = await waitForDecodedFrames(page, 30);
        assert.equal(sample.frameWidth, RES_X, 'decoded width');
        assert.equal(sample.frameHeight, RES_Y, 'decoded height');
        const media = await mediaStats(page);
        assert.equal(media.videoCodec, 'video/VP8', 'getStats reports the VP8 codec');
        await assertStripReadable(page, 'VP8 player');
        await assertAudioPlays(page, 'VP8 player');
        console.error(`note: VP8: ${sample.framesDecoded} frames decoded ${sinceOpenMs.toFixed(0)} ms after the ` +
            'signalling websocket opened');
        assert.deepEqual(session.pageErrors, [], 'no uncaught errors in the page');
    });
});
