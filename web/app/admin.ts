// The admin console (`/admin`): nodes, live sessions, session history, titles, tokens and live
// charts, over the coordinator's REST API v1 with an admin token. The page holds no power of its
// own: every call carries the token and the API checks it. Every string comes from i18n.ts.
import { ApiError, api, type Title } from './api';
import {
    END_REASONS,
    LIVE_STATES,
    type AdminSession,
    type AdminTitle,
    type CreatedToken,
    type Metrics,
    type Node as CoordNode,
    type Role,
    type TokenInfo
} from './admin-api';
import {
    applyTranslations,
    formatDateTime,
    formatDuration,
    formatRelative,
    getLang,
    languageSwitch,
    onLangChange,
    t,
    type Key
} from './i18n';

const REFRESH_MS = 3_000;
const CHART_POINTS = 60;
const TOKEN_KEY = 'pxs_admin_token';

// ---------------------------------------------------------------------------------------------
// The admin token: sessionStorage (this tab) unless the admin asks to be remembered (localStorage).

function storedToken(): string | null {
    for (const store of [() => window.sessionStorage, () => window.localStorage]) {
        try {
            const v = store().getItem(TOKEN_KEY);
            if (v && v.trim()) return v.trim();
        } catch {
            // no storage: ask again
        }
    }
    return null;
}

function storeToken(token: string | null, remember: boolean): void {
    for (const store of [window.sessionStorage, window.localStorage]) {
        try {
            store.removeItem(TOKEN_KEY);
        } catch {
            // nothing stored there
        }
    }
    if (!token) return;
    try {
        (remember ? window.localStorage : window.sessionStorage).setItem(TOKEN_KEY, token);
    } catch {
        // kept in memory only: asked again after a reload
    }
}

let token: string | null = storedToken();

/** An API call with the admin token. */
function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return api<T>(method, path, body, token ?? '');
}

/** A failed call in words: ours for what we can name, else the server's own message. */
function errorWords(e: unknown): string {
    if (e instanceof ApiError) {
        if (e.status === 0) return t('error.network');
        if (e.status === 401) return t('error.unauthorized');
        if (e.status === 403) return t('error.forbidden');
        if (e.status === 429) return t('error.tooMany');
        if (e.status >= 500) return t('error.server', { status: e.status });
        return t('error.refused', { message: e.message });
    }
    return t('error.refused', { message: e instanceof Error ? e.message : String(e) });
}

// ---------------------------------------------------------------------------------------------
// DOM helpers

type Child = Node | string | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
    tag: K,
    props: Partial<Record<string, string | boolean>> = {},
    ...children: Child[]
): HTMLElementTagNameMap[K] {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === false) continue;
        if (k === 'class') node.className = String(v);
        else if (k === 'text') node.textContent = String(v);
        else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'for' || k === 'colspan' || k === 'style' || k === 'translate' || k === 'value') {
            node.setAttribute(k, v === true ? '' : String(v));
        } else (node as unknown as Record<string, unknown>)[k] = v;
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
    return node;
}

/** Data (names, ids, URLs): the same in every language; marked so (`translate="no"`). */
function data_(tag: 'strong' | 'small' | 'td' | 'span', text: string, props: Partial<Record<string, string | boolean>> = {}): HTMLElement {
    return h(tag, { ...props, text, translate: 'no' });
}

/** An element whose text is `key`, kept in the current language by applyTranslations. */
function tx<K extends keyof HTMLElementTagNameMap>(tag: K, key: Key, props: Partial<Record<string, string | boolean>> = {}): HTMLElementTagNameMap[K] {
    const node = h(tag, { ...props, 'data-i18n': key });
    node.textContent = t(key);
    return node;
}

function button(key: Key, onClick: () => void, props: Partial<Record<string, string | boolean>> = {}): HTMLButtonElement {
    const b = tx('button', key, { type: 'button', ...props });
    b.addEventListener('click', onClick);
    return b;
}

/** A labelled field; the input gets `key`'s label and, optionally, a placeholder key. */
function field(labelKey: Key, input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hintKey?: Key): HTMLElement {
    const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
    input.id = id;
    const label = tx('label', labelKey, { for: id });
    const wrap = h('div', { class: 'field' }, label, input);
    if (hintKey) wrap.append(tx('small', hintKey, { class: 'hint' }));
    return wrap;
}

function input(testid: string, props: Partial<Record<string, string | boolean>> = {}): HTMLInputElement {
    return h('input', { type: 'text', autocomplete: 'off', spellcheck: false, 'data-testid': testid, ...props });
}

/** A <select> whose options are translated keys (value → key). */
function select(testid: string, options: Array<[string, Key]>): HTMLSelectElement {
    const s = h('select', { 'data-testid': testid });
    for (const [value, key] of options) s.append(tx('option', key, { value }));
    return s;
}

function table(headKeys: Key[], testid: string): { root: HTMLElement; body: HTMLTableSectionElement } {
    const body = h('tbody', { 'data-testid': testid });
    const head = h('tr');
    for (const k of headKeys) head.append(tx('th', k, { scope: 'col' }));
    const root = h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, head), body));
    return { root, body };
}

function emptyRow(body: HTMLTableSectionElement, columns: number, key: Key): void {
    body.replaceChildren(h('tr', { class: 'empty' }, h('td', { colspan: String(columns), text: t(key) })));
}

function badge(text: string, tone: string, testid?: string): HTMLElement {
    return h('span', { class: `badge ${tone}`, text, 'data-testid': testid ?? false });
}

const secondsSince = (iso: string | null | undefined): number | null => {
    if (!iso) return null;
    const at = Date.parse(iso);
    return Number.isNaN(at) ? null : Math.max(0, (Date.now() - at) / 1000);
};

// ---------------------------------------------------------------------------------------------
// Words for states and reasons

