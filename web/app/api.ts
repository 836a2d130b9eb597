// The coordinator's REST API v1 as the pages use it: the JSON shapes (crates/protocol/src/api.rs),
// the optional access token and one fetch helper that turns every failure into words.

export type SessionState = 'scheduled' | 'queued' | 'starting' | 'ready' | 'ended' | 'failed';

export interface Availability {
    free_slots: number;
    nodes: number;
    queued: number;
}

export interface Title {
    id: string;
    name: string;
    description: string;
    image_url: string | null;
    application_id: string;
    visibility: 'public' | 'private';
    max_players: number;
    idle_timeout: number;
    empty_timeout: number;
    max_duration: number;
    availability: Availability;
    created_at: string;
    updated_at: string;
}

export interface Session {
    id: string;
    title_id: string;
    node_id: string | null;
    state: SessionState;
    queue_position: number | null;
    created_at: string;
    start_at: string | null;
    duration: number | null;
    ready_at: string | null;
    ended_at: string | null;
    end_reason: string | null;
    exit_code: number | null;
    join_url: string | null;
    /** The caller's role in the session: `owner`, `controller` or `viewer`. */
    role?: string | null;
    /** Who ended it: `owner` or `admin` (absent otherwise). */
    ended_by?: string | null;
    /** Only in the answer that created an anonymous user's session: its owner key (shown once). */
    owner_key?: string | null;
    /** Only while queued, when it can be guessed: about how many seconds until it starts. */
    estimated_wait_s?: number | null;
    /** Only while queued: what it waits for, a free `slot` or its anonymous `address_limit`. */
    queue_reason?: 'slot' | 'address_limit' | null;
    /** With `queue_reason: address_limit`: the sessions an anonymous address may run at once. */
    address_limit?: number | null;
}

/** A share link of a session (its secret only in the answer that created it). */
export interface ShareLink {
    id: string;
    role: 'viewer' | 'controller';
    created_at: string;
    expires_at: string | null;
    revoked_at?: string | null;
    /** The player page for a person, with the link's key (creation only). */
    url?: string;
    join_url?: string | null;
}

/** A failed API call, with a message a person can read. `status` is 0 when there was no answer. */
export class ApiError extends Error {
    constructor(
        message: string,
        readonly status: number,
        readonly code: string
    ) {
        super(message);
        this.name = 'ApiError';
    }
}

const TOKEN_KEY = 'pxs_token';

/** The stored access token, or null. localStorage can be unavailable (privacy modes): no token then. */
export function getToken(): string | null {
    try {
        const token = window.localStorage.getItem(TOKEN_KEY);
        return token && token.trim() ? token.trim() : null;
    } catch {
        return null;
    }
}

/** Stores `token` (trimmed), or forgets it when empty. Returns false if it could not be stored. */
export function setToken(token: string | null): boolean {
    try {
        const value = token ? token.trim() : '';
        if (value) window.localStorage.setItem(TOKEN_KEY, value);
        else window.localStorage.removeItem(TOKEN_KEY);
        return true;
    } catch {
        return false;
    }
}

const SESSION_KEY_PREFIX = 'pxs_key:';

/**
 * The key this browser holds for session `id`: the owner key of a session it created without an
 * access token, or the key of a share link it opened. null if none (or no storage).
 */
export function getSessionKey(id: string): string | null {
    try {
        const key = window.localStorage.getItem(SESSION_KEY_PREFIX + id);
        return key && key.trim() ? key.trim() : null;
    } catch {
        return null;
    }
}

/** Keeps `key` for session `id`. Returns false if it could not be stored. */
export function setSessionKey(id: string, key: string): boolean {
    try {
        window.localStorage.setItem(SESSION_KEY_PREFIX + id, key.trim());
        return true;
    } catch {
        return false;
    }
}

const NAME_KEY = 'pxs_name';

/** The display name this browser uses in shared sessions, or null. */
export function getName(): string | null {
    try {
        const name = window.localStorage.getItem(NAME_KEY);
        return name && name.trim() ? name.trim() : null;
    } catch {
        return null;
    }
}

export function setName(name: string): void {
    try {
        window.localStorage.setItem(NAME_KEY, name.trim());
    } catch {
        // Not kept: asked again next time.
    }
}

/** Words for an HTTP status without an error body (a proxy's 502, say). */
function statusWords(status: number): string {
    if (status === 401) return 'You need a valid access token for this.';
    if (status === 403) return 'Your access token does not allow this.';
    if (status === 404) return 'Not found.';
    if (status === 429) return 'Too many requests; try again in a moment.';
    if (status >= 500) return `The server had a problem (HTTP ${status}). Try again in a moment.`;
    return `The request failed (HTTP ${status}).`;
}

/**
 * Calls `path` (an absolute path such as `/api/v1/titles`) with `credential` (a session key) or
 * else the stored token, sends `body` as JSON, and returns the parsed JSON answer (undefined for an empty one). Throws ApiError with the
 * server's `error.message` when there is one.
 */
export async function api<T>(method: string, path: string, body?: unknown, credential?: string | null): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    const token = credential ?? getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';

    let response: Response;
    try {
        response = await fetch(path, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
            cache: 'no-store'
        });
    } catch {
        throw new ApiError('Could not reach the server. Check your connection and try again.', 0, 'network');
    }

    const text = await response.text().catch(() => '');
    let json: unknown = undefined;
    if (text) {
        try {
            json = JSON.parse(text);
        } catch {
            json = undefined;
        }
    }
    if (!response.ok) {
        const error = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
        const message = typeof error?.message === 'string' && error.message ? error.message : statusWords(response.status);
        const code = typeof error?.code === 'string' ? error.code : `http_${response.status}`;
        throw new ApiError(message, response.status, code);
    }
    if (text && json === undefined) {
        throw new ApiError('The server sent an answer this page cannot read.', response.status, 'bad_response');
    }
    return json as T;
}

/** The message of any thrown value, in words. */
export function errorMessage(e: unknown): string {
    if (e instanceof Error && e.message) return e.message;
    return String(e);
}
