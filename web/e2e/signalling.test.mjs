// Browser end-to-end test: Epic's Pixel Streaming frontend library (in headless Chromium) against
// `pxs webrtc-session` and a scripted streamer.
//
// Run from web/:  npm test            (builds the page first)
// Environment:    PXS_BIN             server binary (default <repo>/target/debug/pxs)
//                 CHROMIUM_BIN        browser (default /usr/bin/chromium); never downloaded
// Artifacts:      <repo>/test-artifacts/signalling-browser*.{png,log}, signalling-server*.log
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import {
    REPO_DIR, WEB_DIR, launchChromium, portsOf, recordPage, runCleanups, stamp, startSignallingServer,
    waitFor as waitForWithin
} from './harness.mjs';

const httpRoot = join(WEB_DIR, 'dist', 'e2e', 'signalling');
const artifactsDir = join(REPO_DIR, 'test-artifacts');
const STREAMER_ID = 'DefaultStreamer';
const TEST_TIMEOUT_MS = 45_000;
const STEP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Polls `probe` until it is truthy, within this file's step timeout unless told otherwise. */
const waitFor = (what, probe, options = {}) =>
    waitForWithin(what, probe, { timeoutMs: STEP_TIMEOUT_MS, ...options });

/** Starts `pxs webrtc-session` and resolves once it printed its `listening` line on stdout. */
async function startServer() {
    if (!existsSync(join(httpRoot, 'index.html'))) {
        throw new Error(`test page not built: ${httpRoot} (run npm run build in web/)`);
    }
    const server = startSignallingServer(httpRoot, { timeoutMs: 15_000 });
    try {
        server.listening = await server.waitForEvent('listening');
    } catch (e) {
        await server.stop();
        e.message += `\n${server.output()}`;
        throw e;
    }
    server.ports = portsOf(server.listening);
    return server;
}

/**
 * Plays the streamer (UE) side of the signalling protocol over `ws`. Its offers come from a real
 * RTCPeerConnection in `rtcPage` (a blank page of the same browser), so the library can accept
 * them; the answer and the player's ICE candidates are fed back into that peer connection.
 */
class ScriptedStreamer {
    constructor(url, rtcPage, id = STREAMER_ID) {
        this.url = url;
        this.rtcPage = rtcPage;
        this.id = id;
        this.received = [];
        this.sent = [];
        this.log = [];
        this.errors = [];
        this.closed = null;
        this.offered = new Map(); // playerId -> { sdp, candidates }
    }

    async connect() {
        this.ws = new WebSocket(this.url);
        this.ws.on('message', (data) => this.onMessage(data));
        this.ws.on('close', (code, reason) => {
            this.closed = { code, reason: reason.toString() };
            this.log.push(`${stamp()} streamer ws closed ${code} ${reason}`);
        });
        this.ws.on('error', (err) => this.errors.push(err.message));
        await new Promise((resolveOpen, rejectOpen) => {
            this.ws.once('open', resolveOpen);
            this.ws.once('error', rejectOpen);
        });
    }

    send(msg) {
        this.sent.push(msg);
        this.log.push(`${stamp()} streamer -> ${JSON.stringify(msg).slice(0, 300)}`);
        this.ws.send(JSON.stringify(msg));
    }

    messages(type) {
        return this.received.filter((m) => m.type === type);
    }

    onMessage(data) {
        let msg;
        try {
            msg = JSON.parse(data.toString());
        } catch (e) {
            this.errors.push(`unparsable message from server: ${data.toString().slice(0, 200)}`);
            return;
        }
        this.received.push(msg);
        this.log.push(`${stamp()} streamer <- ${JSON.stringify(msg).slice(0, 300)}`);
        const run = (p) => p.catch((e) => {
            this.errors.push(`${msg.type}: ${e.message}`);
            this.log.push(`${stamp()} streamer error handling ${msg.type}: ${e.message}`);
        });
        switch (msg.type) {
            case 'identify':
                this.send({ type: 'endpointId', id: this.id, protocolVersion: '1.3.0' });
                break;
            case 'ping':
                this.send({ type: 'pong', time: msg.time });
                break;
            case 'playerConnected':
                run(this.offerTo(msg.playerId));
                break;
            case 'answer':
                run(this.rtcPage.evaluate(
                    ({ playerId, sdp }) => window.__streamer.acceptAnswer(playerId, sdp),
                    { playerId: msg.playerId, sdp: msg.sdp }));
                break;
            case 'iceCandidate':
                run(this.rtcPage.evaluate(
                    ({ playerId, candidate }) => window.__streamer.addCandidate(playerId, candidate),
                    { playerId: msg.playerId, candidate: msg.candidate }));
                break;
            default:
                break;
        }
    }