const SESSION_STATE_KEYS: Record<string, Key> = {
    scheduled: 'state.scheduled',
    queued: 'state.queued',
    starting: 'state.starting',
    ready: 'state.ready',
    ended: 'state.ended',
    failed: 'state.failed'
};
const NODE_STATE_KEYS: Record<string, Key> = {
    online: 'nodeState.online',
    offline: 'nodeState.offline',
    draining: 'nodeState.draining',
    drained: 'nodeState.drained'
};
const REASON_KEYS: Record<(typeof END_REASONS)[number], Key> = {
    cancelled: 'reason.cancelled',
    stopped: 'reason.stopped',
    window_end: 'reason.window_end',
    window_missed: 'reason.window_missed',
    node_lost: 'reason.node_lost',
    no_capacity: 'reason.no_capacity',
    idle: 'reason.idle',
    empty: 'reason.empty',
    max_duration: 'reason.max_duration',
    exited: 'reason.exited',
    crashed: 'reason.crashed',
    start_timeout: 'reason.start_timeout',
    spawn_failed: 'reason.spawn_failed',
    rejected: 'reason.rejected',
    drained: 'reason.drained',
    node_shutdown: 'reason.node_shutdown',
    node_restart: 'reason.node_restart'
};
const stateWords = (s: string): string => (SESSION_STATE_KEYS[s] ? t(SESSION_STATE_KEYS[s]) : s);
const nodeStateWords = (s: string): string => (NODE_STATE_KEYS[s] ? t(NODE_STATE_KEYS[s]) : s);
function reasonWords(s: AdminSession): string {
    if (!s.end_reason) return '—';
    let words = s.end_reason in REASON_KEYS ? t(REASON_KEYS[s.end_reason as keyof typeof REASON_KEYS]) : s.end_reason;
    if (s.end_reason === 'stopped' && s.ended_by === 'admin') words = t('reason.stoppedByAdmin');
    if (s.end_reason === 'stopped' && s.ended_by === 'owner') words = t('reason.stoppedByOwner');
    if (s.exit_code !== null && s.exit_code !== 0) words += ` (${t('history.exitCode', { code: s.exit_code })})`;
    return words;
}
const STATE_TONE: Record<string, string> = {
    ready: 'ok', starting: 'busy', queued: 'busy', scheduled: 'info', ended: 'off', failed: 'bad',
    online: 'ok', draining: 'busy', drained: 'info', offline: 'bad'
};

// ---------------------------------------------------------------------------------------------
// What the console knows

interface Data {
    nodes: CoordNode[];
    live: AdminSession[];
    history: AdminSession[];
    titles: AdminTitle[];
    apiTokens: TokenInfo[];
    nodeTokens: TokenInfo[];
    metrics: Metrics[];
}
const data: Data = { nodes: [], live: [], history: [], titles: [], apiTokens: [], nodeTokens: [], metrics: [] };

const SECTIONS = ['overview', 'nodes', 'sessions', 'history', 'titles', 'tokens'] as const;
type Section = (typeof SECTIONS)[number];
const SECTION_KEYS: Record<Section, Key> = {
    overview: 'nav.overview',
    nodes: 'nav.nodes',
    sessions: 'nav.sessions',
    history: 'nav.history',
    titles: 'nav.titles',
    tokens: 'nav.tokens'
};

const sectionOf = (): Section => {
    const s = window.location.hash.replace(/^#/, '');
    return (SECTIONS as readonly string[]).includes(s) ? (s as Section) : 'overview';
};

// ---------------------------------------------------------------------------------------------
// The page's frame

const root = document.getElementById('app') as HTMLElement;
const notice = h('div', { class: 'notice', role: 'status', 'data-testid': 'notice', hidden: true });
const sectionEls = new Map<Section, HTMLElement>();
const tabEls = new Map<Section, HTMLAnchorElement>();

/** What the notice says, made again in the current language whenever it is drawn. */
let noticeText: (() => string) | null = null;

function say(text: (() => string) | null, error = false): void {
    noticeText = text;
    notice.hidden = text === null;
    notice.classList.toggle('error', error);
    notice.dataset.stale = 'false';
    drawNotice();
}

function drawNotice(): void {
    notice.textContent = noticeText ? noticeText() : '';
}

const signOut = button('admin.signOut', () => {
    token = null;
    storeToken(null, false);
    showLogin(null);
}, { class: 'secondary small', 'data-testid': 'sign-out', hidden: true });

const topbar = h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, 'p', h('span', { text: 'x' }), 's'),
    tx('span', 'admin.heading', { class: 'page-name' }),
    h('div', { class: 'spacer' }),
    tx('a', 'nav.catalog', { href: '/', class: 'quiet' }),
    tx('a', 'nav.api', { href: '/admin/api', class: 'quiet', 'data-testid': 'api-link' }),
    languageSwitch(),
    signOut
);

// ---- login
const loginToken = input('login-token', { type: 'password', 'data-i18n-placeholder': 'login.placeholder' });
const loginRemember = h('input', { type: 'checkbox', 'data-testid': 'login-remember' });
const loginError = h('p', { class: 'error', role: 'alert', 'data-testid': 'login-error' });
const loginForm = h(
    'form',
    { class: 'login panel-box', autocomplete: 'off', 'data-testid': 'login' },
    tx('h1', 'login.title'),
    tx('p', 'login.lead', { class: 'lead' }),
    field('login.token', loginToken),
    h('label', { class: 'check' }, loginRemember, tx('span', 'login.remember')),
    h('div', { class: 'actions' }, tx('button', 'login.submit', { type: 'submit', 'data-testid': 'login-submit' })),
    loginError
);
loginForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void signIn(loginToken.value.trim(), loginRemember.checked);
});

