// Shared pieces of the browser tests and benchmarks: Chromium's flags, bounded waits and log
// lines. Each test file keeps its own scenario; only what is the same everywhere lives here.

/** Chromium as root, headless, offline, with WebRTC allowed on loopback (never downloaded). */
export const CHROMIUM_ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--autoplay-policy=no-user-gesture-required'
];

/** Polls `probe` until it returns a truthy value, or throws once `timeoutMs` has passed. */
export async function waitFor(what, probe, { timeoutMs = 10_000, intervalMs = 50 } = {}) {
    const deadline = Date.now() + timeoutMs;
    let lastError;
    for (;;) {
        try {
            const value = await probe();
            if (value) return value;
        } catch (e) {
            lastError = e;
        }
        if (Date.now() >= deadline) {
            const cause = lastError ? ` (last error: ${lastError.message})` : '';
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
        }
        await new Promise((r) => setTimeout(r, intervalMs));
    }
}

export function stamp() {
    return new Date().toISOString().slice(11, 23);
}

/** One console message as a log line; the library appends a stack to every line: keep it for errors only. */
export function consoleLine(source, message) {
    const type = message.type();
    let text = message.text();
    if (type !== 'error' && type !== 'warning') text = text.replace(/\nStack:[\s\S]*$/, '');
    return `${stamp()} [${source} ${type}] ${text}`;
}
