// Build the front-end of `ex4d app` / `ex4d view` into ../ex4d/app/static/ (served by the Python server).
// Usage: node build.mjs [--outdir DIR]   (scripts/setup_app.sh runs it after `npm ci`)
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf('--outdir');
const outdir = i > 0 ? resolve(process.argv[i + 1]) : join(here, '..', 'ex4d', 'app', 'static');
mkdirSync(outdir, { recursive: true });
for (const f of readdirSync(outdir)) if (/^chunk-.*\.(js|txt)$/.test(f)) rmSync(join(outdir, f)); // stale chunks

await build({
  entryPoints: { app: join(here, 'src', 'app.js'), view: join(here, 'src', 'view.js') },
  bundle: true,
  format: 'esm',
  splitting: true,          // three.js and the shared scene code go into one shared chunk
  chunkNames: 'chunk-[hash]',
  minify: true,
  sourcemap: false,
  target: ['chrome110', 'firefox115', 'safari16'],
  outdir,
  legalComments: 'linked', // three.js's licence travels with the bundle
  logLevel: 'warning',
});
for (const f of ['app.html', 'view.html', 'style.css']) copyFileSync(join(here, 'src', f), join(outdir, f));
console.log(`built the ex4d front-end into ${outdir}`);
