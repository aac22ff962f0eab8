// Builds the demo app (demo/) into the hub's assets (assets/demo/ at the
// repository root), which the hub embeds in its binary. The output is committed;
// the test command rebuilds it and fails if it differs, so it never goes stale.
//
//   npm run build:demo        (in clients/js)
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
const demo = path.join(pkg, 'demo');
const out = path.resolve(pkg, '..', '..', 'assets', 'demo');
const NOTE = 'Generated from clients/js/demo by `npm run build:demo` in clients/js. Do not edit.';

mkdirSync(out, { recursive: true });

await build({
  absWorkingDir: pkg,
  entryPoints: [path.join(demo, 'main.tsx')],
  outfile: path.join(out, 'demo.js'),
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  jsx: 'automatic',
  legalComments: 'none',
  banner: { js: `// ${NOTE}` },
  define: { 'process.env.NODE_ENV': '"production"' },
  // The app uses the package as any application would, by its public entry points.
  alias: {
    '@herald/client/react': './src/react/index.ts',
    '@herald/client': './src/index.ts',
  },
  logLevel: 'warning',
});

await build({
  absWorkingDir: pkg,
  entryPoints: [path.join(demo, 'demo.css')],
  outfile: path.join(out, 'demo.css'),
  minify: true,
  banner: { css: `/* ${NOTE} */` },
  logLevel: 'warning',
});

const html = readFileSync(path.join(demo, 'index.html'), 'utf8').replace(/^<!doctype html>\n/i, `<!doctype html>\n<!-- ${NOTE} -->\n`);
writeFileSync(path.join(out, 'index.html'), html);
console.log(`demo built into ${path.relative(process.cwd(), out) || out}`);
