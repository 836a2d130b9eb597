// Test page for web/e2e/stream.test.mjs and web/bench/stream.mjs.
//
// Runs Epic's Pixel Streaming frontend library (no UI library) against the signalling server given
// by `?ss=ws://host:port`, plays the stream of `pxs streamer`, and records what a test or a
// benchmark needs to read back:
//   window.__stream.events      library events, in order ({ type, t, data }); t is performance.now()
//   window.__stream.stats       inbound video RTP stats sampled every `statsMs` (framesDecoded, ...)
//   window.__stream.strip       the timestamp strip read from every presented frame
//                               (requestVideoFrameCallback → canvas → 96 cells → frame, wall ms)
//   window.__stream.responses   `Response` messages from the streamer (addResponseEventListener)
//   window.__stream.signalling  signalling messages in/out with their times
// Times are performance.now() values, except the strip's wallMs and dateNow (epoch ms).
// Optional URL parameters: StreamerId, MaxReconnectAttempts, StreamerAutoJoinInterval,
// KeepaliveDelay, statsMs (default 100; 0 = only on demand, by window.__sampleStats()),
// strip (canvas, the default: drawImage + getImageData; videoframe: copy the luma plane of the
// strip out of a VideoFrame; 0: do not read), stage=WxH (size of the video's box in CSS pixels,
// default 960x540).
import { Config, PixelStreaming } from '@epicgames-ps/lib-pixelstreamingfrontend-ue5.7';

type Json = Record<string, unknown>;

interface RecordedEvent {
    type: string;
    t: number;
    data?: Json;
}

interface StatsSample {
    t: number;
    framesDecoded: number;
    framesReceived?: number;
    framesDropped?: number;
    keyFramesDecoded?: number;
    frameWidth?: number;
    frameHeight?: number;
    framesPerSecond?: number;
    totalDecodeTime?: number;
    jitterBufferDelay?: number;
    jitterBufferEmittedCount?: number;
    bytesReceived?: number;
    packetsReceived?: number;
    packetsLost?: number;
    nackCount?: number;
    pliCount?: number;
    firCount?: number;
    freezeCount?: number;
}

interface StripReading {
    /** Frame number from the strip. */
    frame: number;
    /** Wall-clock ms (Unix epoch) at which the streamer drew the frame, from the strip. */
    wallMs: number;
    /** requestVideoFrameCallback's `now` (performance.now() clock). */
    now: number;
    /** Date.now() inside the callback. */
    dateNow: number;
    /**
     * `now` on the wall clock minus wallMs. `now` is turned into wall time with the wall clock read
     * in the callback, not with performance.timeOrigin: the monotonic clock behind performance.now()
     * drifts from the wall clock the streamer stamps with (NTP slewing on a busy VM moved it by
     * over 100 ms in CI), and only the wall clock is shared with the streamer.
     */
    latencyMs: number;
    /** Metadata of the presented frame (performance.now() clock), when the browser gives them. */
    receiveTime?: number;
    expectedDisplayTime?: number;
    presentedFrames: number;
    width: number;
    height: number;
}

interface StripLog {
    enabled: boolean;
    /** How the strip is read: 'canvas' (drawImage + getImageData), 'videoframe' (the luma plane), 'off'. */
    method: string;
    callbacks: number;
    /** Callbacks whose strip did not check out (CRC mismatch), and the last bits seen then. */
    failures: number;
    lastFailure?: string;
    /** Callbacks without a current frame to read yet. */
    skipped: number;
    /** Callbacks whose frame had already been replaced by the next one when they ran. */
    mismatched: number;
    /** Whether each read frame is checked to be the callback's own (needs WebCodecs' VideoFrame). */
    verified: boolean;
    /** The first presented frame (any frame, read or not): its `now`. */
    firstFrameAt?: number;
    readings: StripReading[];
    /** Readings dropped from the front of `readings` to keep it bounded. */
    dropped: number;
}

interface StreamLog {
    timeOrigin: number;
    pageStart: number;
    events: RecordedEvent[];
    stats: StatsSample[];
    statsDropped: number;
    firstDecodedAt?: number;
    strip: StripLog;
    responses: { t: number; text: string }[];
    signalling: {
        openAt?: number;
        closes: { code: number; reason: string; t: number }[];
        received: { t: number; type: string }[];
        sent: { t: number; type: string }[];
        subscribeAt?: number;
    };
    peerConnections: number;
    errors: string[];
}

declare global {
    interface Window {
        __stream: StreamLog;
        __pixelStreaming?: PixelStreaming;
        __pageError?: string;
        /** Takes one stats sample now (also with statsMs=0) and returns it. */
        __sampleStats: () => Promise<StatsSample | undefined>;
    }
}