    async offerTo(playerId) {
        const offer = await this.rtcPage.evaluate((id) => window.__streamer.makeOffer(id), playerId);
        this.offered.set(playerId, offer);
        this.send({ type: 'offer', playerId, sdp: offer.sdp });
        // Trickle the gathered candidates; make sure one is for 127.0.0.1 (the loopback flag lets
        // Chromium gather it; if it did not, announce one on the port of a gathered UDP candidate).
        const candidates = [...offer.candidates];
        if (!candidates.some((c) => / 127\.0\.0\.1 /.test(c.candidate))) {
            const udp = candidates.find((c) => / udp /i.test(c.candidate));
            const port = udp ? udp.candidate.split(' ')[5] : '9';
            candidates.unshift({
                candidate: `candidate:1 1 udp 2122260223 127.0.0.1 ${port} typ host generation 0`,
                sdpMid: '0',
                sdpMLineIndex: 0
            });
        }
        for (const candidate of candidates) {
            this.send({ type: 'iceCandidate', playerId, candidate });
        }
    }

    /** Closes cleanly (1000), or drops the socket if the server does not complete the handshake soon. */
    async close() {
        const ws = this.ws;
        if (!ws || ws.readyState === WebSocket.CLOSED) return;
        const closed = new Promise((r) => ws.once('close', r));
        if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'test done');
        const timer = setTimeout(() => ws.terminate(), 1000);
        await closed;
        clearTimeout(timer);
    }
}

/** Installed in the stand-in streamer's blank page: one sending RTCPeerConnection per player. */
function installStreamerPeer() {
    const peers = new Map();
    window.__streamer = {
        async makeOffer(playerId) {
            const pc = new RTCPeerConnection();
            const candidates = [];
            const entry = { pc, candidates, states: [] };
            peers.set(playerId, entry);
            pc.onicecandidate = (e) => {
                if (e.candidate && e.candidate.candidate) candidates.push(e.candidate.toJSON());
            };
            pc.oniceconnectionstatechange = () => entry.states.push(pc.iceConnectionState);
            pc.addTransceiver('video', { direction: 'sendonly' });
            pc.addTransceiver('audio', { direction: 'sendonly' });
            entry.channel = pc.createDataChannel('datachannel');
            const offer = await pc.createOffer();
            await pc.setLocalDescription(offer);
            // Wait (bounded) for host candidates so that they can be trickled after the offer.
            const deadline = Date.now() + 3000;
            while (pc.iceGatheringState !== 'complete' && Date.now() < deadline) {
                await new Promise((r) => setTimeout(r, 20));
            }
            return { sdp: offer.sdp, candidates: [...candidates] };
        },
        async acceptAnswer(playerId, sdp) {
            const entry = peers.get(playerId);
            if (!entry) throw new Error(`answer for unknown player ${playerId}`);
            await entry.pc.setRemoteDescription({ type: 'answer', sdp });
        },
        async addCandidate(playerId, candidate) {
            const entry = peers.get(playerId);
            if (!entry) throw new Error(`ICE candidate for unknown player ${playerId}`);
            await entry.pc.addIceCandidate(candidate);
        },
        state(playerId) {
            const entry = peers.get(playerId);
            return entry ? {
                ice: entry.pc.iceConnectionState,
                states: entry.states,
                channel: entry.channel.readyState
            } : null;
        }
    };
}

/** Everything one test needs: server, browser with the test page, stand-in streamer page and ws. */
async function startSession(name, pageParams = {}) {
    const cleanups = [];
    const session = { name, consoleLines: [], pageErrors: [], close: () => runCleanups(cleanups) };
    try {
        session.server = await startServer();
        cleanups.push(() => session.server.stop());

        session.browser = await launchChromium();
        cleanups.push(() => session.browser.close());
        const context = await session.browser.newContext({ viewport: { width: 960, height: 540 } });

        // The stand-in streamer's peer connection lives in a second, blank page.
        session.rtcPage = await context.newPage();
        recordPage(session.rtcPage, 'streamer-page', session);
        await session.rtcPage.evaluate(installStreamerPeer);

        const { ports } = session.server;
        session.streamer = new ScriptedStreamer(`ws://127.0.0.1:${ports.streamer}`, session.rtcPage);
        await session.streamer.connect();
        cleanups.push(() => session.streamer.close());
        const confirm = await waitFor('endpointIdConfirm for the scripted streamer',
            () => session.streamer.messages('endpointIdConfirm')[0]);
        assert.equal(confirm.committedId, STREAMER_ID, 'server committed the requested streamer id');

        session.page = await context.newPage();
        recordPage(session.page, 'page', session);
        const params = new URLSearchParams({ ss: `ws://127.0.0.1:${ports.player}`, ...pageParams });
        session.url = `http://127.0.0.1:${ports.player}/?${params}`;
        const response = await session.page.goto(session.url, { waitUntil: 'load' });
        assert.ok(response && response.ok(), `GET ${session.url} -> ${response && response.status()}`);
        return session;
    } catch (e) {
        await dumpDiagnostics(session, e);
        await saveBrowserArtifacts(session, '-setup').catch(() => {});
        await session.close();
        await saveServerArtifacts(session, '-setup').catch(() => {});
        throw e;
    }
}

