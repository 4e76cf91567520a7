#!/usr/bin/env node
// wasmproc-componentize-node SCRIPT -o OUT.wasm [--worker] [--wit DIR]
//
// Builds a CommonJS Node script (require('child_process'), console.log,
// process.argv; with --worker also process.send / process.on('message'))
// into a wasi:cli command component for wasmproc.
//
// Why these steps: componentize-js takes one ES module whose top-level code
// runs while the component is built (it is snapshotted), so the script is
// bundled by esbuild as a CommonJS module that is only *required* inside
// wasi:cli `run` (its top-level code then runs at run time, with the
// arguments and environment of the run), next to this package's runtime
// (Node's globals, child_process, the event loop). `child_process`,
// `events`, `buffer`, `util`, `string_decoder` and `path` (also as
// `node:...`) resolve to this
// package and its dependencies, `fs`, `os` and `net` to modules that throw
// when used (so a script that only requires them builds); the wasi and
// wasmproc imports stay imports.

import { componentize } from '@bytecodealliance/componentize-js';
import * as esbuild from 'esbuild';
import { createRequire } from 'node:module';
import { realpathSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const USAGE = 'usage: wasmproc-componentize-node SCRIPT -o OUT.wasm [--worker] [--wit DIR]';

function parseArgs(argv) {
  const o = { worker: false, wit: 'wit' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o' || a === '--out') o.out = argv[++i];
    else if (a === '--wit') o.wit = argv[++i];
    else if (a === '--worker') o.worker = true;
    else if (a === '-h' || a === '--help') o.help = true;
    else if (!a.startsWith('-') && o.script === undefined) o.script = a;
    else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  if (!o.help && (o.script === undefined || o.out === undefined)) throw new Error(USAGE);
  return o;
}

const lib = join(dirname(fileURLToPath(import.meta.url)), '..', 'lib');
const require = createRequire(import.meta.url);

/** Where `name` (a dependency of this package) resolves from here. */
function dep(name) {
  return require.resolve(`${name}/`);
}

export async function build({ script, out, worker = false, wit = 'wit' }) {
  const work = await mkdtemp(join(tmpdir(), 'wasmproc-componentize-node-'));
  try {
    const entry = join(work, 'entry.js');
    const scriptPath = resolve(script);
    await writeFile(
      entry,
      [
        `import { main } from ${JSON.stringify(join(lib, 'runtime.js'))};`,
        worker ? `import * as parent from ${JSON.stringify(join(lib, '_bindings_worker.js'))};` : 'const parent = undefined;',
        'export const run = {',
        '  run() {',
        `    return main(${JSON.stringify(basename(scriptPath))}, () => require(${JSON.stringify(scriptPath)}), parent);`,
        '  },',
        '};',
        '',
      ].join('\n'),
    );
    const childProcess = join(lib, 'child_process.js');
    const alias = {
      child_process: childProcess,
      'node:child_process': childProcess,
      events: dep('events'),
      'node:events': dep('events'),
      buffer: dep('buffer'),
      'node:buffer': dep('buffer'),
      util: dep('util'),
      'node:util': dep('util'),
      string_decoder: dep('string_decoder'),
      'node:string_decoder': dep('string_decoder'),
      path: dep('path-browserify'),
      'node:path': dep('path-browserify'),
    };
    for (const name of ['fs', 'os', 'net']) {
      alias[name] = join(lib, `unsupported_${name}.cjs`);
      alias[`node:${name}`] = alias[name];
    }
    const bundle = join(work, 'bundle.js');
    await esbuild.build({
      entryPoints: [entry],
      outfile: bundle,
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      mainFields: ['browser', 'module', 'main'],
      external: ['wasi:*', 'wasmproc:*'],
      alias,
      // util reads process.env.NODE_DEBUG when it loads, which is while
      // the component is built: no process exists yet.
      define: { 'process.env.NODE_DEBUG': 'undefined' },
      logLevel: 'warning',
    });
    const { component } = await componentize({
      sourcePath: bundle,
      witPath: resolve(wit),
      worldName: worker ? 'wasmproc:process/worker-command' : 'wasmproc:process/command',
      // Without these the component imports wasi:http, which wasmproc
      // does not provide.
      disableFeatures: ['http', 'fetch-event'],
    });
    await writeFile(out, component);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(e.message);
    process.exit(2);
  }
  if (opts.help) {
    console.log(USAGE);
    process.exit(0);
  }
  build(opts).catch((e) => {
    console.error(`wasmproc-componentize-node: ${e.stack ?? e}`);
    process.exit(1);
  });
}
