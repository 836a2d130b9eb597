// What the pages say about titles and sessions, in plain words. Pure functions, no DOM.
import type { Availability, Session } from './api';

export type Tone = 'ok' | 'busy' | 'off';

/** "2 free slots", "all busy — 3 waiting", "no server online". */
export function availabilityWords(a: Availability | undefined): { text: string; tone: Tone } {
    if (!a || a.nodes <= 0) return { text: 'no server online', tone: 'off' };
    if (a.free_slots > 0) {
        return { text: `${a.free_slots} free slot${a.free_slots === 1 ? '' : 's'}`, tone: 'ok' };
    }
    if (a.queued > 0) return { text: `all busy — ${a.queued} waiting`, tone: 'busy' };
    return { text: 'all busy — nobody waiting', tone: 'busy' };
}

const END_REASONS: Record<string, string> = {
    cancelled: 'cancelled before it started',
    stopped: 'it was stopped',
    window_end: 'its booked time is over',
    window_missed: 'its booked time passed before it could start',
    node_lost: 'the server running it went offline',
    no_capacity: 'no server could take it',
    idle: 'nobody used it for a while',
    empty: 'nobody was connected for a while',
    max_duration: 'it reached its time limit',
    exited: 'the application quit',
    crashed: 'the application crashed',
    start_timeout: 'the application took too long to start',
    spawn_failed: 'the application could not be started',
    rejected: 'the server refused to start it',
    drained: 'the server is being taken out of service',
    node_shutdown: 'the server shut down',
    node_restart: 'the server restarted'
};

/** Why a session ended, in words: "the application crashed", "ended on request". */
export function endReasonWords(reason: string | null, exitCode: number | null): string {
    if (!reason) return 'no reason given';
    let words = END_REASONS[reason] ?? reason.replace(/_/g, ' ');
    if ((reason === 'exited' || reason === 'crashed') && exitCode !== null && exitCode !== 0) {
        words += `, exit code ${exitCode}`;
    }
    return words;
}

/** A start time as the user's local time: "14:05" today, "Wed 26 Nov, 14:05" another day. */
export function localTime(rfc3339: string, now: Date = new Date()): string {
    const t = new Date(rfc3339);
    if (Number.isNaN(t.getTime())) return rfc3339;
    const time = t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (t.toDateString() === now.toDateString()) return time;
    const day = t.toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short' });
    return `${day}, ${time}`;
}

/** The one-line status of a session for the player page. */
export function sessionWords(s: Session, titleName: string): string {
    switch (s.state) {
        case 'queued':
            return s.queue_position ? `You are number ${s.queue_position} in line` : 'You are in line';
        case 'scheduled':
            return s.start_at ? `Starts at ${localTime(s.start_at)}` : 'Scheduled';
        case 'starting':
            return `Starting ${titleName}…`;
        case 'ready':
            return `Playing ${titleName}`;
        case 'ended':
        case 'failed': {
            let why = endReasonWords(s.end_reason, s.exit_code);
            if (s.end_reason === 'stopped' && s.ended_by === 'owner') why = 'its owner ended it';
            if (s.end_reason === 'stopped' && s.ended_by === 'admin') why = 'an operator ended it';
            return `The session has ended (${why})`;
        }
        default:
            return `Session is ${String(s.state)}`;
    }
}
