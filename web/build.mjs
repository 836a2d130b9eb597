// Bundles the browser test pages under e2e/pages/ into dist/e2e/.
// Usage: node build.mjs
import { build } from 'esbuild';
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const webDir = dirname(fileURLToPath(import.meta.url));
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
