// Checks that a page speaks one language: the dictionaries of web/app/i18n.ts (bundled with
// esbuild, so a string added to the app is checked at once), the English fragments a Russian
// page must not show, and what a person sees on a page.
import { build } from 'esbuild';
import { join } from 'node:path';
import { WEB_DIR } from './harness.mjs';

/** The dictionaries of web/app/i18n.ts, bundled and imported here. */
export async function dictionaries() {
    const out = await build({
        entryPoints: [join(WEB_DIR, 'app', 'i18n.ts')],
        bundle: true,
        format: 'esm',
        platform: 'neutral',
        write: false,
        logLevel: 'silent'
    });
    const code = Buffer.from(out.outputFiles[0].contents).toString('base64');
    return (await import(`data:text/javascript;base64,${code}`)).messages;
}

/**
 * The English fragments a Russian page must not show: of every entry whose Russian differs, the
 * text between its {params}, trimmed, with at least two Latin letters.
 */
export function englishFragments(messages) {
    const fragments = new Set();
    for (const [key, en] of Object.entries(messages.en)) {
        if (JSON.stringify(en) === JSON.stringify(messages.ru[key])) continue;
        const forms = typeof en === 'string' ? [en] : Object.values(en);
        for (const form of forms) {
            for (const part of form.split(/\{\w+\}/)) {
                const f = part.trim().replace(/^[\s.,:;()—–-]+|[\s.,:;()—–-]+$/g, '');
                if ((f.match(/[A-Za-z]/g) ?? []).length >= 2) fragments.add(f);
            }
        }
    }
    return [...fragments];
}

/**
 * What a person sees on `page`: the text of every visible element outside translate="no", the
 * placeholders of visible fields, the options of visible selects, and the page's title.
 */
export function visibleText(page) {
    return page.evaluate(() => {
        const seen = [document.title];
        const skip = (el) => el.closest('[translate="no"]') !== null;
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            const el = n.parentElement;
            if (!el || skip(el) || !n.textContent.trim()) continue;
            if (el.closest('select')) continue; // options: below
            if (!el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
            seen.push(n.textContent.trim());
        }
        for (const el of document.querySelectorAll('input, textarea, select, button')) {
            if (skip(el) || !el.checkVisibility()) continue;
            if (el.placeholder) seen.push(el.placeholder);
            if (el.getAttribute('aria-label')) seen.push(el.getAttribute('aria-label'));
            if (el.tagName === 'SELECT') for (const o of el.options) if (!skip(o)) seen.push(o.textContent.trim());
        }
        return seen;
    });
}

/** The fragments of `english` that `texts` show as whole words. */
export function englishIn(texts, english) {
    const found = [];
    for (const f of english) {
        const escaped = f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        const re = new RegExp(`(^|[^A-Za-z])${escaped}($|[^A-Za-z])`);
        const where = texts.find((x) => re.test(x));
        if (where !== undefined) found.push(`"${f}" in "${where}"`);
    }
    return found;
}
