// The player page (`/play/<session id>`): follows the session through server-sent events
// (`GET /api/v1/sessions/<id>/events`, `event: session`, data: a Session), says where it stands in
// plain words, and plays the stream with Epic's frontend library once the session is ready.
//
// - The library is started once, on the first `ready` event with a `join_url`. A later event may
//   carry a fresher join_url (a new player token): it becomes the library's signalling URL, which
//   the library reads again whenever it reconnects.
// - While the user moves, clicks or types over the video, `{"type":"activity"}` goes to the
//   signalling WebSocket at most once every ACTIVITY_INTERVAL_MS (the session's idle policy).
// - Who may see the session: the stored access token, or a session key: the owner key of a
//   session made without a token (`#owner=<key>`, from the catalog), or a share link's key
//   (`#key=<key>`). The page takes the key from the address (a fragment: never sent to a server),
//   keeps it in localStorage (`pxs_key:<session id>`) and removes it from the address bar. A
//   guest is asked for a name first (kept as `pxs_name`).
// - Shared sessions (room.ts): the side panel with the people, control, chat and invitations.
//   The page sends input only while its user has control (the server enforces it anyway).
// - Networks: the STUN and TURN servers come from the signalling's `config` (per-connection TURN
//   credentials included). `?relay=1` in the address, or localStorage `pxs_relay` = `1`, forces
//   the TURN relay (the library's ForceTURN), to diagnose a network. When no path to the stream
//   is found the page says so (CONNECT_PATIENCE_MS) and keeps trying.
// - For tests: `window.pxsPlayer` (state, session, framesDecoded(), selectedPair(),
//   activitySent, room).
// - The library logs warnings and errors only; `?debug=1` in the address, or localStorage
//   `pxs_debug` = `1`, logs everything (without stacks unless `?debug=1`).
import { Config, Flags, Logger, LogLevel, PixelStreaming, TextParameters } from '@epicgames-ps/lib-pixelstreamingfrontend-ue5.6';
import { ApiError, api, errorMessage, getName, getSessionKey, getToken, setName, setSessionKey, type Session, type Title } from './api';
import { Room, type SessionUser } from './room';
import { endReasonWords, sessionWords } from './words';

const ACTIVITY_INTERVAL_MS = 10_000;
/** From the offer and answer to a working connection takes a second or two, even through a
 *  relay; after this long without one, the page says the stream cannot reach this browser (and
 *  keeps trying: if it connects later, the stream shows). ICE itself may never say "failed"
 *  when no candidate pair could even be formed (a relay that refused this browser). */
const CONNECT_PATIENCE_MS = 15_000;
/** What the page says when no network path to the stream was found. */
const UNREACHABLE = {
    headline: 'The stream could not reach you: your network may block it.',
    detail: 'A firewall or VPN may be blocking the connection. Try again, try another network, or tell the operator.'
};
const EVENTS_RETRY_MIN_MS = 1_000;
const EVENTS_RETRY_MAX_MS = 30_000;

declare global {
    interface Window {
        pxsPlayer: {
            readonly state: string;
            readonly session: Session | null;
            readonly activitySent: number;
            readonly room: Room | null;
            framesDecoded(): Promise<number>;
            remoteAddress(): Promise<string | null>;
            selectedPair(): Promise<SelectedPair | null>;
        };
    }
}

const statusEl = document.getElementById('status') as HTMLElement;
const titleNameEl = document.getElementById('title-name') as HTMLElement;
const endButton = document.getElementById('end') as HTMLButtonElement;
const endErrorEl = document.getElementById('end-error') as HTMLElement;
const stageEl = document.getElementById('stage') as HTMLElement;
const playerEl = document.getElementById('player') as HTMLElement;
const overlayEl = document.getElementById('overlay') as HTMLElement;
const spinnerEl = document.getElementById('spinner') as HTMLElement;
const headlineEl = document.getElementById('headline') as HTMLElement;
const detailEl = document.getElementById('detail') as HTMLElement;
const buttonsEl = document.getElementById('buttons') as HTMLElement;