const consoleEl = h('div', { class: 'console', hidden: true, 'data-testid': 'console' });
const nav = h('nav', { class: 'tabs' });
for (const s of SECTIONS) {
    const a = tx('a', SECTION_KEYS[s], { href: `#${s}`, 'data-testid': `tab-${s}` });
    tabEls.set(s, a);
    nav.append(a);
}
consoleEl.append(nav, notice);

root.append(topbar, h('main', { class: 'admin-main' }, loginForm, consoleEl));

function showLogin(message: Key | null): void {
    loginForm.hidden = false;
    consoleEl.hidden = true;
    signOut.hidden = true;
    loginError.textContent = message ? t(message) : '';
    loginError.dataset.key = message ?? '';
    document.body.dataset.signedIn = 'false';
    loginToken.focus();
}

async function signIn(candidate: string, remember: boolean): Promise<void> {
    if (!candidate) {
        showLogin('login.empty');
        return;
    }
    // An admin-only read says whether the token is an admin's.
    try {
        await api('GET', '/api/v1/tokens', undefined, candidate);
    } catch (e) {
        if (e instanceof ApiError && e.status === 401) return showLogin('login.invalid');
        if (e instanceof ApiError && e.status === 403) return showLogin('login.notAdmin');
        loginError.dataset.key = '';
        loginError.textContent = errorWords(e);
        return;
    }
    token = candidate;
    storeToken(candidate, remember);
    loginToken.value = '';
    loginError.textContent = '';
    loginForm.hidden = true;
    consoleEl.hidden = false;
    signOut.hidden = false;
    document.body.dataset.signedIn = 'true';
    showSection();
    await refresh(true);
}

// ---------------------------------------------------------------------------------------------
// Overview: live charts of GET /api/v1/metrics

interface Series {
    key: Key;
    color: string;
    value: (m: Metrics, prev: Metrics | undefined) => number | null;
}

const SESSION_SERIES: Series[] = [
    { key: 'state.ready', color: 'var(--ok)', value: (m) => m.sessions.ready ?? 0 },
    { key: 'state.starting', color: 'var(--accent)', value: (m) => m.sessions.starting ?? 0 },
    { key: 'state.queued', color: 'var(--busy)', value: (m) => m.sessions.queued ?? 0 },
    { key: 'state.scheduled', color: 'var(--off)', value: (m) => m.sessions.scheduled ?? 0 }
];
const QUEUE_SERIES: Series[] = [{ key: 'chart.queue', color: 'var(--busy)', value: (m) => m.queue_length }];
/** The mean start time of the sessions that started between two readings (none: a gap). */
const LATENCY_SERIES: Series[] = [
    {
        key: 'chart.latency',
        color: 'var(--accent)',
        value: (m, prev) => {
            if (!prev) return null;
            const n = m.session_start_seconds.count - prev.session_start_seconds.count;
            return n > 0 ? (m.session_start_seconds.sum - prev.session_start_seconds.sum) / n : null;
        }
    }
];

interface Chart {
    root: HTMLElement;
    svg: SVGSVGElement;
    legend: HTMLElement;
    series: Series[];
    big: HTMLElement;
    bigValue: (m: Metrics) => string;
}

function chart(titleKey: Key, testid: string, series: Series[], bigValue: (m: Metrics) => string): Chart {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 300 70');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('aria-hidden', 'true');
    const big = h('div', { class: 'big', 'data-testid': `${testid}-value` });
    const legend = h('div', { class: 'legend' });
    const root = h('div', { class: 'chart panel-box', 'data-testid': testid }, tx('h3', titleKey), big, svg, legend);
    return { root, svg, legend, series, big, bigValue };
}

const charts: Chart[] = [
    chart('chart.sessions', 'chart-sessions', SESSION_SERIES, (m) => String(LIVE_STATES.reduce((n, s) => n + (m.sessions[s] ?? 0), 0))),
    chart('chart.queue', 'chart-queue', QUEUE_SERIES, (m) => String(m.queue_length)),
    chart('chart.latency', 'chart-latency', LATENCY_SERIES, (m) =>
        m.session_start_seconds.count > 0
            ? t('unit.seconds', { n: (m.session_start_seconds.sum / m.session_start_seconds.count).toFixed(2) })
            : '—'
    )
];
const nodeCounts = h('div', { class: 'counts', 'data-testid': 'node-counts' });

function drawChart(c: Chart): void {
    const samples = data.metrics;
    const last = samples[samples.length - 1];
    c.big.textContent = last ? c.bigValue(last) : '—';
    const lines = c.series.map((s) => samples.map((m, i) => s.value(m, samples[i - 1])));
    const max = Math.max(1, ...lines.flat().map((v) => v ?? 0));
    const x = (i: number): number => (CHART_POINTS <= 1 ? 0 : (300 * (i + CHART_POINTS - samples.length)) / (CHART_POINTS - 1));
    const y = (v: number): number => 66 - (62 * v) / max;
    const parts: SVGElement[] = [];
    lines.forEach((values, li) => {
        let run: string[] = [];
        const flush = (): void => {
            if (run.length === 1) {
                const [px, py] = run[0].split(',');
                const dot = document.createElementNS('http://www.w3.org/2000/svg', 'circle');
                dot.setAttribute('cx', px);
                dot.setAttribute('cy', py);
                dot.setAttribute('r', '2');
                dot.setAttribute('fill', c.series[li].color);
                parts.push(dot);
            } else if (run.length > 1) {
                const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
                line.setAttribute('points', run.join(' '));
                line.setAttribute('fill', 'none');
                line.setAttribute('stroke', c.series[li].color);
                line.setAttribute('stroke-width', '2');
                line.setAttribute('vector-effect', 'non-scaling-stroke');
                parts.push(line);
            }
            run = [];
        };
        values.forEach((v, i) => {
            if (v === null) flush();
            else run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
        });
        flush();
    });
    c.svg.replaceChildren(...parts);
    c.legend.replaceChildren(
        ...c.series.map((s, i) => {
            const v = lines[i][lines[i].length - 1];
            return h('span', {}, h('i', { style: `background:${s.color}` }), `${t(s.key)}: ${v === null || v === undefined ? '—' : Number.isInteger(v) ? v : v.toFixed(2)}`);
        })
    );
}

