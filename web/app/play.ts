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
import { Config, Flags, Logger, LogLevel, PixelStreaming, TextParameters, type AggregatedStats } from '@epicgames-ps/lib-pixelstreamingfrontend-ue5.7';
import { ApiError, api, errorMessage, getName, getSessionKey, getToken, setName, setSessionKey, type Session, type Title } from './api';
import { applyTranslations, languageSwitch, onLangChange, t } from './i18n';
import { Room, type SessionUser } from './room';
import { endReasonWords, sessionWords } from './words';
import { waitText } from './waiting';

const ACTIVITY_INTERVAL_MS = 10_000;
/** From the offer and answer to a working connection takes a second or two, even through a
 *  relay; after this long without one, the page says the stream cannot reach this browser (and
 *  keeps trying: if it connects later, the stream shows). ICE itself may never say "failed"
 *  when no candidate pair could even be formed (a relay that refused this browser). */
const CONNECT_PATIENCE_MS = 15_000;
/** What the page says when no network path to the stream was found. */
function unreachable(): { headline: string; detail: string } {
    return { headline: t('play.unreachable'), detail: t('play.unreachableDetail') };
}
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
// Statistics: the library's own (`statsReceived`, once a second, an AggregatedStats per peer
// connection); nothing here wraps RTCPeerConnection or reads the library's private fields.

/** The newest statistics of the current stream's peer connection, or null before any. */
let latestStats: AggregatedStats | null = null;

/** The candidate pair the stream uses, with each side's type (`host`, `srflx`, `prflx` or
 *  `relay`): whether the stream goes through a TURN relay. */
interface SelectedPair {
    local: { type: string; address: string | null; protocol: string | null; relayProtocol: string | null };
    remote: { type: string; address: string | null; protocol: string | null };
}

function selectedPairNow(): SelectedPair | null {
    const st = latestStats;
    const pair = st?.getActiveCandidatePair();
    if (!st || !pair) return null;
    const local = st.localCandidates.find((c) => c.id === pair.localCandidateId);
    const remote = st.remoteCandidates.find((c) => c.id === pair.remoteCandidateId);
    if (!local || !remote) return null;
    const text = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);
    return {
        local: { type: String(local.candidateType), address: text(local.address), protocol: text(local.protocol), relayProtocol: text(local.relayProtocol) },
        remote: { type: String(remote.candidateType), address: text(remote.address), protocol: text(remote.protocol) }
    };
}

async function selectedPair(): Promise<SelectedPair | null> {
    return selectedPairNow();
}

/** The address the stream comes from (the selected pair's remote candidate), or null. */
async function remoteAddress(): Promise<string | null> {
    return selectedPairNow()?.remote.address ?? null;
}

