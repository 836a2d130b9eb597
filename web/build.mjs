// Bundles the browser code with esbuild:
// - app/ (the coordinator's web pages) into dist/app/: index.html, play.html, admin.html, api.html,
//   book.html, my.html and assets/ (catalog.js, play.js, admin.js, apiref.js, book.js, my.js,
//   app.css, console.css, pages.css and their sourcemaps). The coordinator embeds dist/app/ at
//   compile time and serves / → index.html, /play/<id> → play.html, /book/<id> → book.html,
//   /my → my.html, /admin → admin.html, /admin/api → api.html, /assets/<file> → the file; the
//   HTML refers to /assets/... by absolute path.
// - the browser test pages under e2e/pages/ into dist/e2e/.
// A file is written only when its content changed, and files no longer made are removed: the
// coordinator's build script watches dist/app, so an unchanged build must leave it untouched
// (else every `scripts/up` would recompile the coordinator).
// Usage: node build.mjs
import { build } from 'esbuild';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = dirname(fileURLToPath(import.meta.url));
const target = ['chrome110', 'firefox110', 'safari16'];

/** Every file under `dir` (absolute paths); none if it does not exist. */
async function filesUnder(dir) {
    let entries;
    try {
        entries = await readdir(dir, { withFileTypes: true });
    } catch {
        return [];
    }
    const out = [];
    for (const e of entries) {
        const path = join(dir, e.name);
        if (e.isDirectory()) out.push(...(await filesUnder(path)));
        else out.push(path);
    }
    return out;
}

/**
 * Makes `dir` hold exactly `files` (absolute path → contents): writes those that differ, removes
 * the others. Returns how many files it wrote or removed.
 */
async function sync(dir, files) {
    let changed = 0;
    for (const [path, contents] of files) {
        const bytes = Buffer.from(contents);
        const old = await readFile(path).catch(() => null);
        if (old && Buffer.compare(old, bytes) === 0) continue;
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, bytes);
        changed += 1;
    }
    for (const path of await filesUnder(dir)) {
        if (!files.has(path)) {
            await rm(path, { force: true });
            changed += 1;
        }
    }
    return changed;
}

/** esbuild's output files, in memory, as path → contents. */
const outputs = (result) => new Map(result.outputFiles.map((f) => [f.path, f.contents]));

// ---- the web pages
const appDir = join(webDir, 'app');
const appOut = join(webDir, 'dist', 'app');
const app = await build({
    entryPoints: {
        catalog: join(appDir, 'catalog.ts'),
        play: join(appDir, 'play.ts'),
        admin: join(appDir, 'admin.ts'),
        apiref: join(appDir, 'apiref.ts'),
        book: join(appDir, 'book.ts'),
        my: join(appDir, 'my.ts'),
        app: join(appDir, 'app.css'),
        pages: join(appDir, 'pages.css'),
        console: join(appDir, 'console.css')
    },
    outdir: join(appOut, 'assets'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target,
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
    write: false
});
const appFiles = outputs(app);
for (const html of ['index.html', 'play.html', 'admin.html', 'api.html', 'book.html', 'my.html']) {
    appFiles.set(join(appOut, html), await readFile(join(appDir, html)));
}
const appChanged = await sync(appOut, appFiles);
console.log(`built ${relative(webDir, appOut)} (${appChanged ? `${appChanged} files changed` : 'unchanged'})`);

// ---- the e2e test pages
const pagesDir = join(webDir, 'e2e', 'pages');
const outRoot = join(webDir, 'dist', 'e2e');

const pages = (await readdir(pagesDir, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name);

for (const page of pages) {
    const srcDir = join(pagesDir, page);
    const outDir = join(outRoot, page);
    const result = await build({
        entryPoints: [join(srcDir, 'main.ts')],
        outfile: join(outDir, 'main.js'),
        bundle: true,
        format: 'esm',
        platform: 'browser',
        target: ['chrome110'],
        sourcemap: true,
        logLevel: 'warning',
        write: false
    });
    const files = outputs(result);
    files.set(join(outDir, 'index.html'), await readFile(join(srcDir, 'index.html')));
    await sync(outDir, files);
    console.log(`built ${relative(webDir, outDir)}`);
}