function drawOverview(): void {
    for (const c of charts) drawChart(c);
    const last = data.metrics[data.metrics.length - 1];
    nodeCounts.replaceChildren(
        ...(['online', 'draining', 'drained', 'offline'] as const).map((s) =>
            h('div', { class: 'count' }, h('strong', { text: String(last?.nodes[s] ?? 0) }), h('span', { text: nodeStateWords(s) }))
        )
    );
}

const overview = h(
    'section',
    { 'data-testid': 'section-overview' },
    tx('h2', 'overview.title'),
    tx('p', 'overview.lead', { class: 'lead' }),
    h('div', { class: 'charts' }, ...charts.map((c) => c.root)),
    tx('h3', 'overview.nodes'),
    nodeCounts
);

// ---------------------------------------------------------------------------------------------
// Nodes

const drainDeadline = select('drain-deadline', [
    ['', 'nodes.deadline.none'],
    ['300', 'nodes.deadline.5min'],
    ['900', 'nodes.deadline.15min'],
    ['3600', 'nodes.deadline.1h']
]);
const nodesTable = table(
    ['nodes.col.node', 'nodes.col.state', 'nodes.col.sessions', 'nodes.col.gpus', 'nodes.col.applications', 'nodes.col.heartbeat', 'nodes.col.actions'],
    'nodes'
);
const nodesSection = h(
    'section',
    { 'data-testid': 'section-nodes' },
    tx('h2', 'nodes.title'),
    tx('p', 'nodes.lead', { class: 'lead' }),
    h('div', { class: 'toolbar' }, field('nodes.deadline', drainDeadline)),
    nodesTable.root
);

function drawNodes(): void {
    if (data.nodes.length === 0) return emptyRow(nodesTable.body, 7, 'nodes.none');
    nodesTable.body.replaceChildren(
        ...data.nodes.map((n) => {
            const draining = n.state === 'draining' || n.state === 'drained';
            const stateCell = h('td', {}, badge(nodeStateWords(n.state), STATE_TONE[n.state] ?? 'off', `node-state-${n.id}`));
            if (n.drain_deadline) stateCell.append(h('small', { class: 'sub', text: t('nodes.until', { time: formatDateTime(n.drain_deadline) }) }));
            const gpus = n.gpus.length
                ? h('td', {}, ...n.gpus.map((g) => h('span', { class: 'line' }, data_('span', `${g.index}: ${g.name}`), g.memory_total_mb ? ` (${Math.round(g.memory_total_mb / 1024)} ${t('unit.gib')})` : '')))
                : h('td', { text: t('nodes.noGpus') });
            const seen = secondsSince(n.last_heartbeat);
            const actions = h('td', { class: 'actions' });
            if (draining) actions.append(button('nodes.resume', () => void nodeAction(n.id, 'resume'), { class: 'small', 'data-testid': `resume-${n.id}` }));
            else actions.append(button('nodes.drain', () => void nodeAction(n.id, 'drain'), { class: 'small secondary', 'data-testid': `drain-${n.id}` }));
            return h(
                'tr',
                { 'data-testid': `node-${n.id}` },
                h('td', {}, data_('strong', n.id), data_('small', `${n.version} · ${n.public_url}`, { class: 'sub' })),
                stateCell,
                h(
                    'td',
                    {},
                    t('nodes.sessionsOf', { n: n.sessions, max: n.max_sessions }),
                    h('small', { class: 'sub', text: t('nodes.freeReserved', { free: n.free_slots, reserved: n.reserved }) })
                ),
                gpus,
                data_('td', n.applications.join(', ') || '—'),
                h('td', { text: seen === null ? '—' : formatRelative(-seen) }),
                actions
            );
        })
    );
}

async function nodeAction(id: string, action: 'drain' | 'resume'): Promise<void> {
    try {
        const deadline = drainDeadline.value;
        const body = action === 'drain' && deadline ? { deadline: Number(deadline) } : undefined;
        await call('POST', `/api/v1/nodes/${encodeURIComponent(id)}/${action}`, body);
        say(() => t(action === 'drain' ? 'nodes.drained' : 'nodes.resumed', { node: id }));
    } catch (e) {
        say(() => errorWords(e), true);
    }
    await refresh(false);
}

// ---------------------------------------------------------------------------------------------
// Live sessions

const liveTable = table(
    ['sessions.col.title', 'sessions.col.state', 'sessions.col.node', 'sessions.col.owner', 'sessions.col.players', 'sessions.col.age', 'sessions.col.actions'],
    'live-sessions'
);
const liveSection = h(
    'section',
    { 'data-testid': 'section-sessions' },
    tx('h2', 'sessions.title'),
    tx('p', 'sessions.lead', { class: 'lead' }),
    liveTable.root
);

const titleName = (id: string): string => data.titles.find((x) => x.id === id)?.name || id;
/** Who created a session: the name of its creator's token (data), or "anonymous" (words). */
function ownerCell(owner: string | undefined): HTMLElement {
    if (!owner) return h('td', { text: '—' });
    if (owner === 'anonymous') return h('td', { text: t('owner.anonymous') });
    const tok = data.apiTokens.find((x) => x.id === owner);
    return data_('td', tok ? tok.name : owner, { 'data-testid': 'owner' });
}

