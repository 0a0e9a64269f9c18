// Builds the component into build/ (index.html, scatter.js, scatter.css) and records the
// SHA-256 of its sources in build/SOURCES.sha256, which tests/test_scatter_encoding.py checks
// against the sources in the repository (the bundle ships built; npm is needed only to change it).
// BUILD_OUT=folder builds elsewhere (the test that rebuilds and compares the bundle uses it).
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

const here = new URL('.', import.meta.url).pathname;
const out = process.env.BUILD_OUT || join(here, 'build');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  legalComments: 'eof',
  outfile: join(out, 'scatter.js'),
  logLevel: 'warning',
});
copyFileSync(join(here, 'src', 'index.html'), join(out, 'index.html'));
copyFileSync(join(here, 'src', 'scatter.css'), join(out, 'scatter.css'));

// The same list and hash as ui/scatter/bundle.py: every file of src/, then the build inputs.
const sources = [...readdirSync(join(here, 'src')).sort().map((name) => `src/${name}`),
  'build.mjs', 'package.json', 'package-lock.json'];
const hash = createHash('sha256');
for (const name of sources) {
  hash.update(`${name}\n`);
  hash.update(readFileSync(join(here, name)));
}
writeFileSync(join(out, 'SOURCES.sha256'), `${hash.digest('hex')}\n`);