/** Video frames decoded by the current peer connection (a new one starts again at 0). */
async function framesDecoded(): Promise<number> {
    return Number(latestStats?.inboundVideoStats?.framesDecoded ?? 0);
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
    if (!isOwner(s)) return left ? t('play.rejoin') : t('play.leave');
    if (s?.state === 'queued') return t('play.leaveLine');
    if (s?.state === 'scheduled') return t('play.cancel');
    return t('play.endForEveryone');
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
    a.textContent = t('play.backToTitles');
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
    return titleName ?? (session ? t('play.yourSession') : t('play.theSession'));
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
    if (isFinal(s) || !stream || stream.closedOut) {
        toolbarEl.hidden = true;
        statsEl.hidden = true;
    }
    if (!endButton.disabled) endButton.textContent = endButtonText(s);

    switch (s.state) {
        case 'queued':
            showOverlay({
                headline: words,
                // Why it waits and about how long (waiting.ts, the catalog's words).
                detail: [t('play.queuedDetail'), waitText(s)].join(' '),
                spinner: true
            });
            break;
        case 'scheduled':
            showOverlay({ headline: words, detail: t('play.scheduledDetail'), spinner: true });
            break;
        case 'starting':
            showOverlay({ headline: words, detail: t('play.startingDetail'), spinner: true });
            break;
        case 'ready':
            if (endingReason !== null) {
                showOverlay({ headline: t('play.ending', { why: endReasonWords(endingReason, null, session) }), spinner: true });
            } else if (left) {
                showOverlay({ headline: t('play.left'), detail: t('play.leftDetail'), buttons: [button(t('play.rejoin'), rejoin), backLink()] });
            } else if (streamFailure !== null) {
                showOverlay({ headline: t('play.noLibrary'), detail: streamFailure, buttons: [backLink()] });
            } else if (!stream) {
                showOverlay({ headline: t('play.startingTitle', { title: titleLabel() }), detail: t('play.waitingAddress'), spinner: true });
            } else {
                showOverlay(stream.overlay);
            }
            break;
        case 'ended':
        case 'failed': {
            const again = button(t('play.startAgain'), () => void startAgain(again));
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
            statusEl.textContent = t('play.reconnectingServer', { words: sessionWords(session, titleLabel()) });
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
                    ? t('play.hintInvitation')
                    : e.status === 401 || e.status === 403
                      ? t('play.hintToken')
                      : '';
            // The server's own words only when they are not about an id the user never saw.
            const why = e.status === 404 ? t('play.notFound') : e.message;
            showFatal(t('play.cannotShow', { why, hint }));
            return;
        }
        if (session) statusEl.textContent = `${sessionWords(session, titleLabel())} — ${errorMessage(e)}`;
        else showOverlay({ headline: t('play.connectingServer'), detail: errorMessage(e), spinner: true });
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
                // Browsers let a page play sound only after a click: muted until Unmute.
                StartVideoMuted: muted,
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
    const s: Stream = { ps, config, joinUrl, overlay: { headline: t('play.connectingStream'), spinner: true }, closedOut: false };
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
            stage({ ...unreachable(), translucent: true, buttons: [button(t('play.tryAgain'), reconnect), backLink()] });
        }, CONNECT_PATIENCE_MS);
    };
    const connected = (): void => {
        if (patience !== null) clearTimeout(patience);
        patience = null;
    };
    latestStats = null;
    on('statsReceived', (data) => {
        latestStats = (data?.aggregatedStats as AggregatedStats | undefined) ?? null;
        renderStats();
    });
    on('webRtcSdp', waitForConnection);
    on('webRtcConnected', connected);
    on('playStream', () => {
        connected();
        stage(null);
        applySound();
        toolbarEl.hidden = false;
    });
    on('playStreamRejected', () => {
        // The browser refused to autoplay: one click starts it.
        stage({
            headline: t('play.readyToPlay'),
            translucent: true,
            buttons: [
                button(t('play.play'), () => {
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
        if (s.overlay !== null) stage({ headline: t('play.connectingStream'), spinner: true });
    });
    on('webRtcDisconnected', (data) => {
        connected();
        const reason = typeof data?.eventString === 'string' ? data.eventString : '';
        if (/TURN cannot be forced/.test(reason)) {
            // `?relay=1` on a service that hands out no TURN relay.
            stopStream();
            stage({
                headline: t('play.noRelay'),
                detail: t('play.noRelayDetail'),
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
            stage({ headline: reason.replace(/ Reconnecting\.$/, ''), detail: t('play.fullDetail'), buttons: [button(t('play.tryAgain'), reconnect), backLink()] });
            return;
        }
        const canClick = data?.allowClickToReconnect !== false;
        if (canClick) {
            stage({
                headline: t('play.interrupted'),
                detail: typeof data?.eventString === 'string' && data.eventString ? data.eventString : undefined,
                translucent: true,
                buttons: [button(t('play.reconnect'), reconnect), backLink()]
            });
        } else {
            stage({ headline: t('play.interruptedReconnecting'), spinner: true, translucent: true });
        }
    });
    on('webRtcFailed', () => {
        connected();
        stage({ ...unreachable(), translucent: true, buttons: [button(t('play.tryAgain'), reconnect), backLink()] });
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
            send(message);
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
    let protocol: { addListener(type: string, f: (msg: unknown) => void): unknown } | null;
    try {
        // The library's EventEmitter types its events by the library's own messages; pxs's are
        // others.
        protocol = ps.signallingProtocol as unknown as typeof protocol;
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
    ps.addEventListener('webRtcDisconnected', () => r.reset());
}

const hintEl = document.getElementById('control-hint') as HTMLElement;
const hintTextEl = document.getElementById('control-hint-text') as HTMLElement;
const hintRequest = document.getElementById('control-hint-request') as HTMLButtonElement;
hintRequest.addEventListener('click', () => {
    const send = signallingSender();
    const action = room?.me?.role === 'owner' ? 'take' : 'request';
    if (send) send({ type: 'control', action });
});

/** Input to the application only while this user has control; the stage says who has it. */
/** The last control state setInput was given, to word it again in another language. */
let lastControl: { mine: boolean; holder: SessionUser | null } | null = null;

function setInput(mine: boolean, holder: SessionUser | null): void {
    lastControl = { mine, holder };
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
        hintTextEl.textContent = holder ? t('play.hint.holder', { name: holder.name }) : t('play.hint.nobody');
        hintRequest.hidden = self?.requested === true;
        hintRequest.textContent = me.role === 'owner' ? t('room.take') : t('room.request');
        if (self?.requested) hintTextEl.textContent += t('play.hint.asked');
    }
    document.body.dataset.control = mine ? 'mine' : 'other';
    qualitySelect.disabled = !mine;
    pointerLockButton.hidden = !mine;
    labelPointerLock();
    qualitySelect.title = mine ? '' : t('play.qualityOnlyControl');
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
    stream.overlay = { headline: t('play.connectingStream'), spinner: true };
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
// The stream's own controls: sound, picture size, statistics, fullscreen

const toolbarEl = document.getElementById('toolbar') as HTMLElement;
const muteButton = document.getElementById('mute') as HTMLButtonElement;
const volumeInput = document.getElementById('volume') as HTMLInputElement;
const qualitySelect = document.getElementById('quality') as HTMLSelectElement;
const statsButton = document.getElementById('stats-toggle') as HTMLButtonElement;
const statsEl = document.getElementById('stats') as HTMLElement;
const fullscreenButton = document.getElementById('fullscreen') as HTMLButtonElement;
const pointerLockButton = document.getElementById('pointer-lock') as HTMLButtonElement;

/** Locked mouse (games: the pointer is captured on a click, Esc frees it) or hovering (the
 *  default: the pointer moves over the picture). An application that says which it wants in
 *  its InitialSettings (`ConfigOptions.DefaultToHover`) gets it from the library; the button
 *  lets the user in control change it. */
function pointerLocked(): boolean {
    try {
        return stream ? !stream.config.isFlagEnabled(Flags.HoveringMouseMode) : false;
    } catch {
        return false;
    }
}
function labelPointerLock(): void {
    const on = pointerLocked();
    pointerLockButton.textContent = on ? t('play.pointerFree') : t('play.pointerLock');
    pointerLockButton.setAttribute('aria-pressed', String(on));
}
pointerLockButton.addEventListener('click', () => {
    if (!stream) return;
    try {
        stream.config.setFlagEnabled(Flags.HoveringMouseMode, pointerLocked());
    } catch (e) {
        console.warn('pxs: the mouse mode', e);
    }
    labelPointerLock();
});

/** Muted until the user unmutes (a browser plays sound only after a gesture on the page). */
let muted = true;
let volume = (() => {
    try {
        const v = Number(window.localStorage.getItem('pxs_volume'));
        return Number.isFinite(v) && v > 0 && v <= 1 ? v : 1;
    } catch {
        return 1;
    }
})();
volumeInput.value = String(volume);

/** The sound of every media element of the stream (the library plays audio in the video
 *  element, or in an audio element of its own when the audio comes as a stream of its own). */
function applySound(): void {
    for (const el of playerEl.querySelectorAll<HTMLMediaElement>('video, audio')) {
        el.muted = muted;
        el.volume = volume;
        if (!muted && el.paused) void el.play().catch(() => undefined);
    }
    try {
        stream?.config.setFlagEnabled(Flags.StartVideoMuted, muted);
    } catch {
        // Only what a reconnect starts with.
    }
    muteButton.textContent = muted ? t('play.unmute') : t('play.mute');
    muteButton.setAttribute('aria-pressed', String(muted));
    document.body.dataset.muted = String(muted);
}
muteButton.addEventListener('click', () => {
    muted = !muted;
    applySound();
});
volumeInput.addEventListener('input', () => {
    volume = Math.min(1, Math.max(0, Number(volumeInput.value) || 0));
    if (volume > 0 && muted) muted = false;
    try {
        window.localStorage.setItem('pxs_volume', String(volume));
    } catch {
        // Not kept.
    }
    applySound();
});

/** The picture size the application sends: its own, the window's, or a preset. Asked of the
 *  application with UE's `Resolution.Width/Height` command, which only the user in control can
 *  send (the others have no input channel). */
let appResolution: { w: number; h: number } | null = null;
function applyQuality(): void {
    const s = stream;
    if (!s) return;
    const choice = qualitySelect.value;
    const fit = choice === 'fit';
    try {
        if (s.config.isFlagEnabled(Flags.MatchViewportResolution) !== fit) s.config.setFlagEnabled(Flags.MatchViewportResolution, fit);
    } catch (e) {
        console.warn('pxs: MatchViewportResolution', e);
    }
    let size: { w: number; h: number } | null = null;
    if (fit) {
        const r = playerEl.getBoundingClientRect();
        size = { w: Math.round(r.width * window.devicePixelRatio), h: Math.round(r.height * window.devicePixelRatio) };
    } else if (choice === 'app') {
        size = appResolution;
    } else {
        const m = /^(\d+)x(\d+)$/.exec(choice);
        if (m) size = { w: Number(m[1]), h: Number(m[2]) };
    }
    if (!size) return;
    try {
        s.ps.emitCommand({ 'Resolution.Width': size.w & ~1, 'Resolution.Height': size.h & ~1 });
    } catch (e) {
        console.warn('pxs: the resolution command', e);
    }
}
qualitySelect.addEventListener('change', applyQuality);

/** What the statistics box shows, from the library's newest statistics. */
function renderStats(): void {
    const st = latestStats;
    const video = playerEl.querySelector('video');
    if (st && video && !appResolution && video.videoWidth > 0) appResolution = { w: video.videoWidth, h: video.videoHeight };
    if (statsEl.hidden || !st) return;
    const v = st.inboundVideoStats;
    const set = (id: string, text: string): void => {
        const el = statsEl.querySelector(`[data-testid="stats-${id}"]`);
        if (el) el.textContent = text;
    };
    const w = v.frameWidth ?? video?.videoWidth;
    const h = v.frameHeight ?? video?.videoHeight;
    set('resolution', w && h ? `${w}×${h}` : '–');
    set('fps', v.framesPerSecond !== undefined ? String(Math.round(v.framesPerSecond)) : '–');
    set('bitrate', v.bitrate !== undefined ? t('play.stats.mbits', { n: (v.bitrate / 1000).toFixed(1) }) : '–');
    const pair = st.getActiveCandidatePair();
    set('rtt', pair && Number.isFinite(pair.currentRoundTripTime) ? t('play.stats.ms', { n: Math.round(pair.currentRoundTripTime * 1000) }) : '–');
    const received = v.packetsReceived ?? 0;
    const lost = v.packetsLost ?? 0;
    set('loss', received + lost > 0 ? `${((100 * lost) / (received + lost)).toFixed(1)} %` : '–');
    const path = selectedPairNow();
    set('path', path ? (path.local.type === 'relay' || path.remote.type === 'relay' ? t('play.stats.relayed') : t('play.stats.direct')) : '–');
}
statsButton.addEventListener('click', () => {
    statsEl.hidden = !statsEl.hidden;
    statsButton.setAttribute('aria-pressed', String(!statsEl.hidden));
    renderStats();
});

fullscreenButton.addEventListener('click', () => {
    const request = document.fullscreenElement ? document.exitFullscreen() : stageEl.requestFullscreen({ navigationUI: 'hide' });
    void request.catch((e: unknown) => console.warn('pxs: fullscreen', e));
});
document.addEventListener('fullscreenchange', () => {
    const on = document.fullscreenElement !== null;
    fullscreenButton.textContent = on ? t('play.exitFullscreen') : t('play.fullscreen');
    fullscreenButton.setAttribute('aria-pressed', String(on));
    document.body.dataset.fullscreen = String(on);
});
if (!document.fullscreenEnabled) fullscreenButton.hidden = true;

// ---------------------------------------------------------------------------------------------
// Activity for the idle policy

/** Sends a pxs message (an object) on the library's signalling connection, through its public
 *  `signallingProtocol`; null while it is not connected. */
function signallingSender(): ((message: object) => void) | null {
    const protocol = stream?.ps.signallingProtocol;
    if (!protocol || !protocol.isConnected()) return null;
    // pxs's own messages are not the library's types; it serializes whatever it is given.
    return (message) => protocol.sendMessage(message as Parameters<typeof protocol.sendMessage>[0]);
}

function userActive(): void {
    if (!stream || isFinal(session) || left) return;
    const now = performance.now();
    if (now - lastActivityAt < ACTIVITY_INTERVAL_MS) return;
    const send = signallingSender();
    if (!send) return;
    try {
        send({ type: 'activity' });
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
    endButton.textContent = session?.state === 'queued' || session?.state === 'scheduled' ? t('play.cancelling') : t('play.ending…');
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
    b.textContent = t('play.startingShort');
    try {
        const next = await api<Session>('POST', '/api/v1/sessions', { title_id: session.title_id });
        window.location.assign(`/play/${encodeURIComponent(next.id)}`);
    } catch (e) {
        b.disabled = false;
        b.textContent = t('play.startAgain');
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
    input.placeholder = t('play.name');
    input.setAttribute('autocomplete', 'nickname');
    input.dataset.testid = 'name-input';
    input.setAttribute('aria-label', t('play.name'));
    const join = document.createElement('button');
    join.type = 'submit';
    join.textContent = t('play.join');
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
    showOverlay({ headline: t('play.invited'), detail: t('play.invitedDetail'), buttons: [form] });
    input.focus();
}

// The page's language: the static markup now, everything drawn so far again on a switch.
applyTranslations(document);
{
    const langSwitch = languageSwitch();
    langSwitch.classList.add('small');
    endButton.before(langSwitch);
}
muteButton.textContent = t('play.unmute');
fullscreenButton.textContent = t('play.fullscreen');
onLangChange(() => {
    applyTranslations(document);
    muteButton.textContent = muted ? t('play.unmute') : t('play.mute');
    fullscreenButton.textContent = document.fullscreenElement ? t('play.exitFullscreen') : t('play.fullscreen');
    labelPointerLock();
    if (lastControl) setInput(lastControl.mine, lastControl.holder);
    render();
    renderStats();
    if (stream?.overlay) showOverlay(stream.overlay);
});

if (sessionId) {
    const start = (): void => {
        setPageState('loading');
        showOverlay({ headline: t('play.loadingSession'), spinner: true });
        openEvents();
    };
    if (fromAddress?.guest && !getName()) askName(start);
    else start();
} else {
    showFatal(t('play.noSessionInAddress'));
}