function drawLive(): void {
    if (data.live.length === 0) return emptyRow(liveTable.body, 7, 'sessions.none');
    liveTable.body.replaceChildren(
        ...data.live.map((s) => {
            const age = secondsSince(s.created_at);
            let stateText = stateWords(s.state);
            if (s.state === 'queued' && s.queue_position) stateText += ` · ${t('sessions.position', { n: s.queue_position })}`;
            if (s.state === 'scheduled' && s.start_at) stateText += ` · ${formatDateTime(s.start_at)}`;
            return h(
                'tr',
                { 'data-testid': `session-${s.id}` },
                h('td', {}, data_('strong', titleName(s.title_id)), data_('small', s.id, { class: 'sub' })),
                h('td', {}, badge(stateText, STATE_TONE[s.state] ?? 'off', `session-state-${s.id}`)),
                data_('td', s.node_id ?? '—'),
                ownerCell(s.owner),
                h('td', { text: s.players === undefined ? t('sessions.unknown') : String(s.players) }),
                h('td', { text: age === null ? '—' : formatDuration(age) }),
                h('td', { class: 'actions' }, button('sessions.end', () => void endSession(s), { class: 'small danger', 'data-testid': `end-${s.id}` }))
            );
        })
    );
}

async function endSession(s: AdminSession): Promise<void> {
    if (!window.confirm(t('sessions.confirmEnd', { title: titleName(s.title_id), id: s.id }))) return;
    try {
        await call('DELETE', `/api/v1/sessions/${encodeURIComponent(s.id)}`);
        say(() => t('sessions.ending', { id: s.id }));
    } catch (e) {
        say(() => errorWords(e), true);
    }
    await refresh(false);
}

// ---------------------------------------------------------------------------------------------
// History

const historyState = select('history-state', [
    ['', 'history.anyEnd'],
    ['ended', 'state.ended'],
    ['failed', 'state.failed']
]);
const historyReason = select('history-reason', [['', 'history.anyReason'], ...END_REASONS.map((r): [string, Key] => [r, REASON_KEYS[r]])]);
const historyTitle = h('select', { 'data-testid': 'history-title' });
const historyNode = h('select', { 'data-testid': 'history-node' });
const historyTable = table(
    ['sessions.col.title', 'sessions.col.state', 'history.col.reason', 'sessions.col.node', 'sessions.col.owner', 'history.col.started', 'history.col.length'],
    'history'
);
const historySection = h(
    'section',
    { 'data-testid': 'section-history' },
    tx('h2', 'history.title'),
    tx('p', 'history.lead', { class: 'lead' }),
    h(
        'div',
        { class: 'toolbar' },
        field('history.state', historyState),
        field('history.reason', historyReason),
        field('history.titleFilter', historyTitle),
        field('history.nodeFilter', historyNode)
    ),
    historyTable.root
);
for (const s of [historyState, historyReason, historyTitle, historyNode]) s.addEventListener('change', () => void refresh(false));

/** Keeps a filter's options (an "any" first) in step with `values`, keeping the choice. */
function fillFilter(s: HTMLSelectElement, values: Array<[string, string]>): void {
    // Unchanged: left alone, so an open list does not close under the user's pointer.
    const signature = JSON.stringify([getLang(), values]);
    if (s.dataset.signature === signature) return;
    s.dataset.signature = signature;
    const chosen = s.value;
    const any = tx('option', 'history.any', { value: '' });
    s.replaceChildren(any, ...values.map(([v, label]) => h('option', { value: v, text: label, translate: 'no' })));
    if ([...s.options].some((o) => o.value === chosen)) s.value = chosen;
}

const HISTORY_LIMIT = 200;

/** The history's queries: one per outcome asked for (ended, failed), the other filters on each. */
function historyQueries(): string[] {
    return (historyState.value ? [historyState.value] : ['ended', 'failed']).map((state) => {
        const q = historyQuery();
        q.set('state', state);
        return q.toString();
    });
}

function historyQuery(): URLSearchParams {
    const q = new URLSearchParams({ limit: String(HISTORY_LIMIT) });
    if (historyReason.value) q.set('end_reason', historyReason.value);
    if (historyTitle.value) q.set('title_id', historyTitle.value);
    if (historyNode.value) q.set('node_id', historyNode.value);
    return q;
}