async function pageState(page) {
    return page.evaluate(() => ({ events: window.__events || [], signalling: window.__signalling || null }));
}

async function pageEvent(session, type, predicate = () => true, timeoutMs = STEP_TIMEOUT_MS) {
    return waitFor(`the library to emit "${type}"`, async () => {
        const { events } = await pageState(session.page);
        return events.find((e) => e.type === type && predicate(e.data || {}));
    }, { timeoutMs });
}

/** Saves the screenshot and the browser console log (while the browser is still up). */
async function saveBrowserArtifacts(session, suffix) {
    await mkdir(artifactsDir, { recursive: true });
    const base = join(artifactsDir, `signalling-browser${suffix}`);
    if (session.page && !session.page.isClosed()) {
        await session.page.screenshot({ path: `${base}.png` }).catch((e) => console.error(`screenshot failed: ${e.message}`));
    }
    await writeFile(`${base}-console.log`, session.consoleLines.join('\n') + '\n');
}

/** Saves the server's output and the scripted streamer's message log (after shutdown). */
async function saveServerArtifacts(session, suffix) {
    await mkdir(artifactsDir, { recursive: true });
    if (session.server) {
        await writeFile(join(artifactsDir, `signalling-server${suffix}.log`), session.server.output());
    }
    if (session.streamer) {
        await writeFile(join(artifactsDir, `signalling-streamer${suffix}.log`), session.streamer.log.join('\n') + '\n');
    }
}

async function dumpDiagnostics(session, error) {
    const parts = [`\n===== diagnostics for "${session.name}": ${error && error.message}`];
    if (session.server) parts.push(session.server.output());
    if (session.streamer) {
        parts.push('--- scripted streamer ---', ...session.streamer.log);
        if (session.streamer.errors.length) parts.push(`streamer errors: ${session.streamer.errors.join('; ')}`);
    }
    if (session.page && !session.page.isClosed()) {
        const state = await pageState(session.page).catch((e) => ({ error: e.message }));
        parts.push('--- page state ---', JSON.stringify(state, null, 1).slice(0, 20_000));
    }
    parts.push('--- browser console ---', ...session.consoleLines.slice(-200));
    console.error(parts.join('\n'));
}

/** Runs `body` with a fresh session; always saves artifacts and cleans up. */
async function withSession(name, suffix, pageParams, body) {
    let session;
    try {
        session = await startSession(name, pageParams);
        await body(session);
    } catch (e) {
        if (session) await dumpDiagnostics(session, e);
        throw e;
    } finally {
        if (session) {
            await saveBrowserArtifacts(session, suffix).catch((e) => console.error(`saving artifacts failed: ${e.message}`));
            await session.close();
            await saveServerArtifacts(session, suffix).catch((e) => console.error(`saving artifacts failed: ${e.message}`));
        }
    }
}

/** Steps shared by both tests: list, subscribe, offer relayed to the library, answer relayed back. */
async function negotiate(session) {
    const { streamer } = session;

    const list = await pageEvent(session, 'streamerListMessage', (d) => (d.ids || []).includes(STREAMER_ID));
    assert.ok(list.data.ids.includes(STREAMER_ID), 'streamerList contains DefaultStreamer');

    const connected = await waitFor('playerConnected at the streamer', () => streamer.messages('playerConnected')[0]);
    assert.equal(connected.playerId, 'Player0', 'first player id');
    assert.equal(connected.dataChannel, true, 'playerConnected.dataChannel');
    assert.equal(connected.sfu, false, 'playerConnected.sfu');

    // The library handled the relayed offer: it set it as remote description and answered it.
    const offerEvent = await pageEvent(session, 'webRtcSdpOffer');
    assert.match(offerEvent.data.sdp || '', /^v=0/, 'library saw an SDP offer');
    await pageEvent(session, 'webRtcSdp');
    const { signalling } = await pageState(session.page);
    const relayedOffer = signalling.received.find((m) => m.type === 'offer');
    assert.ok(relayedOffer, 'page received an offer message');
    assert.equal(relayedOffer.sdp, streamer.offered.get('Player0').sdp, 'offer sdp relayed unchanged');
    assert.equal(relayedOffer.playerId, 'Player0', 'playerId kept on the streamer -> player offer (as Wilbur does)');

    const answer = await waitFor('an answer at the streamer', () => streamer.messages('answer')[0]);
    assert.equal(answer.playerId, 'Player0', 'server stamps playerId on the answer');
    assert.equal(typeof answer.sdp, 'string');
    assert.ok(answer.sdp.startsWith('v=0'), `answer sdp starts with v=0: ${answer.sdp.slice(0, 40)}`);
    const answerEvent = await pageEvent(session, 'webRtcSdpAnswer');
    assert.equal(answerEvent.data.type, 'answer');
    return { connected, answer };
}

