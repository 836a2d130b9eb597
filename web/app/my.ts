// "My sessions" (`/my`): the sessions of this browser's user, grouped as running, waiting in line,
// booked and recent, each with the way back to it (the player page, or the booking page). An
// anonymous user's sessions are the ones whose keys this browser holds (`pxs_key:<id>` in
// localStorage, kept by the catalog and the player page), each read with its key; a signed-in
// user's are also the token's own (`GET /api/v1/sessions`). Refreshed every REFRESH_MS.
import { ApiError, api, errorMessage, getToken, type Session, type Title } from './api';
import { applyTranslations, formatDateTime, getLang, languageSwitch, onLangChange, t, type Key } from './i18n';
import { waitText } from './waiting';

const REFRESH_MS = 5_000;
const RECENT = 10;
const KEY_PREFIX = 'pxs_key:';

const noticeEl = document.getElementById('notice') as HTMLElement;
const groupsEl = document.getElementById('groups') as HTMLElement;

let sessions: Session[] | null = null;
let failure: string | null = null;
const titleNames = new Map<string, string>();

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
}

/** The sessions this browser holds a key for: id → key. */
function heldKeys(): Map<string, string> {
    const out = new Map<string, string>();
    try {
        for (let i = 0; i < window.localStorage.length; i++) {
            const name = window.localStorage.key(i);
            if (!name || !name.startsWith(KEY_PREFIX)) continue;
            const key = window.localStorage.getItem(name);
            if (key && key.trim()) out.set(name.slice(KEY_PREFIX.length), key.trim());
        }
    } catch {
        // no storage: nothing held
    }
    return out;
}

/** Forgets the key of a session that is gone (404 with it: revoked link, or a lost database). */
function forgetKey(id: string): void {
    try {
        window.localStorage.removeItem(KEY_PREFIX + id);
    } catch {
        // nothing to forget
    }
}

async function load(): Promise<void> {
    const found = new Map<string, Session>();
    let problem: string | null = null;
    if (getToken()) {
        try {
            const list = await api<{ items: Session[] }>('GET', '/api/v1/sessions?limit=50');
            for (const s of list.items ?? []) found.set(s.id, s);
        } catch (e) {
            problem = errorMessage(e);
        }
    }
    await Promise.all(
        [...heldKeys()].map(async ([id, key]) => {
            if (found.has(id)) return;
            try {
                found.set(id, await api<Session>('GET', `/api/v1/sessions/${encodeURIComponent(id)}`, undefined, key));
            } catch (e) {
                if (e instanceof ApiError && e.status === 404) forgetKey(id);
                else if (!(e instanceof ApiError && e.status === 401)) problem = errorMessage(e);
            }
        })
    );
    sessions = [...found.values()];
    failure = problem;
    await Promise.all(
        [...new Set(sessions.map((s) => s.title_id))]
            .filter((id) => !titleNames.has(id))
            .map((id) =>
                api<Title>('GET', `/api/v1/titles/${encodeURIComponent(id)}`)
                    .then((title) => titleNames.set(id, title.name || id))
                    .catch(() => titleNames.set(id, id))
            )
    );
    render();
}

const newest = (a: string | null, b: string | null): number => (b ?? '').localeCompare(a ?? '');

function render(): void {
    document.title = t('my.pageTitle');
    if (sessions === null) return;
    const groups: Array<{ key: Key; id: string; items: Session[] }> = [
        { key: 'my.live', id: 'live', items: sessions.filter((s) => s.state === 'starting' || s.state === 'ready') },
        { key: 'my.queued', id: 'queued', items: sessions.filter((s) => s.state === 'queued') },
        {
            key: 'my.booked',
            id: 'booked',
            items: sessions.filter((s) => s.state === 'scheduled').sort((a, b) => -newest(a.start_at, b.start_at))
        },
        {
            key: 'my.recent',
            id: 'recent',
            items: sessions
                .filter((s) => s.state === 'ended' || s.state === 'failed')
                .sort((a, b) => newest(a.ended_at, b.ended_at))
                .slice(0, RECENT)
        }
    ];
    const none = sessions.length === 0;
    noticeEl.hidden = !none && failure === null;
    noticeEl.classList.toggle('error', failure !== null);
    noticeEl.textContent = failure !== null ? t('my.loadFailed', { message: failure }) : none ? t('my.none') : '';
    groupsEl.replaceChildren(
        ...(none
            ? []
            : groups.map((g) => {
                  const section = el('section', 'group');
                  section.dataset.testid = `my-${g.id}`;
                  section.append(el('h2', undefined, t(g.key)));
                  if (g.items.length === 0) section.append(el('p', 'muted', t('my.noneIn')));
                  else {
                      const list = el('ul');
                      for (const s of g.items) list.append(row(s));
                      section.append(list);
                  }
                  return section;
              }))
    );
    document.body.dataset.loaded = 'true';
}

function row(s: Session): HTMLElement {
    const li = el('li', 'session-row');
    li.dataset.testid = `my-session-${s.id}`;
    const name = el('strong', undefined, titleNames.get(s.title_id) ?? s.title_id);
    name.translate = false;
    const detail = el('span', 'muted');
    let text = '';
    if (s.state === 'queued') text = [s.queue_position ? t('my.position', { n: s.queue_position }) : '', waitText(s) ?? ''].filter(Boolean).join(' · ');
    else if (s.state === 'scheduled' && s.start_at) text = t('my.startsAt', { time: formatDateTime(s.start_at) });
    else if ((s.state === 'ready' || s.state === 'starting') && (s.ready_at ?? s.created_at))
        text = t('my.startedAt', { time: formatDateTime(s.ready_at ?? s.created_at) });
    else if (s.ended_at) text = t('my.endedAt', { time: formatDateTime(s.ended_at), why: t(`reason.${s.end_reason ?? 'stopped'}` as Key) });
    detail.textContent = text;
    li.append(name, detail);
    if (s.state !== 'ended' && s.state !== 'failed') {
        const open = el('a', 'button small', t('my.open'));
        open.href = s.state === 'scheduled' ? `/book/${encodeURIComponent(s.id)}` : `/play/${encodeURIComponent(s.id)}`;
        open.dataset.testid = `my-open-${s.id}`;
        li.append(open);
    }
    return li;
}

document.documentElement.lang = getLang();
applyTranslations(document);
(document.getElementById('lang') as HTMLElement).replaceWith(languageSwitch());
onLangChange(() => {
    applyTranslations(document);
    render();
});
void load();
window.setInterval(() => {
    if (document.visibilityState === 'visible') void load();
}, REFRESH_MS);
