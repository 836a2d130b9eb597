// The catalog page (`/`): lists the titles this user may start (`GET /api/v1/titles`), with their
// availability, and launches one (`POST /api/v1/sessions`, then `/play/<session id>`) or books a
// time for it (`POST /api/v1/sessions {title_id, start_at, duration}`, then `/book/<session id>`).
// Availability is refreshed every REFRESH_MS while the page is visible. Every word comes from
// words-catalog.ts; the header has the language switch and the way to "My sessions".
import { ApiError, api, errorMessage, getToken, setSessionKey, setToken, type Session, type Title } from './api';
import { applyTranslations, formatDuration, getLang, languageSwitch, onLangChange, t } from './i18n';
import { availabilityText } from './waiting';

const REFRESH_MS = 15_000;

const noticeEl = document.getElementById('notice') as HTMLElement;
const gridEl = document.getElementById('titles') as HTMLElement;

interface Card {
    root: HTMLElement;
    media: HTMLElement;
    imageUrl: string | null;
    name: HTMLElement;
    description: HTMLElement;
    dot: HTMLElement;
    availability: HTMLElement;
    launch: HTMLButtonElement;
    bookOpen: HTMLButtonElement;
    book: BookForm;
    error: HTMLElement;
    title: Title;
}

interface BookForm {
    form: HTMLFormElement;
    when: HTMLInputElement;
    length: HTMLSelectElement;
    submit: HTMLButtonElement;
    close: HTMLButtonElement;
    labels: { when: HTMLElement; length: HTMLElement };
}

const cards = new Map<string, Card>();
let launching = false;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
}

function showNotice(text: string | null, { error = false, retry = false } = {}): void {
    noticeEl.replaceChildren();
    noticeEl.hidden = text === null;
    if (text === null) return;
    noticeEl.classList.toggle('error', error);
    noticeEl.append(text);
    if (retry) {
        const button = el('button', 'secondary', t('catalog.tryAgain'));
        button.type = 'button';
        button.addEventListener('click', () => void loadTitles(true));
        noticeEl.append(button);
    }
}

/** The picture of a card: the title's image, or its initial on a coloured block. */
function renderMedia(card: Card, title: Title): void {
    const url = title.image_url && title.image_url.trim() ? title.image_url.trim() : null;
    if (card.imageUrl === url && card.media.childNodes.length > 0) return;
    card.imageUrl = url;
    const initial = el('span', undefined, (title.name.trim()[0] ?? '?').toUpperCase());
    initial.setAttribute('aria-hidden', 'true');
    if (!url) {
        card.media.replaceChildren(initial);
        return;
    }
    const img = el('img');
    img.alt = '';
    img.loading = 'lazy';
    img.decoding = 'async';
    img.addEventListener('error', () => card.media.replaceChildren(initial), { once: true });
    img.src = url;
    card.media.replaceChildren(img);
}

function createCard(title: Title): Card {
    const root = el('article', 'card');
    root.dataset.testid = `title-${title.id}`;
    const media = el('div', 'media');
    const body = el('div', 'body');
    const name = el('h2');
    const description = el('p', 'description');
    // The operator's words, in the operator's language: not the page's to translate.
    name.translate = false;
    description.translate = false;
    const availabilityRow = el('div', 'availability');
    const dot = el('span', 'dot');
    dot.setAttribute('aria-hidden', 'true');
    const availability = el('span');
    availability.dataset.testid = `availability-${title.id}`;
    availabilityRow.append(dot, availability);
    const actions = el('div', 'actions');
    const launch = el('button', undefined, t('catalog.launch'));
    launch.type = 'button';
    launch.dataset.testid = `launch-${title.id}`;
    const bookOpen = el('button', 'secondary', t('book.open'));
    bookOpen.type = 'button';
    bookOpen.dataset.testid = `book-${title.id}`;
    actions.append(launch, bookOpen);
    const book = createBookForm(title.id);
    const error = el('p', 'error');
    error.setAttribute('role', 'alert');
    error.dataset.testid = `launch-error-${title.id}`;
    body.append(name, description, availabilityRow, actions, book.form, error);
    root.append(media, body);

    const card: Card = { root, media, imageUrl: null, name, description, dot, availability, launch, bookOpen, book, error, title };
    launch.addEventListener('click', () => void launchTitle(title.id, card));
    bookOpen.addEventListener('click', () => {
        book.form.hidden = !book.form.hidden;
        if (!book.form.hidden) {
            fillLengths(card);
            if (!book.when.value) book.when.value = localInputValue(defaultStart());
            book.when.focus();
        }
    });
    book.close.addEventListener('click', () => (book.form.hidden = true));
    book.form.addEventListener('submit', (event) => {
        event.preventDefault();
        void bookTitle(card);
    });
    return card;
}

// ---------------------------------------------------------------------------------------------
// The scheduling form

/** Lengths a booking may have, in seconds (the title's max_duration caps them). */
const LENGTHS = [15 * 60, 30 * 60, 3600, 2 * 3600];