// ---------------------------------------------------------------------------------------------
// Peer connections: the library creates them with `new RTCPeerConnection`; keep a reference to
// each (installed before the library starts) so getStats() needs none of its internals.

const peerConnections: RTCPeerConnection[] = [];
try {
    const Native = window.RTCPeerConnection;
    if (typeof Native === 'function') {
        class TrackedPeerConnection extends Native {
            constructor(configuration?: RTCConfiguration) {
                super(configuration);
                peerConnections.push(this);
                if (peerConnections.length > 8) peerConnections.shift();
            }
        }
        window.RTCPeerConnection = TrackedPeerConnection as typeof RTCPeerConnection;
    }
} catch {
    // Without the wrapper, framesDecoded() reads 0; the stream itself still works.
}

/** The address the newest open peer connection receives from (the selected candidate pair's
 *  remote candidate), or null before one is selected. */
async function remoteAddress(): Promise<string | null> {
    const pc = [...peerConnections].reverse().find((p) => p.connectionState !== 'closed');
    if (!pc) return null;
    const report = await pc.getStats();
    let pairId: string | null = null;
    report.forEach((s: any) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    const pair: any = pairId ? report.get(pairId) : null;
    const remote: any = pair ? report.get(pair.remoteCandidateId) : null;
    return remote ? String(remote.address ?? remote.ip ?? '') || null : null;
}

/** The candidate pair the newest open peer connection uses, with each side's type (`host`,
 *  `srflx`, `prflx` or `relay`): whether the stream goes through a TURN relay. */
interface SelectedPair {
    local: { type: string; address: string | null; protocol: string | null; relayProtocol: string | null };
    remote: { type: string; address: string | null; protocol: string | null };
}

async function selectedPair(): Promise<SelectedPair | null> {
    const pc = [...peerConnections].reverse().find((p) => p.connectionState !== 'closed');
    if (!pc) return null;
    const report = await pc.getStats();
    let pairId: string | null = null;
    report.forEach((s: any) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    const pair: any = pairId ? report.get(pairId) : null;
    const local: any = pair ? report.get(pair.localCandidateId) : null;
    const remote: any = pair ? report.get(pair.remoteCandidateId) : null;
    if (!local || !remote) return null;
    const text = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);
    return {
        local: {
            type: String(local.candidateType),
            address: text(local.address ?? local.ip),
            protocol: text(local.protocol),
            relayProtocol: text(local.relayProtocol)
        },
        remote: { type: String(remote.candidateType), address: text(remote.address ?? remote.ip), protocol: text(remote.protocol) }
    };
}

/** Video frames decoded by the newest open peer connection (inbound-rtp `framesDecoded`). */
async function framesDecoded(): Promise<number> {
    const pc = [...peerConnections].reverse().find((p) => p.connectionState !== 'closed');
    if (!pc) return 0;
    let frames = 0;
    const report = await pc.getStats();
    report.forEach((s: any) => {
        if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') frames += Number(s.framesDecoded ?? 0);
    });
    return frames;
}

// ---------------------------------------------------------------------------------------------
// Page state

const sessionId = (() => {
    const m = /^\/play\/([^/]+)\/?$/.exec(window.location.pathname);
    if (!m) return null;
    try {
        return decodeURIComponent(m[1]);
    } catch {
        return null;
    }
})();

/** A key in the address (`#key=` a guest's, `#owner=` the creator's): kept, then removed. */
const fromAddress = (() => {
    const hash = new URLSearchParams(window.location.hash.replace(/^#/, ''));
    const key = hash.get('key') ?? hash.get('owner');
    if (!key || !sessionId) return null;
    setSessionKey(sessionId, key);
    try {
        window.history.replaceState(null, '', window.location.pathname + window.location.search);
    } catch {
        // The key stays in the address; nothing else changes.
    }
    return { key, guest: hash.has('key') };
})();

/** This page's credential for its session: its key, else null (the stored access token). */
function credential(): string | null {
    return fromAddress?.key ?? (sessionId ? getSessionKey(sessionId) : null);
}

let session: Session | null = null;
let pageState = 'loading';
let titleName: string | null = null;
let titleRequested = false;
let events: EventSource | null = null;
let eventsRetryMs = EVENTS_RETRY_MIN_MS;
let eventsRetryTimer: number | undefined;

type Overlay = { headline: string; detail?: string; spinner?: boolean; translucent?: boolean; buttons?: HTMLElement[] };

interface Stream {
    ps: PixelStreaming;
    config: Config;
    /** The newest join_url the coordinator sent: what a reconnect uses. */
    joinUrl: string;
    /** What the stage shows over the video while the session is ready; null: the video itself. */
    overlay: Overlay | null;
    /** The session closed this user out (removed, invitation withdrawn): the library's own
     *  reconnect attempts, refused by the server, are not shown. */
    closedOut: boolean;
}
let stream: Stream | null = null;
/** Why the library could not start in this browser, if it could not. */
let streamFailure: string | null = null;
let activitySent = 0;
let lastActivityAt = -Infinity;
let room: Room | null = null;
/** The session's own word that it is ending (`ended` on the signalling socket), before the
 *  coordinator's event says so. */
let endingReason: string | null = null;
/** This user left (a guest's Leave): the stream is closed until Rejoin. */
let left = false;

window.pxsPlayer = {
    get state() {
        return pageState;
    },
    get session() {
        return session;
    },
    get activitySent() {
        return activitySent;
    },
    get room() {
        return room;
    },
    remoteAddress,
    selectedPair,
    framesDecoded
};

/** Only the owner ends a session for everyone; the others leave it. */
function isOwner(s: Session | null): boolean {
    return !s?.role || s.role === 'owner';
}

/** The End button's words: a queued or scheduled session is left or cancelled, not ended. */
function endButtonText(s: Session | null): string {
    if (!isOwner(s)) return left ? 'Rejoin' : 'Leave';
    if (s?.state === 'queued') return 'Leave the line';
    if (s?.state === 'scheduled') return 'Cancel';
    return 'End session for everyone';
}

function isFinal(s: Session | null): boolean {
    return s !== null && (s.state === 'ended' || s.state === 'failed');
}

function setPageState(state: string): void {
    pageState = state;
    document.body.dataset.state = state;
}

function button(text: string, onClick: () => void, className?: string): HTMLButtonElement {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = text;
    if (className) b.className = className;
    b.addEventListener('click', onClick);
    return b;
}

function backLink(): HTMLAnchorElement {
    const a = document.createElement('a');
    a.href = '/';
    a.className = 'button';
    a.textContent = 'Back to the titles';
    a.dataset.testid = 'back-to-catalog';
    return a;
}

/** The overlay over the stage; `null` hides it. */
function showOverlay(overlay: Overlay | null): void {
    overlayEl.hidden = overlay === null;
    if (!overlay) return;
    overlayEl.classList.toggle('translucent', overlay.translucent === true);
    spinnerEl.hidden = overlay.spinner !== true;
    headlineEl.textContent = overlay.headline;
    detailEl.textContent = overlay.detail ?? '';
    detailEl.hidden = !overlay.detail;
    buttonsEl.replaceChildren(...(overlay.buttons ?? []));
}

function titleLabel(): string {
    return titleName ?? session?.title_id ?? 'the session';
}

/** The title's display name, once; the title id until it arrives (or if it cannot be read). */
function requestTitle(titleId: string): void {
    if (titleRequested) return;
    titleRequested = true;
    api<Title>('GET', `/api/v1/titles/${encodeURIComponent(titleId)}`)
        .then((title) => {
            if (title && typeof title.name === 'string' && title.name) {
                titleName = title.name;
                render();
            }
        })
        .catch(() => {
            // The id stands in for the name.
        });
}

// ---------------------------------------------------------------------------------------------
// Rendering: everything on screen follows from `session` and `stream`.

function render(): void {
    const s = session;
    if (!s) return;
    const words = sessionWords(s, titleLabel());
    statusEl.textContent = words;
    titleNameEl.textContent = titleLabel();
    document.title = `${titleLabel()} — pxs`;
    endButton.hidden = isFinal(s) || stream?.closedOut === true;
    if (!endButton.disabled) endButton.textContent = endButtonText(s);

    switch (s.state) {
        case 'queued':
            showOverlay({
                headline: words,
                detail: 'Your session starts as soon as a server is free. Keep this page open.',
                spinner: true
            });
            break;
        case 'scheduled':
            showOverlay({ headline: words, detail: 'Keep this page open: the session starts by itself.', spinner: true });
            break;
        case 'starting':
            showOverlay({ headline: words, detail: 'This usually takes a few seconds.', spinner: true });
            break;
        case 'ready':
            if (endingReason !== null) {
                showOverlay({ headline: `The session is ending: ${endReasonWords(endingReason, null)}.`, spinner: true });
            } else if (left) {
                showOverlay({ headline: 'You left the session.', detail: 'The others are still in it.', buttons: [button('Rejoin', rejoin), backLink()] });
            } else if (streamFailure !== null) {
                showOverlay({ headline: 'The stream could not start in this browser.', detail: streamFailure, buttons: [backLink()] });
            } else if (!stream) {
                showOverlay({ headline: `Starting ${titleLabel()}…`, detail: 'Waiting for the stream address.', spinner: true });
            } else {
                showOverlay(stream.overlay);
            }
            break;
        case 'ended':
        case 'failed': {
            const again = button('Start again', () => void startAgain(again));
            again.className = 'secondary';
            again.dataset.testid = 'start-again';
            showOverlay({ headline: words, buttons: [backLink(), again] });
            break;
        }
    }
}

/** A fatal problem with this page (no such session, no access): words and a way back. */
function showFatal(text: string): void {
    setPageState('error');
    statusEl.textContent = text;
    endButton.hidden = true;
    closeEvents();
    stopStream();
    showOverlay({ headline: text, buttons: [backLink()] });
}

function applySession(next: Session): void {
    if (next && typeof next === 'object' && typeof next.state === 'string' && isFinal(next)) room?.stop();
    if (!next || typeof next !== 'object' || typeof next.state !== 'string') return;
    if (sessionId && next.id && next.id !== sessionId) return;
    // Ended and failed are final: a late or replayed event cannot bring the session back.
    if (isFinal(session)) return;
    session = next;
    eventsRetryMs = EVENTS_RETRY_MIN_MS;
    setPageState(next.state);
    requestTitle(next.title_id);

    if (next.state === 'ready' && next.join_url) {
        if (!stream && streamFailure === null) startStream(next.join_url);
        else updateJoinUrl(next.join_url);
    }
    if (isFinal(next)) {
        closeEvents();
        stopStream();
    }
    render();
}

// ---------------------------------------------------------------------------------------------
// Server-sent events

function closeEvents(): void {
    window.clearTimeout(eventsRetryTimer);
    if (events) {
        events.close();
        events = null;
    }
}

function openEvents(): void {
    if (!sessionId || isFinal(session)) return;
    closeEvents();
    const query = new URLSearchParams();
    const token = credential() ?? getToken();
    if (token) query.set('token', token);
    const name = getName();
    if (name) query.set('name', name);
    const qs = query.toString();
    const url = `/api/v1/sessions/${encodeURIComponent(sessionId)}/events` + (qs ? `?${qs}` : '');
    const source = new EventSource(url);
    events = source;
    source.addEventListener('session', (event) => {
        let data: Session;
        try {
            data = JSON.parse((event as MessageEvent<string>).data);
        } catch {
            console.warn('pxs: a session event that is not JSON', (event as MessageEvent).data);
            return;
        }
        applySession(data);
    });
    source.addEventListener('open', () => {
        if (session) render();
    });
    source.addEventListener('error', () => {
        if (events !== source || isFinal(session)) {
            source.close();
            return;
        }
        if (source.readyState === EventSource.CLOSED) {
            // The server answered with an error (404, 401...) or no event stream: ask it why.
            events = null;
            void diagnose();
        } else if (session && session.state !== 'ready') {
            // The browser reconnects by itself; say so while it does.
            statusEl.textContent = `${sessionWords(session, titleLabel())} — reconnecting to the server…`;
        }
    });
}

/** After the event stream was refused: the session's own answer says why, or shows it ended. */
async function diagnose(): Promise<void> {
    if (!sessionId) return;
    try {
        const current = await api<Session>('GET', `/api/v1/sessions/${encodeURIComponent(sessionId)}`, undefined, credential());
        applySession(current);
        if (!isFinal(session)) scheduleEventsRetry();
    } catch (e) {
        if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) {
            const hint =
                e.status === 404 && !credential()
                    ? ' To join someone else\'s session, open the invitation link they sent you.'
                    : e.status === 401 || e.status === 403
                      ? ' (Is the right access token stored on the titles page?)'
                      : '';
            showFatal(`This session cannot be shown: ${e.message}${hint}`);
            return;
        }
        if (session) statusEl.textContent = `${sessionWords(session, titleLabel())} — ${errorMessage(e)}`;
        else showOverlay({ headline: 'Connecting to the server…', detail: errorMessage(e), spinner: true });
        scheduleEventsRetry();
    }
}

function scheduleEventsRetry(): void {
    window.clearTimeout(eventsRetryTimer);
    eventsRetryTimer = window.setTimeout(openEvents, eventsRetryMs);
    eventsRetryMs = Math.min(eventsRetryMs * 2, EVENTS_RETRY_MAX_MS);
}

// ---------------------------------------------------------------------------------------------
// The stream (Epic's library)

/** `?relay=1` in the address (or localStorage `pxs_relay` = `1`): force the TURN relay. */
function forceRelay(): boolean {
    if (new URLSearchParams(window.location.search).get('relay') === '1') return true;
    try {
        return window.localStorage.getItem('pxs_relay') === '1';
    } catch {
        return false;
    }
}

function startStream(joinUrl: string): void {
    try {
        const inAddress = new URLSearchParams(window.location.search).get('debug') === '1';
        let stored = false;
        try {
            stored = window.localStorage.getItem('pxs_debug') === '1';
        } catch {
            // No storage: no stored setting.
        }
        Logger.InitLogging(inAddress || stored ? LogLevel.Debug : LogLevel.Warning, inAddress);
    } catch {
        // The library's default logging.
    }
    let ps: PixelStreaming;
    let config: Config;
    const relay = forceRelay();
    try {
        config = new Config({
            initialSettings: {
                ss: joinUrl,
                // `?relay=1`: every path goes through the TURN relay (diagnosis).
                [Flags.ForceTURN]: relay,
                AutoConnect: true,
                AutoPlayVideo: true,
                StartVideoMuted: true,
                HoveringMouse: true,
                // Input goes on once this user has control (see Room).
                [Flags.MouseInput]: false,
                [Flags.KeyboardInput]: false,
                [Flags.TouchInput]: false,
                [Flags.GamepadInput]: false
            },
            useUrlParams: false
        });
        ps = new PixelStreaming(config, { videoElementParent: playerEl });
    } catch (e) {
        console.error('pxs: the stream library did not start', e);
        streamFailure = errorMessage(e);
        return;
    }
    const s: Stream = { ps, config, joinUrl, overlay: { headline: 'Connecting to the stream…', spinner: true }, closedOut: false };
    stream = s;
    const stage = (overlay: Overlay | null): void => {
        s.overlay = overlay;
        render();
    };

    const on = (type: string, handler: (data: any) => void): void => {
        try {
            ps.addEventListener(type as any, (event: any) => {
                if (stream !== s || isFinal(session) || s.closedOut) return;
                try {
                    handler(event?.data);
                } catch (e) {
                    console.error(`pxs: handling the library's ${type} event`, e);
                }
            });
        } catch (e) {
            console.warn(`pxs: the library has no ${type} event`, e);
        }
    };
    // Between the offer/answer and a working connection: see CONNECT_PATIENCE_MS.
    let patience: ReturnType<typeof setTimeout> | null = null;
    const waitForConnection = (): void => {
        if (patience !== null) clearTimeout(patience);
        patience = setTimeout(() => {
            patience = null;
            if (stream !== s || isFinal(session) || s.closedOut) return;
            stage({ ...UNREACHABLE, translucent: true, buttons: [button('Try again', reconnect), backLink()] });
        }, CONNECT_PATIENCE_MS);
    };
    const connected = (): void => {
        if (patience !== null) clearTimeout(patience);
        patience = null;
    };
    on('webRtcSdp', waitForConnection);
    on('webRtcConnected', connected);
    on('playStream', () => {
        connected();
        stage(null);
    });
    on('playStreamRejected', () => {
        // The browser refused to autoplay: one click starts it.
        stage({
            headline: 'Ready to play',
            translucent: true,
            buttons: [
                button('Play', () => {
                    try {
                        ps.play();
                    } catch (e) {
                        console.error('pxs: play()', e);
                    }
                    stage(null);
                })
            ]
        });
    });
    on('webRtcConnecting', () => {
        if (s.overlay !== null) stage({ headline: 'Connecting to the stream…', spinner: true });
    });
    on('webRtcDisconnected', (data) => {
        connected();
        const reason = typeof data?.eventString === 'string' ? data.eventString : '';
        if (/TURN cannot be forced/.test(reason)) {
            // `?relay=1` on a service that hands out no TURN relay.
            stopStream();
            stage({
                headline: 'This service has no TURN relay, so the stream cannot be forced through one.',
                detail: 'Remove relay=1 from the address to connect directly.',
                buttons: [backLink()]
            });
            s.closedOut = true;
            return;
        }
        // The session's own refusals (the users core's words, webrtc-session/src/users.rs):
        // removed by the owner or an invitation withdrawn is final; a full session may have
        // room later.
        if (/removed from this session|invitation you joined with was withdrawn/.test(reason)) {
            stopStream();
            room?.stop();
            stage({ headline: reason.replace(/ Reconnecting\.$/, ''), buttons: [backLink()] });
            s.closedOut = true;
            endButton.hidden = true;
            return;
        }
        if (/the session is full/.test(reason)) {
            stopStream();
            stage({ headline: reason.replace(/ Reconnecting\.$/, ''), detail: 'Try again when someone leaves.', buttons: [button('Try again', reconnect), backLink()] });
            return;
        }
        const canClick = data?.allowClickToReconnect !== false;
        if (canClick) {
            stage({
                headline: 'The stream was interrupted.',
                detail: typeof data?.eventString === 'string' && data.eventString ? data.eventString : undefined,
                translucent: true,
                buttons: [button('Reconnect', reconnect), backLink()]
            });
        } else {
            stage({ headline: 'The stream was interrupted. Reconnecting…', spinner: true, translucent: true });
        }
    });
    on('webRtcFailed', () => {
        connected();
        stage({ ...UNREACHABLE, translucent: true, buttons: [button('Try again', reconnect), backLink()] });
    });
    listenToRoom(ps);
    startActivityReports();
}

/** The pxs messages of shared sessions, from the library's signalling connection. */
function listenToRoom(ps: PixelStreaming): void {
    if (!sessionId) return;
    room = new Room({
        sessionId,
        send: (message) => {
            const send = signallingSender();
            if (!send) return false;
            send(JSON.stringify(message));
            return true;
        },
        credential,
        controlChanged: (mine, holder) => setInput(mine, holder),
        warningChanged: () => {
            // While a warning shows, the next input is reported at once.
            lastActivityAt = -Infinity;
        }
    });
    const r = room;
    let protocol: any;
    try {
        protocol = (ps as any).signallingProtocol;
    } catch {
        protocol = null;
    }
    if (!protocol || typeof protocol.addListener !== 'function') {
        console.warn('pxs: the library has no signalling protocol to listen to; no side panel');
        return;
    }
    for (const type of ['you', 'users', 'chat', 'chatHistory', 'refused', 'warning', 'warningCleared']) {
        protocol.addListener(type, (msg: unknown) => {
            try {
                r.handle(msg);
            } catch (e) {
                console.error(`pxs: handling ${type}`, e);
            }
        });
    }
    protocol.addListener('ended', (msg: any) => {
        if (typeof msg?.reason === 'string' && !isFinal(session)) {
            endingReason = msg.reason;
            render();
        }
    });
    // A new connection announces its user again.
    ps.addEventListener('webRtcDisconnected' as any, () => r.reset());
}

const hintEl = document.getElementById('control-hint') as HTMLElement;
const hintTextEl = document.getElementById('control-hint-text') as HTMLElement;
const hintRequest = document.getElementById('control-hint-request') as HTMLButtonElement;
hintRequest.addEventListener('click', () => {
    const send = signallingSender();
    const action = room?.me?.role === 'owner' ? 'take' : 'request';
    if (send) send(JSON.stringify({ type: 'control', action }));
});

/** Input to the application only while this user has control; the stage says who has it. */
function setInput(mine: boolean, holder: SessionUser | null): void {
    const config = stream?.config;
    if (config) {
        for (const flag of [Flags.MouseInput, Flags.KeyboardInput, Flags.TouchInput, Flags.GamepadInput]) {
            try {
                if (config.isFlagEnabled(flag) !== mine) config.setFlagEnabled(flag, mine);
            } catch (e) {
                console.warn(`pxs: could not set ${flag}`, e);
            }
        }
    }
    const me = room?.me;
    hintEl.hidden = mine || !me;
    if (!mine && me) {
        const self = room?.users.find((u) => u.playerId === me.playerId);
        hintTextEl.textContent = holder ? `${holder.name} has control` : 'Nobody has control';
        hintRequest.hidden = self?.requested === true;
        hintRequest.textContent = me.role === 'owner' ? 'Take control' : 'Request control';
        if (self?.requested) hintTextEl.textContent += ' — you asked for it';
    }
    document.body.dataset.control = mine ? 'mine' : 'other';
}

function updateJoinUrl(joinUrl: string): void {
    if (!stream || stream.joinUrl === joinUrl) return;
    stream.joinUrl = joinUrl;
    try {
        stream.config.setTextSetting(TextParameters.SignallingServerUrl, joinUrl);
    } catch (e) {
        console.warn('pxs: could not update the signalling URL', e);
    }
}

function reconnect(): void {
    if (!stream || isFinal(session)) return;
    updateJoinUrl(stream.joinUrl);
    stream.overlay = { headline: 'Connecting to the stream…', spinner: true };
    render();
    try {
        stream.ps.reconnect();
    } catch (e) {
        console.error('pxs: reconnect()', e);
    }
}

function stopStream(): void {
    if (!stream) return;
    const { ps } = stream;
    try {
        ps.disconnect();
    } catch {
        // Already closed.
    }
}

// ---------------------------------------------------------------------------------------------
// Activity for the idle policy

/** The library's open signalling WebSocket (or its transport), found through its public objects. */
function signallingSender(): ((text: string) => void) | null {
    try {
        const ps: any = stream?.ps;
        const transport: any = ps?.signallingProtocol?.transport ?? ps?.webRtcController?.protocol?.transport;
        const socket: any = transport?.webSocket;
        if (socket && typeof socket.send === 'function' && socket.readyState === WebSocket.OPEN) {
            return (text) => socket.send(text);
        }
        if (transport && typeof transport.sendMessage === 'function' && transport.isConnected?.() === true) {
            return (text) => transport.sendMessage(text);
        }
    } catch {
        // A library change: no activity reports rather than a broken page.
    }
    return null;
}

function userActive(): void {
    if (!stream || isFinal(session) || left) return;
    const now = performance.now();
    if (now - lastActivityAt < ACTIVITY_INTERVAL_MS) return;
    const send = signallingSender();
    if (!send) return;
    try {
        send(JSON.stringify({ type: 'activity' }));
        lastActivityAt = now;
        activitySent += 1;
    } catch (e) {
        console.warn('pxs: could not report activity', e);
    }
}

let activityListening = false;
function startActivityReports(): void {
    if (activityListening) return;
    activityListening = true;
    const options = { passive: true, capture: true };
    for (const type of ['pointermove', 'pointerdown', 'wheel', 'touchstart']) {
        stageEl.addEventListener(type, userActive, options);
    }
    // The library reads the keyboard on the whole document.
    document.addEventListener('keydown', userActive, options);
}

// ---------------------------------------------------------------------------------------------
// Buttons

/** A guest leaves: its stream closes; the session goes on for the others. */
function leave(): void {
    left = true;
    stopStream();
    room?.reset();
    hintEl.hidden = true;
    render();
}

function rejoin(): void {
    left = false;
    render();
    reconnect();
}

endButton.addEventListener('click', async () => {
    if (!sessionId) return;
    if (!isOwner(session)) {
        if (left) rejoin();
        else leave();
        return;
    }
    endButton.disabled = true;
    endButton.textContent = session?.state === 'queued' || session?.state === 'scheduled' ? 'Cancelling…' : 'Ending…';
    endErrorEl.textContent = '';
    try {
        const answer = await api<Session | undefined>('DELETE', `/api/v1/sessions/${encodeURIComponent(sessionId)}`, undefined, credential());
        // The event stream reports the end; an answer with the session says it sooner.
        if (answer && typeof answer === 'object' && 'state' in answer) applySession(answer);
    } catch (e) {
        endErrorEl.textContent = errorMessage(e);
    } finally {
        endButton.disabled = false;
        endButton.textContent = endButtonText(session);
    }
});

async function startAgain(b: HTMLButtonElement): Promise<void> {
    if (!session) return;
    b.disabled = true;
    b.textContent = 'Starting…';
    try {
        const next = await api<Session>('POST', '/api/v1/sessions', { title_id: session.title_id });
        window.location.assign(`/play/${encodeURIComponent(next.id)}`);
    } catch (e) {
        b.disabled = false;
        b.textContent = 'Start again';
        detailEl.textContent = errorMessage(e);
        detailEl.hidden = false;
    }
}

// ---------------------------------------------------------------------------------------------

/** A guest without a name is asked for one before joining (others see it). */
function askName(then: () => void): void {
    const form = document.createElement('form');
    form.className = 'name-form';
    const input = document.createElement('input');
    input.maxLength = 40;
    input.required = true;
    input.placeholder = 'Your name';
    input.setAttribute('autocomplete', 'nickname');
    input.dataset.testid = 'name-input';
    input.setAttribute('aria-label', 'Your name');
    const join = document.createElement('button');
    join.type = 'submit';
    join.textContent = 'Join';
    join.dataset.testid = 'name-join';
    form.append(input, join);
    form.addEventListener('submit', (e) => {
        e.preventDefault();
        const name = input.value.trim();
        if (!name) return;
        setName(name);
        then();
    });
    setPageState('name');
    showOverlay({ headline: 'You are invited to a session', detail: 'The others see this name.', buttons: [form] });
    input.focus();
}

if (sessionId) {
    const start = (): void => {
        setPageState('loading');
        showOverlay({ headline: 'Loading the session…', spinner: true });
        openEvents();
    };
    if (fromAddress?.guest && !getName()) askName(start);
    else start();
} else {
    showFatal('This address names no session.');
}
