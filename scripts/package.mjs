// The npm package's finishing step after `wasm-pack build` (run by
// scripts/build): wasm-pack writes package.json from Cargo.toml, and this adds
// what it cannot say — the `exports` map, the files with side effects (none:
// importing the module only defines functions; `init()` loads the wasm), no
// `repository` while the project has no public one — and replaces the
// repository's README with the package's own (npm/README.md).
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const dir = resolve(root, process.argv[2] ?? 'pkg');
const file = join(dir, 'package.json');
const manifest = JSON.parse(readFileSync(file, 'utf8'));
const main = manifest.module ?? manifest.main;
const types = manifest.types;
const wasm = manifest.files.find((name) => name.endsWith('.wasm'));
manifest.exports = {
  '.': { types: `./${types}`, default: `./${main}` },
  [`./${wasm}`]: `./${wasm}`,
  './package.json': './package.json',
};
manifest.sideEffects = false;
delete manifest.repository;
manifest.keywords = ['offline-first', 'sync', 'indexeddb', 'websocket', 'wasm', 'thoonk', 'redis'];
if (!manifest.files.includes('README.md')) manifest.files.push('README.md');
writeFileSync(file, `${JSON.stringify(manifest, null, 2)}\n`);
copyFileSync(join(root, 'npm', 'README.md'), join(dir, 'README.md'));