function createBookForm(titleId: string): BookForm {
    const form = el('form', 'book-form');
    form.noValidate = true;
    form.hidden = true;
    form.dataset.testid = `book-form-${titleId}`;
    const whenLabel = el('label');
    const whenText = el('span', undefined, t('book.when'));
    const when = el('input');
    when.type = 'datetime-local';
    when.required = true;
    when.dataset.testid = `book-when-${titleId}`;
    whenLabel.append(whenText, when);
    const lengthLabel = el('label');
    const lengthText = el('span', undefined, t('book.length'));
    const length = el('select');
    length.dataset.testid = `book-length-${titleId}`;
    lengthLabel.append(lengthText, length);
    const buttons = el('div', 'book-buttons');
    const submit = el('button', undefined, t('book.submit'));
    submit.type = 'submit';
    submit.dataset.testid = `book-submit-${titleId}`;
    const close = el('button', 'secondary', t('book.cancelForm'));
    close.type = 'button';
    buttons.append(submit, close);
    form.append(whenLabel, lengthLabel, buttons);
    return { form, when, length, submit, close, labels: { when: whenText, length: lengthText } };
}

/** A length in words: "15 minutes", "2 hours". */
function lengthWords(seconds: number): string {
    if (seconds % 3600 === 0) return t('book.hours', { n: seconds / 3600 });
    if (seconds % 60 === 0) return t('book.minutes', { n: seconds / 60 });
    return formatDuration(seconds);
}

/** The length choices for `card`'s title, keeping the one chosen. */
function fillLengths(card: Card): void {
    const max = card.title.max_duration;
    const choices = LENGTHS.filter((l) => max <= 0 || l <= max);
    if (choices.length === 0 || (max > 0 && !choices.includes(max) && max < LENGTHS[LENGTHS.length - 1])) choices.push(max);
    const chosen = card.book.length.value;
    card.book.length.replaceChildren(
        ...choices.map((l) => {
            const o = el('option', undefined, lengthWords(l));
            o.value = String(l);
            return o;
        })
    );
    if (choices.map(String).includes(chosen)) card.book.length.value = chosen;
}

/** The next quarter hour, at least 10 minutes from now. */
function defaultStart(): Date {
    const d = new Date(Date.now() + 10 * 60_000);
    d.setSeconds(0, 0);
    d.setMinutes(Math.ceil(d.getMinutes() / 15) * 15);
    return d;
}