function assertNoSignallingErrors(session) {
    assert.deepEqual(session.pageErrors, [], 'no uncaught errors in the pages');
    const suspicious = session.consoleLines.filter((line) =>
        /\[page (error|pageerror)\]/.test(line) &&
        /signall|protocol|message|websocket|parse|offer|answer|candidate|subscribe/i.test(line));
    assert.deepEqual(suspicious, [], 'no console errors about the signalling protocol');
    assert.deepEqual(session.streamer.errors, [], 'scripted streamer saw no errors');
}

// ---------------------------------------------------------------------------------------------
// Tests

test('Epic frontend library lists, subscribes and answers the relayed offer', { timeout: TEST_TIMEOUT_MS }, async () => {
    // KeepaliveDelay: the library pings every 500 ms and closes the socket if a pong is missing.
    const pageParams = { StreamerId: STREAMER_ID, MaxReconnectAttempts: '0', KeepaliveDelay: '500' };
    await withSession('negotiation', '', pageParams, async (session) => {
        const { streamer } = session;
        await negotiate(session);

        // Player ICE candidates, if Chromium emits any on loopback, reach the streamer stamped.
        // Give gathering a bounded moment; none at all is acceptable.
        let playerCandidates = [];
        try {
            playerCandidates = await waitFor('an iceCandidate from the player',
                () => streamer.messages('iceCandidate').length > 0 && streamer.messages('iceCandidate'),
                { timeoutMs: 3000 });
        } catch {
            console.error('note: the player sent no ICE candidate (acceptable on loopback)');
        }
        for (const ice of playerCandidates) {
            assert.equal(ice.playerId, 'Player0', 'server stamps playerId on iceCandidate');
            assert.equal(typeof ice.candidate?.candidate, 'string', 'iceCandidate.candidate.candidate');
        }

        // Bonus, not asserted: with both candidates relayed the peer connection may come up.
        const connectedEvent = await pageEvent(session, 'webRtcConnected', undefined, 5000).catch(() => null);
        const channelOpen = connectedEvent
            ? await pageEvent(session, 'dataChannelOpen', undefined, 5000).catch(() => null)
            : null;
        console.error(`note: webRtcConnected=${Boolean(connectedEvent)} dataChannelOpen=${Boolean(channelOpen)}; ` +
            `player ICE candidates relayed: ${playerCandidates.length}; ` +
            `streamer received: ${streamer.received.map((m) => m.type).join(',')}`);

        const pong = await waitFor('a pong for the library keepalive ping', async () => {
            const { signalling } = await pageState(session.page);
            return signalling.received.find((m) => m.type === 'pong');
        });
        assert.equal(typeof pong.time, 'number', 'pong.time echoes the ping time');

        const { signalling, events } = await pageState(session.page);
        assert.equal(signalling.closes.length, 0, 'signalling websocket stays open');
        assert.deepEqual(signalling.unhandled, [], 'server sent the library no message it does not handle');
        const subscribe = signalling.sent.find((m) => m.type === 'subscribe');
        assert.equal(subscribe?.streamerId, STREAMER_ID, 'library subscribed to the requested streamer');
        assert.ok(!events.some((e) => e.type === 'subscribeFailed'), 'no subscribeFailed');
        const config = signalling.received.find((m) => m.type === 'config');
        assert.ok(config, 'page received config');
        assertNoSignallingErrors(session);
    });
});

test('disconnectPlayer from the streamer closes the library websocket with 1011', { timeout: TEST_TIMEOUT_MS }, async () => {
    // No StreamerId here: the library auto-selects the only streamer in the list.
    await withSession('disconnectPlayer', '-disconnect', { MaxReconnectAttempts: '0' }, async (session) => {
        const { streamer } = session;
        await negotiate(session);

        streamer.send({ type: 'disconnectPlayer', playerId: 'Player0', reason: 'bye' });

        const closed = await pageEvent(session, 'signallingClosed');
        assert.equal(closed.data.code, 1011, 'close code');
        assert.equal(closed.data.reason, 'bye', 'close reason');
        const disconnected = await pageEvent(session, 'webRtcDisconnected');
        assert.equal(disconnected.data.eventString, 'bye', 'library reports the reason');

        const gone = await waitFor('playerDisconnected at the streamer', () => streamer.messages('playerDisconnected')[0]);
        assert.equal(gone.playerId, 'Player0');
        assert.equal(streamer.closed, null, 'streamer websocket stays open');
        assertNoSignallingErrors(session);
    });
});
