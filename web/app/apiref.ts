// The API reference (`/admin/api`): the coordinator's OpenAPI document (`/api/v1/openapi.json`)
// as a page: each path and method with who may call it, its parameters, request body and
// responses, then every schema with its fields. Nothing is fetched from anywhere else. The
// page's own words come from i18n.ts; the summaries are the document's (English).
import { applyTranslations, getLang, languageSwitch, onLangChange, t, type Key } from './i18n';

const DOC_URL = '/api/v1/openapi.json';

interface Schema {
    type?: string | string[];
    enum?: unknown[];
    $ref?: string;
    items?: Schema;
    oneOf?: Schema[];
    properties?: Record<string, Schema>;
    required?: string[];
    description?: string;
    format?: string;
    minimum?: number;
    maximum?: number;
    additionalProperties?: Schema | boolean;
}
interface Parameter {
    name: string;
    in: string;
    required?: boolean;
    description?: string;
    schema?: Schema;
}
interface Operation {
    summary?: string;
    security?: Array<Record<string, string[]>>;
    parameters?: Parameter[];
    requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
    responses?: Record<string, { description?: string; content?: Record<string, { schema?: Schema }> }>;
}
interface Document {
    info?: { title?: string; version?: string; description?: string };
    paths?: Record<string, Record<string, Operation>>;
    components?: { schemas?: Record<string, Schema> };
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Array<Node | string | null>): HTMLElementTagNameMap[K] {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    for (const c of children) if (c !== null) el.append(c);
    return el;
}
const tx = (tag: keyof HTMLElementTagNameMap, key: Key, attrs: Record<string, string> = {}): HTMLElement => {
    const el = h(tag, { ...attrs, 'data-i18n': key });
    el.textContent = t(key);
    return el;
};

/** A schema in one line: `string`, `integer ≥ 1`, `Session[]`, `"a" | "b"`, with links to schemas. */
function typeOf(s: Schema | undefined): Node {
    const out = h('span', { class: 'type', translate: 'no' });
    if (!s) return out;
    if (s.$ref) {
        const name = s.$ref.split('/').pop() ?? s.$ref;
        out.append(h('a', { href: `#schema-${name}` }, name));
        return out;
    }
    if (s.oneOf) {
        s.oneOf.forEach((o, i) => {
            if (i) out.append(' | ');
            out.append(typeOf(o));
        });
        return out;
    }
    if (s.enum) {
        out.append(s.enum.map((v) => JSON.stringify(v)).join(' | '));
        return out;
    }
    const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
    if (types.includes('array')) {
        out.append(typeOf(s.items), '[]');
        return out;
    }
    let text = types.join(' | ') || 'any';
    if (s.format) text += ` (${s.format})`;
    if (s.minimum !== undefined) text += ` ≥ ${s.minimum}`;
    if (s.maximum !== undefined) text += ` ≤ ${s.maximum}`;
    out.append(text);
    if (s.additionalProperties && typeof s.additionalProperties === 'object') out.append(' → ', typeOf(s.additionalProperties));
    return out;
}

function accessKey(op: Operation): Key {
    const sec = op.security;
    if (!sec || sec.length === 0) return 'apiref.public';
    if (sec.some((r) => Object.keys(r).length === 0)) return 'apiref.anyone';
    if (sec.some((r) => (r.bearer ?? []).includes('admin'))) return 'apiref.admin';
    return 'apiref.user';
}

