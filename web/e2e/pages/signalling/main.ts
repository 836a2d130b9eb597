// Test page for web/e2e/signalling.test.mjs.
//
// Runs Epic's Pixel Streaming frontend library (no UI library) against the signalling server given
// by `?ss=ws://host:port`, and records what the library reports so that the test can read it:
//   window.__events      library events, in order ({ type, t, data })
//   window.__signalling  every signalling message in/out, plus websocket open/close events
// Optional URL parameters: StreamerId, MaxReconnectAttempts, KeepaliveDelay.
import { Config, PixelStreaming } from '@epicgames-ps/lib-pixelstreamingfrontend-ue5.7';

type Json = Record<string, unknown>;
interface RecordedEvent {
    type: string;
    t: number;
    data?: Json;
}
interface SignallingLog {
    opens: number;
    closes: { code: number; reason: string; wasClean: boolean; t: number }[];
    received: Json[];
    sent: Json[];
    unhandled: Json[];
}

declare global {
    interface Window {
        __events: RecordedEvent[];
        __signalling: SignallingLog;
        __pixelStreaming?: PixelStreaming;
        __pageError?: string;
    }
}

const t0 = performance.now();
const events: RecordedEvent[] = [];
const signalling: SignallingLog = { opens: 0, closes: [], received: [], sent: [], unhandled: [] };
window.__events = events;
window.__signalling = signalling;

const statusEl = document.getElementById('status') as HTMLElement;
function showStatus(line: string): void {
    const lines = (statusEl.textContent || '').split('\n').filter((l) => l && l !== 'loading');
    lines.push(line);
    statusEl.textContent = lines.slice(-4).join('\n');
}

function record(type: string, data?: Json): void {
    events.push({ type, t: Math.round(performance.now() - t0), data });
    const shown = data && typeof data.sdp === 'string' ? { ...data, sdp: `${data.sdp.length} bytes` } : data;
    showStatus(`${type}${shown ? ' ' + JSON.stringify(shown).slice(0, 160) : ''}`);
}

function sdpOf(value: unknown): { type?: string; sdp?: string } {
    const desc = value as RTCSessionDescriptionInit | undefined;
    return { type: desc?.type, sdp: desc?.sdp };
}

// Library events and how to keep the serialisable part of their payload.
const libraryEvents: Record<string, (data: any) => Json | undefined> = {
    webRtcAutoConnect: () => undefined,
    streamConnect: () => undefined,
    streamReconnect: () => undefined,
    streamDisconnect: () => undefined,
    streamerListMessage: (d) => ({
        ids: [...(d?.messageStreamerList?.ids ?? [])],
        autoSelectedStreamerId: d?.autoSelectedStreamerId ?? null,
        wantedStreamerId: d?.wantedStreamerId ?? null
    }),
    subscribeFailed: (d) => ({ message: d?.message }),
    streamerIDChangedMessage: (d) => ({ newID: d?.newID }),
    playerCount: (d) => ({ count: d?.count }),
    // Emitted once the streamer's offer has been set as remote description.
    webRtcSdpOffer: (d) => sdpOf(d?.sdp),
    // Emitted right after the library starts handling an offer (or answer).
    webRtcSdp: () => undefined,
    // Emitted once the library's answer has been created, set locally and sent.
    webRtcSdpAnswer: (d) => sdpOf(d?.sdp),
    webRtcConnecting: () => undefined,
    webRtcConnected: () => undefined,
    webRtcFailed: () => undefined,
    webRtcDisconnected: (d) => ({
        eventString: d?.eventString,
        allowClickToReconnect: d?.allowClickToReconnect
    }),
    dataChannelOpen: (d) => ({ label: d?.label }),
    dataChannelClose: (d) => ({ label: d?.label }),
    dataChannelError: (d) => ({ label: d?.label }),
    videoInitialized: () => undefined,
    playStream: () => undefined,
    playStreamError: (d) => ({ message: String(d?.message ?? '') }),
    playStreamRejected: (d) => ({ reason: String(d?.reason ?? '') })
};

function main(): void {
    const params = new URLSearchParams(window.location.search);
    const ss = params.get('ss');
    if (!ss) {
        record('pageError', { message: 'missing ?ss=ws://host:port' });
        return;
    }
    const initialSettings: Record<string, string | number | boolean> = {
        ss,
        AutoConnect: true,
        AutoPlayVideo: true,
        StartVideoMuted: true,
        HoveringMouse: true,
        WaitForStreamer: true
    };
    const streamerId = params.get('StreamerId');
    if (streamerId) initialSettings.StreamerId = streamerId;
    for (const numeric of ['MaxReconnectAttempts', 'KeepaliveDelay']) {
        const value = params.get(numeric);
        if (value !== null && value !== '') initialSettings[numeric] = Number(value);
    }

    const config = new Config({ initialSettings, useUrlParams: false });
    const parent = document.getElementById('player') as HTMLElement;
    // AutoConnect opens the websocket from the constructor; everything we record below arrives
    // asynchronously (the socket is not open yet), so listeners attached afterwards see it all.
    const ps = new PixelStreaming(config, { videoElementParent: parent });
    window.__pixelStreaming = ps;

    for (const [type, summarise] of Object.entries(libraryEvents)) {
        ps.addEventListener(type as any, (event: any) => record(type, summarise(event?.data)));
    }

    const protocol = ps.signallingProtocol;
    protocol.transport.addListener('open', () => {
        signalling.opens += 1;
    });
    protocol.transport.addListener('message', (msg: Json) => {
        signalling.received.push(msg);
    });
    protocol.transport.addListener('out', (msg: Json) => {
        signalling.sent.push(msg);
    });
    protocol.transport.addListener('close', (event: CloseEvent) => {
        const close = {
            code: event?.code,
            reason: event?.reason,
            wasClean: event?.wasClean,
            t: Math.round(performance.now() - t0)
        };
        signalling.closes.push(close);
        record('signallingClosed', close);
    });
    protocol.addListener('unhandled', (msg: Json) => {
        signalling.unhandled.push(msg);
    });
    record('pageReady', { ss, streamerId });
}

try {
    main();
} catch (e) {
    window.__pageError = e instanceof Error ? `${e.message}\n${e.stack}` : String(e);
    record('pageError', { message: window.__pageError });
    throw e;
}