const MAX_READINGS = 5000;
const MAX_STATS = 5000;

const log: StreamLog = {
    timeOrigin: performance.timeOrigin,
    pageStart: performance.now(),
    events: [],
    stats: [],
    statsDropped: 0,
    strip: { enabled: true, method: 'canvas', callbacks: 0, failures: 0, skipped: 0, mismatched: 0, verified: false, readings: [], dropped: 0 },
    responses: [],
    signalling: { closes: [], received: [], sent: [] },
    peerConnections: 0,
    errors: []
};
window.__stream = log;

// ---------------------------------------------------------------------------------------------
// Status line (visible in screenshots)

const statusEl = document.getElementById('status') as HTMLElement;
const statusLines: string[] = [];
let statusSummary = '';
function showStatus(line?: string): void {
    if (line) {
        statusLines.push(line);
        if (statusLines.length > 6) statusLines.shift();
    }
    statusEl.textContent = [statusSummary, ...statusLines].filter(Boolean).join('\n');
}

function record(type: string, data?: Json): void {
    log.events.push({ type, t: performance.now(), data });
    showStatus(`${(performance.now() / 1000).toFixed(2)}s ${type}${data ? ' ' + JSON.stringify(data).slice(0, 120) : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Peer connections: the library creates them with `new RTCPeerConnection`; keep a reference to
// each so that getStats() can be sampled without reaching into the library's internals.

const peerConnections: RTCPeerConnection[] = [];
const NativePeerConnection = window.RTCPeerConnection;
class TrackedPeerConnection extends NativePeerConnection {
    constructor(configuration?: RTCConfiguration) {
        super(configuration);
        peerConnections.push(this);
        log.peerConnections = peerConnections.length;
    }
}
window.RTCPeerConnection = TrackedPeerConnection as typeof RTCPeerConnection;

async function sampleStats(): Promise<void> {
    const pc = peerConnections[peerConnections.length - 1];
    if (!pc || pc.connectionState === 'closed') return;
    const report = await pc.getStats();
    const t = performance.now();
    report.forEach((s: any) => {
        if (s.type !== 'inbound-rtp' || (s.kind ?? s.mediaType) !== 'video') return;
        const sample: StatsSample = {
            t,
            framesDecoded: s.framesDecoded ?? 0,
            framesReceived: s.framesReceived,
            framesDropped: s.framesDropped,
            keyFramesDecoded: s.keyFramesDecoded,
            frameWidth: s.frameWidth,
            frameHeight: s.frameHeight,
            framesPerSecond: s.framesPerSecond,
            totalDecodeTime: s.totalDecodeTime,
            jitterBufferDelay: s.jitterBufferDelay,
            jitterBufferEmittedCount: s.jitterBufferEmittedCount,
            bytesReceived: s.bytesReceived,
            packetsReceived: s.packetsReceived,
            packetsLost: s.packetsLost,
            nackCount: s.nackCount,
            pliCount: s.pliCount,
            firCount: s.firCount,
            freezeCount: s.freezeCount
        };
        if (log.firstDecodedAt === undefined && sample.framesDecoded > 0) log.firstDecodedAt = t;
        log.stats.push(sample);
        if (log.stats.length > MAX_STATS) {
            log.stats.shift();
            log.statsDropped += 1;
        }
    });
}

window.__sampleStats = async () => {
    const before = log.stats.length + log.statsDropped;
    await sampleStats();
    return log.stats.length + log.statsDropped > before ? log.stats[log.stats.length - 1] : undefined;
};

function startStatsSampling(intervalMs: number): void {
    let busy = false;
    window.setInterval(() => {
        if (busy) return;
        busy = true;
        sampleStats()
            .catch((e) => log.errors.push(`getStats: ${e instanceof Error ? e.message : String(e)}`))
            .finally(() => {
                busy = false;
            });
    }, intervalMs);
}

// ---------------------------------------------------------------------------------------------
// The timestamp strip (see docs/streamer.md, "Reading the timestamp strip"): the top 1/12 of the
// picture is 2 rows × 48 cells; white = 1, black = 0; 32-bit frame number, 48-bit wall-clock ms,
// CRC-16/CCITT-FALSE of those 10 bytes; all big-endian, most significant bit first.

const STRIP_COLS = 48;
const STRIP_ROWS = 2;
const STRIP_ROW_DIV = 24;
const CELL_W = 10; // canvas pixels per cell
const CELL_H = 20;

function crc16(bytes: Uint8Array, length: number): number {
    let crc = 0xffff;
    for (let i = 0; i < length; i++) {
        crc ^= bytes[i] << 8;
        for (let b = 0; b < 8; b++) {
            crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
        }
    }
    return crc;
}

/**
 * Decodes the 96 cells of a picture `width` × `height` (the full picture's size; only its top
 * 1/12 is read) through `luma(x, y)`, as pxs_streamer::pattern::read_strip does: the mean of the
 * central half of each cell against 128, then the CRC.
 */
function decodeStrip(
    luma: (x: number, y: number) => number,
    width: number,
    height: number
): { frame: number; wallMs: number } | { bits: string } {
    const bytes = new Uint8Array(12);
    let bits = '';
    for (let i = 0; i < STRIP_COLS * STRIP_ROWS; i++) {
        const row = Math.floor(i / STRIP_COLS);
        const col = i % STRIP_COLS;
        const x0 = Math.floor((col * width) / STRIP_COLS);
        const x1 = Math.floor(((col + 1) * width) / STRIP_COLS);
        const y0 = Math.floor((row * height) / STRIP_ROW_DIV);
        const y1 = Math.floor(((row + 1) * height) / STRIP_ROW_DIV);
        // The central half of the cell, away from edges blurred by compression and scaling.
        const qx = Math.floor((x1 - x0) / 4);
        const qy = Math.floor((y1 - y0) / 4);
        let sum = 0;
        let n = 0;
        for (let y = y0 + qy; y < Math.max(y1 - qy, y0 + qy + 1); y++) {
            for (let x = x0 + qx; x < Math.max(x1 - qx, x0 + qx + 1); x++) {
                sum += luma(x, y);
                n++;
            }
        }
        const one = sum > 128 * n;
        bits += one ? '1' : '0';
        if (one) bytes[i >> 3] |= 0x80 >> (i & 7);
    }
    if (crc16(bytes, 10) !== ((bytes[10] << 8) | bytes[11])) return { bits };
    const frame = ((bytes[0] << 24) >>> 0) + (bytes[1] << 16) + (bytes[2] << 8) + bytes[3];
    let wallMs = 0;
    for (let i = 4; i < 10; i++) wallMs = wallMs * 256 + bytes[i];
    return { frame, wallMs };
}

type StripResult = { frame: number; wallMs: number } | { bits: string };

/**
 * Reads the strip by drawing the top of the frame onto a small canvas (scaled to CELL_W × CELL_H
 * pixels per cell) and reading its pixels back.
 */
function canvasReader(): (source: CanvasImageSource, width: number, height: number) => StripResult {
    const canvas = document.createElement('canvas');
    canvas.width = STRIP_COLS * CELL_W;
    canvas.height = STRIP_ROWS * CELL_H;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    if (!ctx) throw new Error('no 2d canvas context');
    // The canvas holds 2 of the picture's 24 strip-row heights: as a picture, it is 12× as tall.
    const fullHeight = canvas.height * (STRIP_ROW_DIV / STRIP_ROWS);
    return (source, width, height) => {
        ctx.drawImage(source, 0, 0, width, (height * STRIP_ROWS) / STRIP_ROW_DIV, 0, 0, canvas.width, canvas.height);
        const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        const w = canvas.width;
        return decodeStrip(
            (x, y) => {
                const p = (y * w + x) * 4;
                return 0.299 * rgba[p] + 0.587 * rgba[p + 1] + 0.114 * rgba[p + 2];
            },
            w,
            fullHeight
        );
    };
}

/**
 * Reads the strip from the frame's own luma plane: copyTo() of the strip's rows only (no colour
 * conversion, no scaling). Only for Y-first planar formats.
 */
function lumaReader(): (frame: VideoFrame) => Promise<StripResult> {
    let buffer = new Uint8Array(0);
    return async (frame) => {
        const format = frame.format;
        if (format !== 'I420' && format !== 'NV12' && format !== 'I420A') {
            throw new Error(`VideoFrame format ${format} has no luma plane to read`);
        }
        // The visible picture (H.264 codes 1080 rows as 1088 and crops), top rows only, an even
        // number of them (4:2:0).
        const visible = frame.visibleRect;
        if (!visible) throw new Error('VideoFrame without a visible rectangle');
        const { width, height } = visible;
        const rows = Math.min(height, 2 * Math.ceil(Math.ceil((height * STRIP_ROWS) / STRIP_ROW_DIV) / 2));
        const rect = { x: visible.x, y: visible.y, width, height: rows };
        const size = frame.allocationSize({ rect });
        if (buffer.length < size) buffer = new Uint8Array(size);
        const layout = await frame.copyTo(buffer, { rect });
        const { offset, stride } = layout[0];
        const data = buffer;
        return decodeStrip((x, y) => data[offset + y * stride + x], width, height);
    };
}

/**
 * Reads the strip of every presented frame (requestVideoFrameCallback). The element's current
 * frame can already be the next one when the callback runs, so the frame is taken as a
 * VideoFrame and used only if its timestamp is the callback's `mediaTime`; otherwise it counts as
 * `mismatched`. Without WebCodecs, the <video> itself is drawn (unverified).
 */
function startStripReader(video: HTMLVideoElement, mode: string): void {
    if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) {
        log.errors.push('requestVideoFrameCallback is not supported');
        return;
    }
    const strip = log.strip;
    strip.enabled = mode !== '0';
    strip.method = mode === 'videoframe' ? 'videoframe' : mode === '0' ? 'off' : 'canvas';
    const webCodecs = typeof VideoFrame !== 'undefined';
    strip.verified = webCodecs;
    const readCanvas = canvasReader();
    const readLuma = lumaReader();
    const store = (now: number, dateNow: number, perfNow: number, meta: VideoFrameCallbackMetadata, result: StripResult): void => {
        if ('frame' in result) {
            strip.readings.push({
                frame: result.frame,
                wallMs: result.wallMs,
                now,
                dateNow,
                latencyMs: dateNow - (perfNow - now) - result.wallMs,
                receiveTime: meta.receiveTime,
                expectedDisplayTime: meta.expectedDisplayTime,
                presentedFrames: meta.presentedFrames,
                width: meta.width,
                height: meta.height
            });
            if (strip.readings.length > MAX_READINGS) {
                strip.readings.shift();
                strip.dropped += 1;
            }
        } else {
            strip.failures += 1;
            strip.lastFailure = result.bits;
        }
    };
    const onFrame = (now: DOMHighResTimeStamp, meta: VideoFrameCallbackMetadata): void => {
        const dateNow = Date.now();
        const perfNow = performance.now();
        strip.callbacks += 1;
        if (strip.firstFrameAt === undefined) strip.firstFrameAt = now;
        video.requestVideoFrameCallback(onFrame);
        if (!strip.enabled || meta.width <= 0 || meta.height <= 0) return;
        if (!webCodecs) {
            store(now, dateNow, perfNow, meta, readCanvas(video, meta.width, meta.height));
            return;
        }
        let frame: VideoFrame;
        try {
            frame = new VideoFrame(video);
        } catch {
            // No current frame yet ("Invalid source state").
            strip.skipped += 1;
            return;
        }
        if (Math.abs(frame.timestamp - meta.mediaTime * 1e6) > 500) {
            strip.mismatched += 1;
            frame.close();
            return;
        }
        if (strip.method === 'videoframe') {
            readLuma(frame)
                .then(
                    (result) => store(now, dateNow, perfNow, meta, result),
                    (e) => {
                        // A frame that is not planar YUV (a GPU texture, say): use the canvas from now on.
                        log.errors.push(`strip luma reader: ${e instanceof Error ? e.message : String(e)}; using the canvas`);
                        strip.method = 'canvas';
                    }
                )
                .finally(() => frame.close());
        } else {
            try {
                store(now, dateNow, perfNow, meta, readCanvas(frame, frame.displayWidth, frame.displayHeight));
            } finally {
                frame.close();
            }
        }
    };
    video.requestVideoFrameCallback(onFrame);
}

// ---------------------------------------------------------------------------------------------
// The library

const libraryEvents: Record<string, (data: any) => Json | undefined> = {
    webRtcAutoConnect: () => undefined,
    streamerListMessage: (d) => ({
        ids: [...(d?.messageStreamerList?.ids ?? [])],
        autoSelectedStreamerId: d?.autoSelectedStreamerId ?? null
    }),
    subscribeFailed: (d) => ({ message: d?.message }),
    playerCount: (d) => ({ count: d?.count }),
    webRtcSdpOffer: () => undefined,
    webRtcSdpAnswer: () => undefined,
    webRtcConnecting: () => undefined,
    webRtcConnected: () => undefined,
    webRtcFailed: () => undefined,
    webRtcDisconnected: (d) => ({ eventString: d?.eventString }),
    dataChannelOpen: (d) => ({ label: d?.label }),
    dataChannelClose: (d) => ({ label: d?.label }),
    dataChannelError: (d) => ({ label: d?.label }),
    initialSettings: () => undefined,
    videoInitialized: () => undefined,
    playStream: () => undefined,
    playStreamError: (d) => ({ message: String(d?.message ?? '') }),
    playStreamRejected: (d) => ({ reason: String(d?.reason ?? '') }),
    streamLoading: () => undefined,
    videoEncoderAvgQP: (d) => ({ avgQP: d?.avgQP })
};

function numberParam(params: URLSearchParams, name: string, fallback: number): number {
    const value = params.get(name);
    if (value === null || value === '') return fallback;
    const n = Number(value);
    return Number.isFinite(n) ? n : fallback;
}

function main(): void {
    const params = new URLSearchParams(window.location.search);
    // Without ?ss= the page talks to the server that served it (scripts/demo).
    const ss = params.get('ss') || `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.host}`;

    const stage = /^(\d+)x(\d+)$/.exec(params.get('stage') || '');
    if (stage) {
        const stageEl = document.getElementById('stage') as HTMLElement;
        stageEl.style.width = `${stage[1]}px`;
        stageEl.style.height = `${stage[2]}px`;
        statusEl.style.top = `${stage[2]}px`;
    }

    const initialSettings: Record<string, string | number | boolean> = {
        ss,
        AutoConnect: true,
        AutoPlayVideo: true,
        StartVideoMuted: true,
        HoveringMouse: true,
        WaitForStreamer: true,
        KeyboardInput: true,
        MouseInput: true,
        MatchViewportRes: false,
        TimeoutIfIdle: false
    };
    const streamerId = params.get('StreamerId');
    if (streamerId) initialSettings.StreamerId = streamerId;
    for (const numeric of ['MaxReconnectAttempts', 'StreamerAutoJoinInterval', 'KeepaliveDelay']) {
        const value = params.get(numeric);
        if (value !== null && value !== '') initialSettings[numeric] = Number(value);
    }

    const config = new Config({ initialSettings, useUrlParams: false });
    const parent = document.getElementById('player') as HTMLElement;
    const ps = new PixelStreaming(config, { videoElementParent: parent });
    window.__pixelStreaming = ps;

    for (const [type, summarise] of Object.entries(libraryEvents)) {
        ps.addEventListener(type as any, (event: any) => record(type, summarise(event?.data)));
    }
    ps.addResponseEventListener('pxs-e2e', (text: string) => {
        log.responses.push({ t: performance.now(), text });
        record('response', { text });
    });

    const protocol = ps.signallingProtocol;
    protocol.transport.addListener('open', () => {
        if (log.signalling.openAt === undefined) log.signalling.openAt = performance.now();
        record('signallingOpen');
    });
    protocol.transport.addListener('message', (msg: Json) => {
        log.signalling.received.push({ t: performance.now(), type: String(msg?.type) });
    });
    protocol.transport.addListener('out', (msg: Json) => {
        const t = performance.now();
        log.signalling.sent.push({ t, type: String(msg?.type) });
        if (msg?.type === 'subscribe' && log.signalling.subscribeAt === undefined) log.signalling.subscribeAt = t;
    });
    protocol.transport.addListener('close', (event: CloseEvent) => {
        const close = { code: event?.code, reason: event?.reason, t: performance.now() };
        log.signalling.closes.push(close);
        record('signallingClosed', close);
    });

    const statsMs = numberParam(params, 'statsMs', 100);
    if (statsMs > 0) startStatsSampling(statsMs);

    // The library creates its <video> in the constructor; read frames from it from the first one.
    const video = parent.querySelector('video');
    if (video) {
        startStripReader(video, params.get('strip') || 'canvas');
    } else {
        log.errors.push('the library created no <video> element');
    }

    // A summary line in the page, for screenshots.
    window.setInterval(() => {
        const last = log.stats[log.stats.length - 1];
        const reading = log.strip.readings[log.strip.readings.length - 1];
        statusSummary =
            `decoded ${last ? last.framesDecoded : 0} frames` +
            (last?.frameWidth ? ` ${last.frameWidth}x${last.frameHeight}` : '') +
            (reading
                ? ` | strip: frame ${reading.frame}, latency ${reading.latencyMs.toFixed(0)} ms` +
                  ` | strip reads ${log.strip.readings.length + log.strip.dropped}, misreads ${log.strip.failures},` +
                  ` mismatched ${log.strip.mismatched}`
                : '');
        showStatus();
    }, 500);

    record('pageReady', { ss, streamerId });
}

try {
    main();
} catch (e) {
    window.__pageError = e instanceof Error ? `${e.message}\n${e.stack}` : String(e);
    record('pageError', { message: window.__pageError });
    throw e;
}
