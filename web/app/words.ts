// What the pages say about titles and sessions, in plain words, in the page's language (i18n.ts).
// Pure functions, no DOM.
import type { Session } from './api';
import { getLang, messages, t, type Key } from './i18n';

/** Who ended a session, for the words of a `stopped` end: the session's `ended_by` (`owner`,
 *  `admin`, or none) and the caller's `role` in it (`owner` for its creator). */
export type EndedBy = Pick<Session, 'ended_by' | 'role'>;

/** Why a session ended, in words: "the application crashed", "you ended it". With `who` (the
 *  Session itself will do), a `stopped` end says who stopped it. */
export function endReasonWords(reason: string | null, exitCode: number | null, who?: EndedBy | null): string {
    if (!reason) return t('play.reason.none');
    if (reason === 'stopped' && who?.ended_by === 'owner') return t(who.role === 'owner' ? 'play.reason.byYou' : 'play.reason.byOwner');
    if (reason === 'stopped' && who?.ended_by === 'admin') return t('play.reason.byAdmin');
    const key = `reason.${reason}`;
    const words = key in messages.en ? t(key as Key) : reason.replace(/_/g, ' ');
    if ((reason === 'exited' || reason === 'crashed') && exitCode !== null && exitCode !== 0) {
        return t('play.reason.withExit', { reason: words, code: exitCode });
    }
    return words;
}

/** The locale for dates and times: the browser's own tag when it speaks the page's language
 *  (en-GB keeps its 24-hour clock), else the page's language. */
export function timeLocale(): string {
    const lang = getLang();
    const tags = typeof navigator === 'undefined' ? [] : (navigator.languages ?? [navigator.language]);
    return tags.find((tag) => tag.toLowerCase().split('-')[0] === lang) ?? lang;
}

/** A start time as the user's local time: "14:05" today, "Wed 26 Nov, 14:05" another day. */
export function localTime(rfc3339: string, now: Date = new Date()): string {
    const at = new Date(rfc3339);
    if (Number.isNaN(at.getTime())) return rfc3339;
    const time = at.toLocaleTimeString(timeLocale(), { hour: '2-digit', minute: '2-digit' });
    if (at.toDateString() === now.toDateString()) return time;
    const day = at.toLocaleDateString(timeLocale(), { weekday: 'short', day: 'numeric', month: 'short' });
    return `${day}, ${time}`;
}

/** The one-line status of a session for the player page. */
export function sessionWords(s: Session, titleName: string): string {
    switch (s.state) {
        case 'queued':
            return s.queue_position ? t('play.status.queuedAt', { n: s.queue_position }) : t('play.status.queued');
        case 'scheduled':
            return s.start_at ? t('play.status.startsAt', { time: localTime(s.start_at) }) : t('play.status.scheduled');
        case 'starting':
            return t('play.status.starting', { title: titleName });
        case 'ready':
            return t('play.status.ready', { title: titleName });
        case 'ended':
        case 'failed':
            return t('play.status.ended', { why: endReasonWords(s.end_reason, s.exit_code, s) });
        default:
            return t('play.status.other', { state: String(s.state) });
    }
}
