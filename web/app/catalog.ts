// The catalog page (`/`): lists the titles this user may start (`GET /api/v1/titles`), with their
// availability, and launches one (`POST /api/v1/sessions`, then `/play/<session id>`).
// Availability is refreshed every REFRESH_MS while the page is visible.
import { ApiError, api, errorMessage, getToken, setToken, type Session, type Title } from './api';
import { availabilityWords } from './words';

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
    error: HTMLElement;
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
        const button = el('button', 'secondary', 'Try again');
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
    const availabilityRow = el('div', 'availability');
    const dot = el('span', 'dot');
    dot.setAttribute('aria-hidden', 'true');
    const availability = el('span');
    availability.dataset.testid = `availability-${title.id}`;
    availabilityRow.append(dot, availability);
    const actions = el('div', 'actions');
    const launch = el('button', undefined, 'Launch');
    launch.type = 'button';
    launch.dataset.testid = `launch-${title.id}`;
    actions.append(launch);
    const error = el('p', 'error');
    error.setAttribute('role', 'alert');
    error.dataset.testid = `launch-error-${title.id}`;
    body.append(name, description, availabilityRow, actions, error);
    root.append(media, body);

    const card: Card = { root, media, imageUrl: null, name, description, dot, availability, launch, error };
    launch.addEventListener('click', () => void launchTitle(title.id, card));
    return card;
}

function updateCard(card: Card, title: Title): void {
    card.name.textContent = title.name || title.id;
    card.description.textContent = title.description;
    card.description.hidden = !title.description;
    const { text, tone } = availabilityWords(title.availability);
    card.availability.textContent = text;
    card.dot.className = `dot ${tone}`;
    card.launch.setAttribute('aria-label', `Launch ${title.name || title.id}`);
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
        showNotice(
            getToken()
                ? 'There are no titles you can start yet.'
                : 'There are no public titles yet. If you have an access token, use it (top right) to see more.'
        );
    } else {
        showNotice(null);
    }
}

let loading = false;
async function loadTitles(showProgress: boolean): Promise<void> {
    if (loading) return;
    loading = true;
    if (showProgress && cards.size === 0) showNotice('Loading titles…');
    try {
        const answer = await api<{ items: Title[] }>('GET', '/api/v1/titles');
        render(Array.isArray(answer?.items) ? answer.items : []);
        document.body.dataset.loaded = 'true';
    } catch (e) {
        let text = `Could not load the titles: ${errorMessage(e)}`;
        if (e instanceof ApiError && (e.status === 401 || e.status === 403) && getToken()) {
            text += ' Check or forget the access token (top right).';
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
    card.launch.textContent = 'Launching…';
    try {
        const session = await api<Session>('POST', '/api/v1/sessions', { title_id: titleId });
        if (!session || typeof session.id !== 'string' || !session.id) {
            throw new Error('The server did not say which session it created.');
        }
        // Without an access token, the owner key is what makes this browser the session's owner:
        // the player page takes it from the address (never sent to a server) and keeps it.
        const key = typeof session.owner_key === 'string' && session.owner_key ? `#owner=${encodeURIComponent(session.owner_key)}` : '';
        window.location.assign(`/play/${encodeURIComponent(session.id)}${key}`);
        // Leave the button disabled: the page is going away.
        return;
    } catch (e) {
        let text = errorMessage(e);
        if (e instanceof ApiError && e.status === 401 && !getToken()) text += ' Use an access token (top right).';
        card.error.textContent = text;
        card.launch.disabled = false;
        card.launch.textContent = 'Launch';
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

    const show = (message?: string): void => {
        const has = getToken() !== null;
        summary.textContent = has ? 'Access token in use' : 'Use an access token';
        forget.disabled = !has;
        state.textContent = message ?? (has ? 'A token is stored in this browser.' : 'No token: public titles only.');
    };

    form.addEventListener('submit', (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) {
            show('Paste a token first.');
            input.focus();
            return;
        }
        if (!setToken(value)) {
            show('This browser would not store the token.');
            return;
        }
        input.value = '';
        show('Saved.');
        void loadTitles(true);
    });
    forget.addEventListener('click', () => {
        setToken(null);
        input.value = '';
        show('Forgotten.');
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
            card.launch.textContent = 'Launch';
        }
        void loadTitles(false);
    }
});
