// Bundles the browser code with esbuild:
// - app/ (the coordinator's web pages) into dist/app/: index.html, play.html and assets/ (catalog.js,
//   play.js, app.css and their sourcemaps). The coordinator embeds dist/app/ at compile time and
//   serves / → index.html, /play/<id> → play.html, /assets/<file> → the file; the HTML refers to
//   /assets/... by absolute path.
// - the browser test pages under e2e/pages/ into dist/e2e/.
// Usage: node build.mjs
import { build } from 'esbuild';
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = dirname(fileURLToPath(import.meta.url));
const target = ['chrome110', 'firefox110', 'safari16'];

// ---- the web pages
const appDir = join(webDir, 'app');
const appOut = join(webDir, 'dist', 'app');
await rm(appOut, { recursive: true, force: true });
await mkdir(join(appOut, 'assets'), { recursive: true });
await build({
    entryPoints: {
        catalog: join(appDir, 'catalog.ts'),
        play: join(appDir, 'play.ts'),
        app: join(appDir, 'app.css')
    },
    outdir: join(appOut, 'assets'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target,
    minify: true,
    sourcemap: true,
    logLevel: 'warning'
});
for (const html of ['index.html', 'play.html']) {
    await copyFile(join(appDir, html), join(appOut, html));
}
console.log(`built ${join('dist', 'app')}`);

// ---- the e2e test pages
const pagesDir = join(webDir, 'e2e', 'pages');
const outRoot = join(webDir, 'dist', 'e2e');

const pages = (await readdir(pagesDir, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name);

for (const page of pages) {
    const srcDir = join(pagesDir, page);
    const outDir = join(outRoot, page);
    await rm(outDir, { recursive: true, force: true });
    await mkdir(outDir, { recursive: true });
    await build({
        entryPoints: [join(srcDir, 'main.ts')],
        outfile: join(outDir, 'main.js'),
        bundle: true,
        format: 'esm',
        platform: 'browser',
        target: ['chrome110'],
        sourcemap: true,
        logLevel: 'warning',
    });
    await copyFile(join(srcDir, 'index.html'), join(outDir, 'index.html'));
    console.log(`built ${join('dist', 'e2e', page)}`);
}
