// The booking page (`/book/<session id>`): a scheduled session's title and window, a countdown to
// its start, and the way in once it starts (the player page, at once). It reads the session with
// the key this browser holds for it (an anonymous booking's owner key) or the access token, every
// POLL_MS, and every second in the last moments; the countdown itself runs on the local clock.
import { ApiError, api, errorMessage, getSessionKey, type Session, type Title } from './api';
import { applyTranslations, formatDateTime, getLang, languageSwitch, onLangChange, t, type Key } from './i18n';

const POLL_MS = 3_000;

const noticeEl = document.getElementById('notice') as HTMLElement;
const bookingEl = document.getElementById('booking') as HTMLElement;
const titleEl = document.getElementById('title-name') as HTMLElement;
const windowEl = document.getElementById('window') as HTMLElement;
const countdownBox = document.getElementById('countdown-box') as HTMLElement;
const countdownEl = document.getElementById('countdown') as HTMLElement;
const stateEl = document.getElementById('state') as HTMLElement;
const hintEl = document.getElementById('hint') as HTMLElement;
const goEl = document.getElementById('go') as HTMLAnchorElement;
const cancelEl = document.getElementById('cancel') as HTMLButtonElement;
const errorEl = document.getElementById('error') as HTMLElement;

const match = /^\/book\/([^/]+)\/?$/.exec(window.location.pathname);
const sessionId = match ? decodeURIComponent(match[1]) : null;
const credential = sessionId ? getSessionKey(sessionId) : null;

let session: Session | null = null;
let titleName: string | null = null;
let notice: { key: Key; params?: Record<string, string> } | null = { key: 'book.loading' };
let leaving = false;

const pad = (n: number): string => String(n).padStart(2, '0');

/** Seconds as "1 day 02:03:04", "02:03:04" or "03:04". */
export function countdownText(seconds: number): string {
    const s = Math.max(0, Math.ceil(seconds));
    const days = Math.floor(s / 86_400);
    const h = Math.floor((s % 86_400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const clock = h > 0 || days > 0 ? `${pad(h)}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
    return days > 0 ? `${t('book.days', { n: days })} ${clock}` : clock;
}

function reasonWords(s: Session): string {
    const r = s.end_reason ?? 'stopped';
    const key = `reason.${r}` as Key;
    return t(key);
}

function render(): void {
    document.title = t('book.pageTitle');
    noticeEl.hidden = notice === null;
    if (notice) noticeEl.textContent = t(notice.key, notice.params);
    const s = session;
    bookingEl.hidden = s === null;
    if (!s) return;
    titleEl.textContent = titleName ?? s.title_id;
    const start = s.start_at ? new Date(s.start_at) : null;
    const end = start && s.duration ? new Date(start.getTime() + s.duration * 1000) : null;
    windowEl.textContent =
        start && end ? t('book.windowValue', { start: formatDateTime(start.toISOString()), end: formatDateTime(end.toISOString()) }) : '';
    const over = s.state === 'ended' || s.state === 'failed';
    const running = s.state === 'starting' || s.state === 'ready';
    countdownBox.hidden = s.state !== 'scheduled';
    hintEl.hidden = over;
    goEl.hidden = !running;
    goEl.href = `/play/${encodeURIComponent(s.id)}`;
    cancelEl.hidden = over || running;
    document.body.dataset.state = s.state;
    if (s.state === 'scheduled') stateEl.textContent = '';
    else if (s.state === 'starting') stateEl.textContent = t('book.starting');
    else if (s.state === 'ready') stateEl.textContent = t('book.ready');
    else if (over) stateEl.textContent = t('book.ended', { why: reasonWords(s) });
    else stateEl.textContent = t(`state.${s.state}` as Key);
    tick();
}

/** The countdown, every second. */
function tick(): void {
    const s = session;
    if (!s || s.state !== 'scheduled' || !s.start_at) return;
    const left = (new Date(s.start_at).getTime() - Date.now()) / 1000;
    countdownEl.textContent = countdownText(left);
    countdownEl.dataset.seconds = String(Math.max(0, Math.ceil(left)));
    countdownEl.setAttribute('aria-label', t('book.startsInAria', { time: countdownEl.textContent }));
}

async function load(): Promise<void> {
    if (!sessionId || leaving) return;
    try {
        const s = await api<Session>('GET', `/api/v1/sessions/${encodeURIComponent(sessionId)}`, undefined, credential);
        session = s;
        notice = null;
        if (titleName === null) {
            titleName = s.title_id;
            void api<Title>('GET', `/api/v1/titles/${encodeURIComponent(s.title_id)}`)
                .then((title) => {
                    titleName = title.name || title.id;
                    render();
                })
                .catch(() => undefined);
        }
        render();
        // Started: the player page takes over (also for whoever comes late, inside the window).
        if (s.state === 'starting' || s.state === 'ready') {
            leaving = true;
            window.location.assign(`/play/${encodeURIComponent(s.id)}`);
        }
    } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
            session = null;
            notice = { key: 'book.notFound' };
            render();
            return;
        }
        errorEl.textContent = errorMessage(e);
    }
}

function schedule(): void {
    const s = session;
    const soon = s?.state === 'scheduled' && s.start_at && new Date(s.start_at).getTime() - Date.now() < 60_000;
    window.setTimeout(
        () => {
            void load().then(() => {
                if (session && (session.state === 'ended' || session.state === 'failed')) return;
                if (notice?.key === 'book.notFound') return;
                schedule();
            });
        },
        soon ? 1_000 : POLL_MS
    );
}

cancelEl.addEventListener('click', () => {
    if (!session || !window.confirm(t('book.confirmCancel'))) return;
    cancelEl.disabled = true;
    cancelEl.textContent = t('book.cancelling');
    void api<Session>('DELETE', `/api/v1/sessions/${encodeURIComponent(session.id)}`, undefined, credential)
        .then((s) => {
            session = s;
            render();
        })
        .catch((e) => (errorEl.textContent = errorMessage(e)))
        .finally(() => {
            cancelEl.disabled = false;
            cancelEl.textContent = t('book.cancel');
        });
});

document.documentElement.lang = getLang();
applyTranslations(document);
(document.getElementById('lang') as HTMLElement).replaceWith(languageSwitch());
onLangChange(() => {
    applyTranslations(document);
    render();
});
if (!sessionId) {
    notice = { key: 'book.noId' };
    render();
} else {
    void load().then(schedule);
    window.setInterval(tick, 1_000);
}
