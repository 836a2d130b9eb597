// The parts of the coordinator's REST API v1 that only the admin console reads
// (crates/protocol/src/api.rs): nodes, tokens, the numbers of GET /api/v1/metrics, and sessions
// as an admin's list shows them.
import type { Session, Title } from './api';

export type NodeState = 'online' | 'offline' | 'draining' | 'drained';

export interface Gpu {
    index: number;
    name: string;
    memory_total_mb?: number;
}

export interface Node {
    id: string;
    state: NodeState;
    version: string;
    public_url: string;
    upstream_url: string | null;
    max_sessions: number;
    max_sessions_per_gpu: number;
    sessions: number;
    reserved: number;
    free_slots: number;
    applications: string[];
    gpus: Gpu[];
    last_heartbeat: string | null;
    drain_deadline?: string | null;
}

/** A session in an admin's list: who created it and, when known, its players. */
export interface AdminSession extends Session {
    /** The id of its creator's token, or `anonymous`. */
    owner?: string;
    players?: number;
}

/** A title as admins see it: where it came from and whether it is approved. */
export interface AdminTitle extends Title {
    source?: 'admin' | 'node';
    approved?: boolean;
}

export type Role = 'user' | 'admin';

/** A token as listed (never its secret). API tokens have a role, node tokens may have a node. */
export interface TokenInfo {
    id: string;
    name: string;
    role?: Role | null;
    node?: string | null;
    created_at: string;
}

/** A token just minted: its secret, shown once. */
export interface CreatedToken {
    id: string;
    name: string;
    token: string;
    role?: Role | null;
    node?: string | null;
}

export interface SecondsSummary {
    count: number;
    sum: number;
}

export interface Metrics {
    at: string;
    sessions: Record<string, number>;
    nodes: Record<string, number>;
    queue_length: number;
    node_links: number;
    session_start_seconds: SecondsSummary;
    placement_seconds: SecondsSummary;
}

/** Why sessions end (EndReason in crates/protocol/src/api.rs), in the order the history lists them. */
export const END_REASONS = [
    'cancelled',
    'stopped',
    'window_end',
    'window_missed',
    'node_lost',
    'no_capacity',
    'idle',
    'empty',
    'max_duration',
    'exited',
    'crashed',
    'start_timeout',
    'spawn_failed',
    'rejected',
    'drained',
    'node_shutdown',
    'node_restart'
] as const;
export type EndReason = (typeof END_REASONS)[number];

export const LIVE_STATES = ['scheduled', 'queued', 'starting', 'ready'] as const;
