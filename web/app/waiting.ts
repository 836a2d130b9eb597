// What the catalog, the booking page, "My sessions" and the player page say about a title's
// availability and a queued session's wait, in the current language (words-catalog.ts).
import type { Availability, Session } from './api';
import { formatDuration, t } from './i18n';

export type Tone = 'ok' | 'busy' | 'off';

/** "2 free slots", "all busy — 3 waiting", "no server online". */
export function availabilityText(a: Availability | undefined): { text: string; tone: Tone } {
    if (!a || a.nodes <= 0) return { text: t('catalog.avail.off'), tone: 'off' };
    if (a.free_slots > 0) return { text: t('catalog.avail.free', { n: a.free_slots }), tone: 'ok' };
    if (a.queued > 0) return { text: t('catalog.avail.waiting', { n: a.queued }), tone: 'busy' };
    return { text: t('catalog.avail.nobodyWaiting'), tone: 'busy' };
}

/**
 * Why a queued session waits and about how long (`queue_reason`, `address_limit`,
 * `estimated_wait_s` of the Session API), or null when it is not queued.
 */
export function waitText(s: Session): string | null {
    if (s.state !== 'queued') return null;
    if (s.queue_reason === 'address_limit') return t('book.wait.addressLimit', { n: s.address_limit ?? 0 });
    const w = s.estimated_wait_s;
    if (typeof w !== 'number') return t('book.wait.unknown');
    if (w < 60) return t('book.wait.soon');
    // Rounded to the minute: an estimate, not a countdown.
    return t('book.wait.about', { time: formatDuration(Math.round(w / 60) * 60) });
}