function drawHistory(): void {
    fillFilter(historyTitle, data.titles.map((x) => [x.id, x.name || x.id]));
    fillFilter(historyNode, data.nodes.map((n) => [n.id, n.id]));
    const rows = data.history.filter((s) => s.state === 'ended' || s.state === 'failed');
    if (rows.length === 0) return emptyRow(historyTable.body, 7, 'history.none');
    historyTable.body.replaceChildren(
        ...rows.map((s) => {
            const start = s.ready_at ?? s.created_at;
            const length = s.ended_at && s.ready_at ? (Date.parse(s.ended_at) - Date.parse(s.ready_at)) / 1000 : null;
            return h(
                'tr',
                { 'data-testid': `history-${s.id}` },
                h('td', {}, data_('strong', titleName(s.title_id)), data_('small', s.id, { class: 'sub' })),
                h('td', {}, badge(stateWords(s.state), STATE_TONE[s.state] ?? 'off')),
                h('td', { text: reasonWords(s), 'data-testid': `history-reason-${s.id}` }),
                data_('td', s.node_id ?? '—'),
                ownerCell(s.owner),
                h('td', { text: formatDateTime(start) }),
                h('td', { text: length === null ? '—' : formatDuration(length) })
            );
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Titles

const tf = {
    id: input('title-id', { 'data-i18n-placeholder': 'titles.idPlaceholder' }),
    name: input('title-name', { required: true }),
    application: input('title-application', { required: true }),
    image: input('title-image', { type: 'url', placeholder: 'https://…' }),
    description: h('textarea', { rows: '2', 'data-testid': 'title-description' }),
    visibility: select('title-visibility', [
        ['public', 'titles.public'],
        ['private', 'titles.private']
    ]),
    maxPlayers: input('title-max-players', { type: 'number', min: '0', value: '0' }),
    idle: input('title-idle', { type: 'number', min: '0', value: '600' }),
    empty: input('title-empty', { type: 'number', min: '0', value: '120' }),
    maxDuration: input('title-max-duration', { type: 'number', min: '0', value: '0' })
};
let editing: string | null = null;
const titleFormHeading = tx('h3', 'titles.new');
const titleSubmit = tx('button', 'titles.create', { type: 'submit', 'data-testid': 'title-save' });
const titleCancel = button('titles.cancel', () => resetTitleForm(), { class: 'secondary', hidden: true, 'data-testid': 'title-cancel' });
const titleError = h('p', { class: 'error', role: 'alert', 'data-testid': 'title-error' });
let titleErrorText: (() => string) | null = null;
function setTitleError(text: (() => string) | null): void {
    titleErrorText = text;
    titleError.textContent = text ? text() : '';
}
const titleForm = h(
    'form',
    { class: 'panel-box form-grid', autocomplete: 'off', 'data-testid': 'title-form' },
    titleFormHeading,
    field('titles.name', tf.name),
    field('titles.id', tf.id, 'titles.idHint'),
    field('titles.application', tf.application, 'titles.applicationHint'),
    field('titles.image', tf.image),
    field('titles.visibility', tf.visibility),
    field('titles.maxPlayers', tf.maxPlayers, 'titles.zeroUnlimited'),
    field('titles.idle', tf.idle),
    field('titles.empty', tf.empty),
    field('titles.maxDuration', tf.maxDuration, 'titles.zeroUnlimited'),
    h('div', { class: 'field wide' }, tx('label', 'titles.description', { for: 'title-description' }), tf.description),
    h('div', { class: 'actions wide' }, titleSubmit, titleCancel),
    titleError
);
tf.description.id = 'title-description';
titleForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void saveTitle();
});

function setTitleMode(key: Key, submitKey: Key): void {
    titleFormHeading.dataset.i18n = key;
    titleFormHeading.textContent = t(key);
    titleSubmit.dataset.i18n = submitKey;
    titleSubmit.textContent = t(submitKey);
}

function resetTitleForm(): void {
    editing = null;
    titleForm.reset();
    tf.id.disabled = false;
    titleCancel.hidden = true;
    setTitleError(null);
    setTitleMode('titles.new', 'titles.create');
}

function editTitle(x: AdminTitle): void {
    editing = x.id;
    tf.id.value = x.id;
    tf.id.disabled = true;
    tf.name.value = x.name;
    tf.application.value = x.application_id;
    tf.image.value = x.image_url ?? '';
    tf.description.value = x.description;
    tf.visibility.value = x.visibility;
    tf.maxPlayers.value = String(x.max_players);
    tf.idle.value = String(x.idle_timeout);
    tf.empty.value = String(x.empty_timeout);
    tf.maxDuration.value = String(x.max_duration);
    titleCancel.hidden = false;
    setTitleError(null);
    setTitleMode('titles.edit', 'titles.save');
    tf.name.focus();
    titleForm.scrollIntoView({ block: 'nearest' });
}

const whole = (i: HTMLInputElement): number => Math.max(0, Math.floor(Number(i.value) || 0));

async function saveTitle(): Promise<void> {
    setTitleError(null);
    const body: Record<string, unknown> = {
        name: tf.name.value.trim(),
        description: tf.description.value,
        application_id: tf.application.value.trim(),
        visibility: tf.visibility.value,
        max_players: whole(tf.maxPlayers),
        idle_timeout: whole(tf.idle),
        empty_timeout: whole(tf.empty),
        max_duration: whole(tf.maxDuration)
    };
    const image = tf.image.value.trim();
    try {
        if (editing) {
            body.image_url = image;
            await call<Title>('PATCH', `/api/v1/titles/${encodeURIComponent(editing)}`, body);
            say(() => t('titles.saved', { name: String(body.name) }));
        } else {
            if (image) body.image_url = image;
            if (tf.id.value.trim()) body.id = tf.id.value.trim();
            await call<Title>('POST', '/api/v1/titles', body);
            say(() => t('titles.created', { name: String(body.name) }));
        }
        resetTitleForm();
    } catch (e) {
        setTitleError(() => errorWords(e));
    }
    await refresh(false);
}

async function titleAction(x: AdminTitle, action: 'approve' | 'delete'): Promise<void> {
    if (action === 'delete' && !window.confirm(t('titles.confirmDelete', { name: x.name || x.id }))) return;
    try {
        if (action === 'approve') await call('POST', `/api/v1/titles/${encodeURIComponent(x.id)}/approve`);
        else await call('DELETE', `/api/v1/titles/${encodeURIComponent(x.id)}`);
        say(() => t(action === 'approve' ? 'titles.approved' : 'titles.deleted', { name: x.name || x.id }));
    } catch (e) {
        say(() => errorWords(e), true);
    }
    await refresh(false);
}

const titlesTable = table(
    ['titles.col.title', 'titles.col.visibility', 'titles.col.limits', 'titles.col.availability', 'titles.col.source', 'titles.col.actions'],
    'titles'
);
const titlesSection = h(
    'section',
    { 'data-testid': 'section-titles' },
    tx('h2', 'titles.title'),
    tx('p', 'titles.lead', { class: 'lead' }),
    titleForm,
    titlesTable.root
);

function drawTitles(): void {
    if (data.titles.length === 0) return emptyRow(titlesTable.body, 6, 'titles.none');
    titlesTable.body.replaceChildren(
        ...data.titles.map((x) => {
            const thumb = h('div', { class: 'thumb', translate: 'no' });
            const initial = (x.name.trim()[0] ?? '?').toUpperCase();
            if (x.image_url) {
                const img = h('img', { src: x.image_url, alt: '', loading: 'lazy' });
                // A picture that does not load: the initial, as on the catalog.
                img.addEventListener('error', () => thumb.replaceChildren(initial), { once: true });
                thumb.append(img);
            } else thumb.textContent = initial;
            const limits = [
                t('titles.limitPlayers', { n: x.max_players || '∞' }),
                t('titles.limitIdle', { d: formatDuration(x.idle_timeout) }),
                t('titles.limitEmpty', { d: formatDuration(x.empty_timeout) }),
                t('titles.limitLength', { d: x.max_duration ? formatDuration(x.max_duration) : '∞' })
            ];
            const a = x.availability;
            const actions = h('td', { class: 'actions' });
            if (x.approved === false) actions.append(button('titles.approve', () => void titleAction(x, 'approve'), { class: 'small', 'data-testid': `approve-${x.id}` }));
            actions.append(
                button('titles.editButton', () => editTitle(x), { class: 'small secondary', 'data-testid': `edit-${x.id}` }),
                button('titles.delete', () => void titleAction(x, 'delete'), { class: 'small secondary', 'data-testid': `delete-${x.id}` })
            );
            return h(
                'tr',
                { 'data-testid': `title-${x.id}` },
                h('td', {}, h('div', { class: 'with-thumb' }, thumb, h('div', {}, data_('strong', x.name || x.id), data_('small', `${x.id} · ${x.application_id}`, { class: 'sub' })))),
                h('td', {}, badge(t(x.visibility === 'public' ? 'titles.public' : 'titles.private'), x.visibility === 'public' ? 'ok' : 'info')),
                h('td', {}, ...limits.map((l) => h('small', { class: 'line', text: l }))),
                h('td', { text: t('titles.availability', { free: a.free_slots, nodes: a.nodes, queued: a.queued }) }),
                h(
                    'td',
                    {},
                    t(x.source === 'node' ? 'titles.fromNode' : 'titles.fromAdmin'),
                    x.approved === false ? h('small', { class: 'sub' }, badge(t('titles.pending'), 'busy')) : null
                ),
                actions
            );
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Tokens

const minted = h('div', { class: 'minted panel-box', hidden: true, 'data-testid': 'minted' });
let lastMinted: CreatedToken | null = null;
function showMinted(tok: CreatedToken): void {
    lastMinted = tok;
    const secret = h('input', { type: 'text', readOnly: true, value: tok.token, 'data-testid': 'minted-token', translate: 'no' });
    const copy = button('tokens.copy', () => {
        secret.select();
        void navigator.clipboard?.writeText(tok.token).catch(() => undefined);
    }, { class: 'secondary small' });
    minted.replaceChildren(tx('strong', 'tokens.mintedTitle'), tx('p', 'tokens.mintedLead'), h('div', { class: 'row' }, secret, copy));
    const lead = minted.querySelector('p');
    if (lead) lead.textContent = t('tokens.mintedLead', { name: tok.name });
    minted.hidden = false;
}

const apiTokenName = input('api-token-name', { required: true });
const apiTokenRole = select('api-token-role', [
    ['user', 'tokens.roleUser'],
    ['admin', 'tokens.roleAdmin']
]);
const apiTokenForm = h(
    'form',
    { class: 'panel-box form-row', autocomplete: 'off' },
    tx('h3', 'tokens.newApi'),
    field('tokens.name', apiTokenName),
    field('tokens.role', apiTokenRole),
    h('div', { class: 'actions' }, tx('button', 'tokens.mint', { type: 'submit', 'data-testid': 'api-token-mint' }))
);
apiTokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void mint('/api/v1/tokens', { name: apiTokenName.value.trim(), role: apiTokenRole.value as Role }, apiTokenForm);
});

const nodeTokenName = input('node-token-name', { required: true });
const nodeTokenNode = input('node-token-node', { 'data-i18n-placeholder': 'tokens.nodePlaceholder' });
const nodeTokenForm = h(
    'form',
    { class: 'panel-box form-row', autocomplete: 'off' },
    tx('h3', 'tokens.newNode'),
    field('tokens.name', nodeTokenName),
    field('tokens.node', nodeTokenNode, 'tokens.nodeHint'),
    h('div', { class: 'actions' }, tx('button', 'tokens.mint', { type: 'submit', 'data-testid': 'node-token-mint' }))
);
nodeTokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const body: Record<string, string> = { name: nodeTokenName.value.trim() };
    if (nodeTokenNode.value.trim()) body.node = nodeTokenNode.value.trim();
    void mint('/api/v1/node-tokens', body, nodeTokenForm);
});
const tokenError = h('p', { class: 'error', role: 'alert', 'data-testid': 'token-error' });
let tokenErrorText: (() => string) | null = null;
function setTokenError(text: (() => string) | null): void {
    tokenErrorText = text;
    tokenError.textContent = text ? text() : '';
}

async function mint(path: string, body: Record<string, string>, form: HTMLFormElement): Promise<void> {
    setTokenError(null);
    try {
        const tok = await call<CreatedToken>('POST', path, body);
        showMinted(tok);
        form.reset();
    } catch (e) {
        setTokenError(() => errorWords(e));
    }
    await refresh(false);
}

async function revoke(kind: 'tokens' | 'node-tokens', tok: TokenInfo): Promise<void> {
    if (!window.confirm(t('tokens.confirmRevoke', { name: tok.name }))) return;
    try {
        await call('DELETE', `/api/v1/${kind}/${encodeURIComponent(tok.id)}`);
        say(() => t('tokens.revoked', { name: tok.name }));
    } catch (e) {
        say(() => errorWords(e), true);
    }
    await refresh(false);
}

const apiTokensTable = table(['tokens.col.name', 'tokens.col.role', 'tokens.col.created', 'tokens.col.actions'], 'api-tokens');
const nodeTokensTable = table(['tokens.col.name', 'tokens.col.node', 'tokens.col.created', 'tokens.col.actions'], 'node-tokens');
const tokensSection = h(
    'section',
    { 'data-testid': 'section-tokens' },
    tx('h2', 'tokens.title'),
    tx('p', 'tokens.lead', { class: 'lead' }),
    h('div', { class: 'forms' }, apiTokenForm, nodeTokenForm),
    tokenError,
    minted,
    tx('h3', 'tokens.apiList'),
    apiTokensTable.root,
    tx('h3', 'tokens.nodeList'),
    nodeTokensTable.root
);

function drawTokens(): void {
    const row = (kind: 'tokens' | 'node-tokens', tok: TokenInfo): HTMLElement =>
        h(
            'tr',
            { 'data-testid': `${kind === 'tokens' ? 'api' : 'node'}-token-${tok.id}` },
            h('td', {}, data_('strong', tok.name), data_('small', tok.id, { class: 'sub' })),
            kind === 'tokens'
                ? h('td', { text: t(tok.role === 'admin' ? 'tokens.roleAdmin' : 'tokens.roleUser') })
                : tok.node ? data_('td', tok.node) : h('td', { text: t('tokens.anyNode') }),
            h('td', { text: formatDateTime(tok.created_at) }),
            h('td', { class: 'actions' }, button('tokens.revoke', () => void revoke(kind, tok), { class: 'small secondary', 'data-testid': `revoke-${tok.id}` }))
        );
    if (data.apiTokens.length === 0) emptyRow(apiTokensTable.body, 4, 'tokens.none');
    else apiTokensTable.body.replaceChildren(...data.apiTokens.map((x) => row('tokens', x)));
    if (data.nodeTokens.length === 0) emptyRow(nodeTokensTable.body, 4, 'tokens.none');
    else nodeTokensTable.body.replaceChildren(...data.nodeTokens.map((x) => row('node-tokens', x)));
}

// ---------------------------------------------------------------------------------------------
// Sections, refresh, language

sectionEls.set('overview', overview);
sectionEls.set('nodes', nodesSection);
sectionEls.set('sessions', liveSection);
sectionEls.set('history', historySection);
sectionEls.set('titles', titlesSection);
sectionEls.set('tokens', tokensSection);
for (const el of sectionEls.values()) {
    el.hidden = true;
    consoleEl.append(el);
}

function showSection(): void {
    const current = sectionOf();
    for (const [s, el] of sectionEls) el.hidden = s !== current;
    for (const [s, a] of tabEls) {
        a.classList.toggle('active', s === current);
        if (s === current) a.setAttribute('aria-current', 'page');
        else a.removeAttribute('aria-current');
    }
    document.body.dataset.section = current;
}

function drawAll(): void {
    drawOverview();
    drawNodes();
    drawLive();
    drawHistory();
    drawTitles();
    drawTokens();
}

let refreshing: Promise<void> | null = null;
let again = false;
let againSample = false;

/** Reads what the console shows (everything: the sections are small) and draws it. */
function refresh(sample: boolean): Promise<void> {
    if (refreshing) {
        again = true;
        againSample ||= sample;
        return refreshing;
    }
    refreshing = (async () => {
        try {
            do {
                again = false;
                await load(sample);
                sample = againSample;
                againSample = false;
            } while (again);
        } finally {
            refreshing = null;
        }
    })();
    return refreshing;
}

async function load(sample: boolean): Promise<void> {
    if (!token) return;
    try {
        const list = <T>(path: string): Promise<T[]> => call<{ items: T[] }>('GET', path).then((r) => r.items ?? []);
        const newestFirst = (a: AdminSession, b: AdminSession): number => b.created_at.localeCompare(a.created_at);
        const [nodes, titles, apiTokens, nodeTokens, metrics, history, live] = await Promise.all([
            list<CoordNode>('/api/v1/nodes'),
            list<AdminTitle>('/api/v1/titles'),
            list<TokenInfo>('/api/v1/tokens'),
            list<TokenInfo>('/api/v1/node-tokens'),
            sample ? call<Metrics>('GET', '/api/v1/metrics') : Promise.resolve(null),
            Promise.all(historyQueries().map((q) => list<AdminSession>(`/api/v1/sessions?${q}`))),
            Promise.all(LIVE_STATES.map((s) => list<AdminSession>(`/api/v1/sessions?state=${s}`)))
        ]);
        data.nodes = nodes;
        data.titles = titles;
        data.apiTokens = apiTokens;
        data.nodeTokens = nodeTokens;
        data.history = history.flat().sort(newestFirst).slice(0, HISTORY_LIMIT);
        data.live = live.flat().sort(newestFirst);
        if (metrics) {
            data.metrics.push(metrics);
            if (data.metrics.length > CHART_POINTS) data.metrics.shift();
        }
        if (notice.dataset.stale === 'true') say(null);
        drawAll();
        document.body.dataset.loaded = 'true';
    } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
            // The token was revoked or the database replaced: sign in again.
            token = null;
            storeToken(null, false);
            showLogin('login.expired');
            return;
        }
        say(() => t('error.stale', { message: errorWords(e) }), true);
        notice.dataset.stale = 'true';
    }
}

window.addEventListener('hashchange', showSection);
onLangChange(() => {
    applyTranslations(document);
    document.title = t('admin.pageTitle');
    if (loginError.dataset.key) loginError.textContent = t(loginError.dataset.key as Key);
    drawNotice();
    if (titleErrorText) titleError.textContent = titleErrorText();
    if (tokenErrorText) tokenError.textContent = tokenErrorText();
    if (lastMinted) showMinted(lastMinted);
    drawAll();
});
document.title = t('admin.pageTitle');
document.documentElement.lang = getLang();
applyTranslations(document);

window.setInterval(() => {
    if (token && document.visibilityState === 'visible') void refresh(true);
}, REFRESH_MS);

if (token) void signIn(token, (() => {
    try {
        return window.localStorage.getItem(TOKEN_KEY) !== null;
    } catch {
        return false;
    }
})());
else showLogin(null);
