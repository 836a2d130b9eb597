// The people of a shared session, on the player page: who is there and who has control, the
// control buttons, chat, invitations (owner only) and the warning before an idle or time-limit
// end. It reads pxs's messages on the signalling socket (`you`, `users`, `chat`, `chatHistory`,
// `refused`, `warning`, `warningCleared`; docs/shared-sessions.md) and sends its commands there.
// The server decides everything: a button here only asks, and a refused command comes back as
// `refused` with words for the person. Its words are `room.*` in words-play.ts; it draws them
// again when the language changes.
import { api, errorMessage, type ShareLink } from './api';
import { onLangChange, t, type Key } from './i18n';
import { timeLocale } from './words';

export interface SessionUser {
    playerId: string;
    name: string;
    role: string;
    control: boolean;
    requested: boolean;
}

export interface ChatLine {
    id: number;
    playerId: string;
    name: string;
    text: string;
    at: number;
}

export interface Warning {
    reason: string;
    endsAt: number;
}

/** What the room needs from the page. */
export interface RoomHost {
    readonly sessionId: string;
    /** Sends a message on the signalling socket; false when it is not open. */
    send(message: object): boolean;
    /** The credential for the links API (the session key, or null for the stored token). */
    credential(): string | null;
    /** Whether this page's user may send input now changed. */
    controlChanged(mine: boolean, holder: SessionUser | null): void;
    /** The coming-end warning changed (null: none). */
    warningChanged(warning: Warning | null): void;
}

const el = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

function make<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (className) e.className = className;
    return e;
}

function smallButton(text: string, testid: string, onClick: () => void, className = 'secondary small'): HTMLButtonElement {
    const b = make('button', text, className);
    b.type = 'button';
    b.dataset.testid = testid;
    b.addEventListener('click', onClick);
    return b;
}

const ROLE_WORDS: Record<string, Key> = { owner: 'room.role.owner', controller: 'room.role.controller', viewer: 'room.role.viewer' };

const WARNING_WORDS: Record<string, Key> = { idle: 'room.warning.idle', max_duration: 'room.warning.max_duration' };