/** `d` as a datetime-local input's value (the user's local time). */
function localInputValue(d: Date): string {
    const p = (n: number): string => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

let booking = false;
async function bookTitle(card: Card): Promise<void> {
    if (booking) return;
    const { when, length, submit } = card.book;
    card.error.textContent = '';
    const start = when.value ? new Date(when.value) : null;
    if (!start || Number.isNaN(start.getTime())) {
        card.error.textContent = t('book.pickTime');
        when.focus();
        return;
    }
    if (start.getTime() < Date.now() - 5_000) {
        card.error.textContent = t('book.inPast');
        when.focus();
        return;
    }
    booking = true;
    submit.disabled = true;
    submit.textContent = t('book.booking');
    try {
        const session = await api<Session>('POST', '/api/v1/sessions', {
            title_id: card.title.id,
            start_at: start.toISOString(),
            duration: Number(length.value)
        });
        if (!session || typeof session.id !== 'string' || !session.id) throw new Error(t('catalog.noAnswer'));
        // Without an access token, the owner key is what makes this browser the booking's owner.
        if (typeof session.owner_key === 'string' && session.owner_key) setSessionKey(session.id, session.owner_key);
        window.location.assign(`/book/${encodeURIComponent(session.id)}`);
        return;
    } catch (e) {
        let text = errorMessage(e);
        if (e instanceof ApiError && e.status === 401 && !getToken()) text += ` ${t('catalog.useToken')}`;
        card.error.textContent = text;
        submit.disabled = false;
        submit.textContent = t('book.submit');
    } finally {
        booking = false;
    }
}

function updateCard(card: Card, title: Title): void {
    card.name.textContent = title.name || title.id;
    card.description.textContent = title.description;
    card.description.hidden = !title.description;
    card.title = title;
    const { text, tone } = availabilityText(title.availability);
    card.availability.textContent = text;
    card.dot.className = `dot ${tone}`;
    card.launch.setAttribute('aria-label', t('catalog.launchAria', { title: title.name || title.id }));
    card.bookOpen.setAttribute('aria-label', t('book.openAria', { title: title.name || title.id }));
    if (!card.launch.disabled) card.launch.textContent = t('catalog.launch');
    card.bookOpen.textContent = t('book.open');
    card.book.labels.when.textContent = t('book.when');
    card.book.labels.length.textContent = t('book.length');
    if (!card.book.submit.disabled) card.book.submit.textContent = t('book.submit');
    card.book.close.textContent = t('book.cancelForm');
    if (!card.book.form.hidden) fillLengths(card);
    renderMedia(card, title);
}

function render(titles: Title[]): void {
    const seen = new Set<string>();
    const ordered: HTMLElement[] = [];
    for (const title of titles) {
        seen.add(title.id);
        let card = cards.get(title.id);
        if (!card) {
            card = createCard(title);
            cards.set(title.id, card);
        }
        updateCard(card, title);
        ordered.push(card.root);
    }
    for (const [id, card] of cards) {
        if (!seen.has(id)) {
            card.root.remove();
            cards.delete(id);
        }
    }
    // Re-appending in order moves nodes only; focus and error text stay.
    for (const node of ordered) gridEl.append(node);
    if (titles.length === 0) {
        showNotice(getToken() ? t('catalog.noneSignedIn') : t('catalog.noneAnonymous'));
    } else {
        showNotice(null);
    }
}

let loading = false;
async function loadTitles(showProgress: boolean): Promise<void> {
    if (loading) return;
    loading = true;
    if (showProgress && cards.size === 0) showNotice(t('catalog.loading'));
    try {
        const answer = await api<{ items: Title[] }>('GET', '/api/v1/titles');
        lastTitles = Array.isArray(answer?.items) ? answer.items : [];
        render(lastTitles);
        document.body.dataset.loaded = 'true';
    } catch (e) {
        let text = t('catalog.loadFailed', { message: errorMessage(e) });
        if (e instanceof ApiError && (e.status === 401 || e.status === 403) && getToken()) {
            text += ` ${t('catalog.checkToken')}`;
        }
        // A failed refresh keeps the cards on screen; the notice says the list may be stale.
        showNotice(text, { error: true, retry: true });
    } finally {
        loading = false;
    }
}

async function launchTitle(titleId: string, card: Card): Promise<void> {
    if (launching) return;
    launching = true;
    card.error.textContent = '';
    card.launch.disabled = true;
    card.launch.textContent = t('catalog.launching');
    try {
        const session = await api<Session>('POST', '/api/v1/sessions', { title_id: titleId });
        if (!session || typeof session.id !== 'string' || !session.id) {
            throw new Error(t('catalog.noAnswer'));
        }
        // Without an access token, the owner key is what makes this browser the session's owner:
        // the player page takes it from the address (never sent to a server) and keeps it.
        const key = typeof session.owner_key === 'string' && session.owner_key ? `#owner=${encodeURIComponent(session.owner_key)}` : '';
        window.location.assign(`/play/${encodeURIComponent(session.id)}${key}`);
        // Leave the button disabled: the page is going away.
        return;
    } catch (e) {
        let text = errorMessage(e);
        if (e instanceof ApiError && e.status === 401 && !getToken()) text += ` ${t('catalog.useToken')}`;
        card.error.textContent = text;
        card.launch.disabled = false;
        card.launch.textContent = t('catalog.launch');
    } finally {
        launching = false;
    }
}

// ---------------------------------------------------------------------------------------------
// The access token

function setupToken(): void {
    const details = document.getElementById('token') as HTMLDetailsElement;
    const summary = document.getElementById('token-summary') as HTMLElement;
    const form = document.getElementById('token-form') as HTMLFormElement;
    const input = document.getElementById('token-input') as HTMLInputElement;
    const forget = document.getElementById('token-forget') as HTMLButtonElement;
    const state = document.getElementById('token-state') as HTMLElement;

    // The last message, by key, so that a switch of language says it again in the new one.
    let last: Parameters<typeof t>[0] | null = null;
    const show = (message?: Parameters<typeof t>[0]): void => {
        last = message ?? null;
        const has = getToken() !== null;
        summary.textContent = has ? t('catalog.token.inUse') : t('catalog.token.use');
        forget.disabled = !has;
        state.textContent = message ? t(message) : has ? t('catalog.token.stored') : t('catalog.token.none');
    };
    onLangChange(() => show(last ?? undefined));

    form.addEventListener('submit', (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) {
            show('catalog.token.pasteFirst');
            input.focus();
            return;
        }
        if (!setToken(value)) {
            show('catalog.token.notStored');
            return;
        }
        input.value = '';
        show('catalog.token.saved');
        void loadTitles(true);
    });
    forget.addEventListener('click', () => {
        setToken(null);
        input.value = '';
        show('catalog.token.forgotten');
        void loadTitles(true);
    });
    details.addEventListener('toggle', () => {
        if (details.open) input.focus();
    });
    document.addEventListener('keydown', (event) => {
        if (event.key === 'Escape' && details.open) details.open = false;
    });
    document.addEventListener('click', (event) => {
        if (details.open && !details.contains(event.target as Node)) details.open = false;
    });
    show();
}

let lastTitles: Title[] | null = null;

applyTranslations(document);
document.documentElement.lang = getLang();
(document.getElementById('lang') as HTMLElement).replaceWith(languageSwitch());
onLangChange(() => {
    applyTranslations(document);
    if (lastTitles) render(lastTitles);
});
setupToken();
void loadTitles(true);
window.setInterval(() => {
    if (document.visibilityState === 'visible') void loadTitles(false);
}, REFRESH_MS);
document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') void loadTitles(false);
});
// Coming back with the Back button from a player page shows a fresh list, not a cached one.
window.addEventListener('pageshow', (event) => {
    if (event.persisted) {
        for (const card of cards.values()) {
            card.launch.disabled = false;
            card.launch.textContent = t('catalog.launch');
        }
        void loadTitles(false);
    }
});