function renderOperation(path: string, method: string, op: Operation): HTMLElement {
    const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, '-')}`;
    const head = h(
        'summary',
        {},
        h('span', { class: `method ${method}`, translate: 'no' }, method.toUpperCase()),
        h('code', { class: 'path', translate: 'no' }, path),
        h('span', { class: 'summary', translate: 'no' }, op.summary ?? '')
    );
    const body = h('div', { class: 'op-body' });
    body.append(h('p', {}, tx('strong', 'apiref.access'), ': ', tx('span', accessKey(op))));
    if (op.parameters?.length) {
        const rows = op.parameters.map((p) =>
            h(
                'tr',
                {},
                h('td', {}, h('code', { translate: 'no' }, p.name)),
                h('td', {}, p.in === 'path' || p.in === 'query' ? tx('span', p.in === 'path' ? 'apiref.in.path' : 'apiref.in.query') : h('span', { translate: 'no' }, p.in)),
                h('td', {}, typeOf(p.schema)),
                h('td', {}, tx('span', p.required ? 'apiref.yes' : 'apiref.no')),
                h('td', { translate: 'no' }, p.description ?? '')
            )
        );
        body.append(
            tx('h4', 'apiref.parameters'),
            h(
                'div',
                { class: 'table-wrap' },
                h(
                    'table',
                    {},
                    h('thead', {}, h('tr', {}, ...(['apiref.col.name', 'apiref.col.in', 'apiref.col.type', 'apiref.col.required', 'apiref.col.description'] as Key[]).map((k) => tx('th', k)))),
                    h('tbody', {}, ...rows)
                )
            )
        );
    }
    const reqSchema = op.requestBody?.content?.['application/json']?.schema;
    if (reqSchema) {
        body.append(tx('h4', 'apiref.body'), h('p', {}, h('code', { translate: 'no' }, 'application/json'), ' ', typeOf(reqSchema), op.requestBody?.required ? '' : ' ?'));
    }
    if (op.responses) {
        const rows = Object.entries(op.responses).map(([status, r]) => {
            const schema = r.content ? Object.values(r.content)[0]?.schema : undefined;
            return h('tr', {}, h('td', {}, h('code', { translate: 'no' }, status)), h('td', { translate: 'no' }, schema ? typeOf(schema) : r.description ?? ''));
        });
        body.append(
            tx('h4', 'apiref.responses'),
            h(
                'div',
                { class: 'table-wrap' },
                h('table', {}, h('thead', {}, h('tr', {}, tx('th', 'apiref.col.status'), tx('th', 'apiref.col.type'))), h('tbody', {}, ...rows))
            )
        );
    }
    return h('details', { class: 'op panel-box', id, 'data-testid': `op-${method}-${path}` }, head, body);
}

function renderSchema(name: string, s: Schema): HTMLElement {
    const box = h('section', { class: 'schema panel-box', id: `schema-${name}`, 'data-testid': `schema-${name}` }, h('h3', { translate: 'no' }, name));
    if (s.properties) {
        const required = new Set(s.required ?? []);
        const rows = Object.entries(s.properties).map(([field, fs]) =>
            h(
                'tr',
                {},
                h('td', {}, h('code', { translate: 'no' }, field)),
                h('td', {}, typeOf(fs)),
                h('td', {}, tx('span', required.has(field) ? 'apiref.yes' : 'apiref.no')),
                h('td', { translate: 'no' }, fs.description ?? '')
            )
        );
        box.append(
            h(
                'div',
                { class: 'table-wrap' },
                h(
                    'table',
                    {},
                    h('thead', {}, h('tr', {}, ...(['apiref.col.name', 'apiref.col.type', 'apiref.col.required', 'apiref.col.description'] as Key[]).map((k) => tx('th', k)))),
                    h('tbody', {}, ...rows)
                )
            )
        );
    } else {
        box.append(h('p', {}, typeOf(s)));
    }
    return box;
}

async function main(): Promise<void> {
    const root = document.getElementById('app') as HTMLElement;
    const status = tx('p', 'apiref.loading', { class: 'notice', role: 'status', 'data-testid': 'apiref-status' });
    const lead = h('p', { class: 'lead' });
    const drawLead = (): void => {
        lead.textContent = t('apiref.lead', { url: DOC_URL });
    };
    drawLead();
    const content = h('div', { 'data-testid': 'apiref' });
    root.append(
        h(
            'header',
            { class: 'topbar' },
            h('a', { class: 'brand', href: '/' }, 'p', h('span', {}, 'x'), 's'),
            tx('span', 'apiref.heading', { class: 'page-name' }),
            h('div', { class: 'spacer' }),
            tx('a', 'apiref.back', { href: '/admin', class: 'quiet' }),
            languageSwitch()
        ),
        h('main', { class: 'admin-main apiref' }, tx('h1', 'apiref.heading'), lead, status, content)
    );
    onLangChange(() => {
        applyTranslations(document);
        document.title = t('apiref.pageTitle');
        drawLead();
    });
    document.title = t('apiref.pageTitle');
    document.documentElement.lang = getLang();

    let doc: Document;
    try {
        const r = await fetch(DOC_URL, { headers: { Accept: 'application/json' }, cache: 'no-store' });
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        doc = (await r.json()) as Document;
    } catch (e) {
        status.removeAttribute('data-i18n');
        status.classList.add('error');
        status.textContent = t('apiref.failed', { message: e instanceof Error ? e.message : String(e) });
        return;
    }
    status.hidden = true;
    if (doc.info) {
        content.append(h('p', { class: 'muted', translate: 'no' }, `${doc.info.title ?? ''} ${doc.info.version ?? ''} — ${doc.info.description ?? ''}`));
    }
    content.append(tx('h2', 'apiref.endpoints'));
    for (const [path, ops] of Object.entries(doc.paths ?? {})) {
        for (const [method, op] of Object.entries(ops)) content.append(renderOperation(path, method, op));
    }
    content.append(tx('h2', 'apiref.schemas'));
    for (const [name, s] of Object.entries(doc.components?.schemas ?? {})) content.append(renderSchema(name, s));
    document.body.dataset.loaded = 'true';
    // Opened at an anchor (a schema link from elsewhere): go there now that it exists.
    if (window.location.hash) document.getElementById(window.location.hash.slice(1))?.scrollIntoView();
}

void main();