/** "1:05" for 65 seconds. */
export function clock(seconds: number): string {
    const s = Math.max(0, Math.ceil(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export class Room {
    me: { playerId: string; name: string; role: string } | null = null;
    users: SessionUser[] = [];
    chat: ChatLine[] = [];
    warning: Warning | null = null;
    private warningTimer: number | undefined;
    /** The owner's live links, as last listed (drawn again in another language). */
    private links: ShareLink[] = [];
    /** The refusal shown with the control status until the next change. */
    private refusal: string | null = null;
    /** The session is over: the panel's controls stay disabled, whatever is drawn again. */
    private stopped = false;
    private readonly panel = el<HTMLElement>('panel');
    private readonly controlStatus = el<HTMLElement>('control-status');
    private readonly controlButtons = el<HTMLElement>('control-buttons');
    private readonly usersList = el<HTMLUListElement>('users');
    private readonly chatList = el<HTMLOListElement>('chat');
    private readonly chatForm = el<HTMLFormElement>('chat-form');
    private readonly chatInput = el<HTMLInputElement>('chat-input');
    private readonly chatError = el<HTMLElement>('chat-error');
    private readonly invite = el<HTMLElement>('invite');
    private readonly inviteRole = el<HTMLSelectElement>('invite-role');
    private readonly inviteCreate = el<HTMLButtonElement>('invite-create');
    private readonly inviteResult = el<HTMLElement>('invite-result');
    private readonly inviteUrl = el<HTMLInputElement>('invite-url');
    private readonly inviteCopy = el<HTMLButtonElement>('invite-copy');
    private readonly inviteError = el<HTMLElement>('invite-error');
    private readonly linksList = el<HTMLUListElement>('links');
    private readonly warningEl = el<HTMLElement>('warning');

    constructor(private readonly host: RoomHost) {
        this.chatForm.addEventListener('submit', (e) => {
            e.preventDefault();
            this.sendChat();
        });
        // Typing in the panel is not input for the application.
        for (const type of ['keydown', 'keyup', 'keypress']) {
            this.panel.addEventListener(type, (e) => e.stopPropagation());
        }
        this.inviteCreate.addEventListener('click', () => void this.createLink());
        this.inviteCopy.addEventListener('click', () => void this.copyLink());
        this.controlStatus.textContent = t('room.joining');
        onLangChange(() => this.redraw());
    }

    /** Draws every text of the panel again, in the current language. */
    private redraw(): void {
        if (!this.me) this.controlStatus.textContent = t('room.joining');
        else this.render(true);
        this.renderChat();
        this.renderLinks();
        if (this.warning) this.showWarning(this.warning);
        if (this.stopped) this.disableControls();
    }

    /** Handles one pxs message from the signalling socket; false if it is not one of the room's. */
    handle(msg: any): boolean {
        switch (msg?.type) {
            case 'you':
                if (typeof msg.playerId !== 'string') return true;
                this.me = { playerId: msg.playerId, name: String(msg.name ?? ''), role: String(msg.role ?? '') };
                this.panel.hidden = false;
                this.invite.hidden = this.me.role !== 'owner';
                if (this.me.role === 'owner') void this.loadLinks();
                this.render();
                return true;
            case 'users':
                if (!Array.isArray(msg.users)) return true;
                this.users = msg.users.filter((u: any) => u && typeof u.playerId === 'string');
                this.render();
                return true;
            case 'chatHistory':
                if (!Array.isArray(msg.messages)) return true;
                this.chat = msg.messages.filter((l: any) => l && typeof l.text === 'string');
                this.renderChat();
                return true;
            case 'chat':
                if (typeof msg.text !== 'string') return true;
                if (!this.chat.some((l) => l.id === msg.id)) this.chat.push(msg as ChatLine);
                if (this.chat.length > 200) this.chat.shift();
                this.renderChat();
                return true;
            case 'refused':
                this.refused(String(msg.command ?? ''), typeof msg.message === 'string' ? msg.message : t('room.refused'));
                return true;
            case 'warning':
                if (typeof msg.endsAt !== 'number') return true;
                this.setWarning({ reason: String(msg.reason ?? ''), endsAt: msg.endsAt });
                return true;
            case 'warningCleared':
                if (this.warning && (!msg.reason || msg.reason === this.warning.reason)) this.setWarning(null);
                return true;
            default:
                return false;
        }
    }

    /** The user in control, if anyone. */
    holder(): SessionUser | null {
        return this.users.find((u) => u.control) ?? null;
    }

    hasControl(): boolean {
        return this.me !== null && this.holder()?.playerId === this.me.playerId;
    }

    /** The connection to the session is gone: the room shows nothing until the next `you`. */
    reset(): void {
        this.me = null;
        this.users = [];
        this.render();
    }

    stop(): void {
        this.stopped = true;
        this.setWarning(null);
        this.disableControls();
    }

    private disableControls(): void {
        this.panel.querySelectorAll('button, input, select').forEach((e) => ((e as HTMLButtonElement).disabled = true));
    }

    private command(message: object, errorEl: HTMLElement = this.chatError): void {
        if (!this.host.send(message)) errorEl.textContent = t('room.notConnected');
    }

    private control(action: string, playerId?: string): void {
        this.command(playerId ? { type: 'control', action, playerId } : { type: 'control', action });
    }

    private refused(command: string, message: string): void {
        if (command === 'chat') this.chatError.textContent = message;
        else {
            this.refusal = message;
            this.render();
        }
    }

    // ---- rendering

    /** Draws the control status, its buttons and the people; `sameState`: only the language
     *  changed (a refusal stays, the page is not told again). */
    private render(sameState = false): void {
        const me = this.me;
        const holder = this.holder();
        const mine = this.hasControl();
        const self = me ? this.users.find((u) => u.playerId === me.playerId) : undefined;
        let words: string;
        if (!me) words = t('room.joining');
        else if (mine) words = t('room.controlMine');
        else if (holder) words = t('room.controlOf', { name: holder.name });
        else words = t('room.controlNobody');
        const refused = this.refusal;
        if (!sameState) this.refusal = null;
        this.controlStatus.textContent = refused ? t('room.refusedSuffix', { words, refused }) : words;

        const buttons: HTMLButtonElement[] = [];
        if (me && !mine) {
            // The owner takes control; the others ask for it (granted at once when free).
            if (me.role === 'owner') buttons.push(smallButton(t('room.take'), 'control-take', () => this.control('take'), 'small'));
            else if (self?.requested) buttons.push(smallButton(t('room.cancelRequest'), 'control-cancel', () => this.control('release')));
            else buttons.push(smallButton(t('room.request'), 'control-request', () => this.control('request'), 'small'));
        }
        if (me && mine) buttons.push(smallButton(t('room.release'), 'control-release', () => this.control('release')));
        this.controlButtons.replaceChildren(...buttons);

        const may_give = me !== null && (me.role === 'owner' || mine);
        this.usersList.replaceChildren(
            ...this.users.map((u) => {
                const li = make('li');
                li.dataset.testid = `user-${u.name}`;
                li.dataset.playerId = u.playerId;
                const who = make('span', u.playerId === me?.playerId ? t('room.you', { name: u.name }) : u.name, 'name');
                const roleKey = ROLE_WORDS[u.role];
                const role = make('span', roleKey ? t(roleKey) : u.role, 'role');
                li.append(who, role);
                if (u.control) li.append(make('span', t('room.badge.control'), 'badge control'));
                if (u.requested) li.append(make('span', t('room.badge.asks'), 'badge asks'));
                if (u.playerId !== me?.playerId) {
                    if (may_give && !u.control) {
                        li.append(smallButton(t('room.give'), `give-${u.name}`, () => this.control('give', u.playerId)));
                    }
                    if (me?.role === 'owner' && u.role !== 'owner') {
                        li.append(
                            smallButton(t('room.kick'), `kick-${u.name}`, () => {
                                if (window.confirm(t('room.confirmKick', { name: u.name }))) this.command({ type: 'kick', playerId: u.playerId });
                            }, 'secondary small danger-text')
                        );
                    }
                }
                return li;
            })
        );
        if (!sameState) this.host.controlChanged(mine, holder);
    }

    private renderChat(): void {
        this.chatList.replaceChildren(
            ...this.chat.map((l) => {
                const li = make('li');
                li.dataset.testid = 'chat-line';
                const time = new Date(l.at).toLocaleTimeString(timeLocale(), { hour: '2-digit', minute: '2-digit' });
                li.append(make('span', l.name, 'from'), make('time', time), make('p', l.text, 'text'));
                return li;
            })
        );
        this.chatList.scrollTop = this.chatList.scrollHeight;
    }

    private sendChat(): void {
        const text = this.chatInput.value.trim();
        if (!text) return;
        this.chatError.textContent = '';
        if (this.host.send({ type: 'chat', text })) this.chatInput.value = '';
        else this.chatError.textContent = t('room.notConnected');
    }

    // ---- the coming-end warning

    private setWarning(w: Warning | null): void {
        this.warning = w;
        window.clearInterval(this.warningTimer);
        this.warningEl.hidden = w === null;
        if (w) {
            this.showWarning(w);
            this.warningTimer = window.setInterval(() => this.showWarning(w), 250);
        }
        this.host.warningChanged(w);
    }

    private showWarning(w: Warning): void {
        const left = (w.endsAt - Date.now()) / 1000;
        this.warningEl.textContent = t(WARNING_WORDS[w.reason] ?? 'room.warning.other', { time: clock(left) });
    }

    // ---- invitations (the owner)

    private async createLink(): Promise<void> {
        this.inviteError.textContent = '';
        this.inviteCreate.disabled = true;
        try {
            const link = await api<ShareLink>(
                'POST',
                `/api/v1/sessions/${encodeURIComponent(this.host.sessionId)}/links`,
                { role: this.inviteRole.value },
                this.host.credential()
            );
            this.inviteUrl.value = link.url ?? '';
            this.inviteResult.hidden = false;
            this.inviteUrl.select();
            await this.loadLinks();
        } catch (e) {
            this.inviteError.textContent = errorMessage(e);
        } finally {
            this.inviteCreate.disabled = false;
        }
    }

    private async copyLink(): Promise<void> {
        const text = this.inviteUrl.value;
        try {
            await navigator.clipboard.writeText(text);
            this.inviteCopy.textContent = t('room.copied');
        } catch {
            // No clipboard permission: the link is selected for a manual copy.
            this.inviteUrl.select();
            this.inviteCopy.textContent = t('room.pressCopy');
        }
        window.setTimeout(() => (this.inviteCopy.textContent = t('play.invite.copy')), 2000);
    }

    private async loadLinks(): Promise<void> {
        try {
            const answer = await api<{ items?: ShareLink[] }>(
                'GET',
                `/api/v1/sessions/${encodeURIComponent(this.host.sessionId)}/links`,
                undefined,
                this.host.credential()
            );
            const links = Array.isArray(answer?.items) ? answer.items : [];
            this.links = links.filter((l) => !l.revoked_at && (!l.expires_at || Date.parse(l.expires_at) > Date.now()));
            this.renderLinks();
        } catch (e) {
            this.inviteError.textContent = errorMessage(e);
        }
    }

    private renderLinks(): void {
        this.linksList.replaceChildren(
            ...this.links.map((l) => {
                const li = make('li');
                li.dataset.testid = 'link';
                const what = t(l.role === 'controller' ? 'room.link.control' : 'room.link.watch');
                const time = l.expires_at ? new Date(l.expires_at).toLocaleString(timeLocale(), { dateStyle: 'short', timeStyle: 'short' }) : null;
                li.append(make('span', time ? t('room.link.until', { what, time }) : what));
                li.append(smallButton(t('room.revoke'), `revoke-${l.id}`, () => void this.revoke(l)));
                return li;
            })
        );
    }

    private async revoke(link: ShareLink): Promise<void> {
        if (!window.confirm(t('room.confirmRevoke'))) return;
        try {
            await api('DELETE', `/api/v1/sessions/${encodeURIComponent(this.host.sessionId)}/links/${encodeURIComponent(link.id)}`, undefined, this.host.credential());
            await this.loadLinks();
        } catch (e) {
            this.inviteError.textContent = errorMessage(e);
        }
    }
}
