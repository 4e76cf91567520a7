// Node's child_process options, results and errors, one step after the
// other (so the output is deterministic): run by node and, built with
// wasmproc-componentize-node, by `wasmproc run` with node, the shell and
// the GREETING variable granted; tests/node_compat.rs compares the two.
const cp = require('child_process');
const fs = require('fs');
const path = require('path');

const steps = [];
function step(fn) {
  steps.push(fn);
}
function next() {
  const fn = steps.shift();
  if (fn) fn(next);
}

step(function (done) {
  console.log('argv: ' + JSON.stringify(process.argv.slice(2)));
  console.log('path and fs: ' + path.join('a', '..', 'b', 'c.js') + ' ' + path.extname('x.js') + ' ' + typeof fs);
  done();
});

step(function (done) {
  const out = cp.execFileSync('node', ['-e', 'process.stdout.write("hi")'], { encoding: 'utf8' });
  console.log('execFileSync: ' + JSON.stringify(out));
  done();
});

step(function (done) {
  const out = cp.execSync('echo $((6 * 7))');
  console.log('execSync: ' + Buffer.isBuffer(out) + ' ' + out.toString().trim());
  done();
});

step(function (done) {
  const r = cp.spawnSync('node', ['-e', 'process.stdin.pipe(process.stdout); process.exitCode = 4'], { input: 'piped in' });
  console.log('spawnSync: status=' + r.status + ' signal=' + r.signal + ' stdout=' + r.stdout + ' buffer=' + Buffer.isBuffer(r.stdout));
  done();
});

step(function (done) {
  const r = cp.spawnSync('node', ['-e', 'console.log("inherited output")'], { stdio: 'inherit' });
  console.log('spawnSync inherit: status=' + r.status);
  done();
});

step(function (done) {
  try {
    cp.execFileSync('node', ['-e', 'console.error("bad"); process.exit(5)'], { stdio: 'pipe' });
  } catch (e) {
    console.log('execFileSync failed: status=' + e.status + ' signal=' + e.signal + ' stderr=' + e.stderr.toString().trim());
  }
  done();
});

step(function (done) {
  const out = cp.execFileSync('node', ['-p', 'require("path").basename(process.cwd()) + " " + process.env.GREETING'], {
    cwd: 'sub',
    env: { GREETING: 'hello' },
    encoding: 'utf8',
  });
  console.log('cwd and env: ' + out.trim());
  done();
});

step(function (done) {
  const child = cp.spawn('node', ['-e', 'let s = ""; process.stdin.on("data", (d) => (s += d)); process.stdin.on("end", () => console.log(s.toUpperCase()))']);
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', function (d) {
    out += d;
  });
  child.on('exit', function (code, signal) {
    console.log('stdin exit: ' + code + ' ' + signal);
  });
  child.on('close', function (code) {
    console.log('stdin close: ' + JSON.stringify(out) + ' code=' + code);
    done();
  });
  child.stdin.write('hello ');
  child.stdin.end('world');
});

step(function (done) {
  // A character split between two writes (and so two reads).
  const source = 'process.stdout.write(Buffer.from([0xe2, 0x82])); setTimeout(() => process.stdout.write(Buffer.from([0xac, 0x0a])), 200)';
  const child = cp.spawn('node', ['-e', source]);
  const chunks = [];
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', function (d) {
    chunks.push(d);
  });
  child.on('close', function () {
    console.log('split character: ' + JSON.stringify(chunks.join('')) + ' ' + chunks.some((c) => c.includes('\ufffd')));
    done();
  });
});

step(function (done) {
  const child = cp.spawn('node', ['-e', 'setInterval(() => {}, 1000); console.log("ready")']);
  child.stdout.once('data', function () {
    console.log('kill: ' + child.kill('SIGTERM'));
  });
  child.on('exit', function (code, signal) {
    console.log('killed: code=' + code + ' signal=' + signal + ' killed=' + child.killed);
  });
  child.on('close', function () {
    done();
  });
});

step(function (done) {
  cp.execFile('node', ['-e', 'setTimeout(() => {}, 10000)'], { timeout: 300, killSignal: 'SIGKILL' }, function (err) {
    console.log('timeout: killed=' + err.killed + ' signal=' + err.signal + ' code=' + err.code);
    done();
  });
});

step(function (done) {
  cp.execFile('node', ['-e', 'process.stdout.write("x".repeat(100))'], { maxBuffer: 10 }, function (err, stdout) {
    console.log('maxBuffer: ' + err.code + ': ' + err.message + ' (' + stdout.length + ' bytes kept)');
    done();
  });
});

step(function (done) {
  cp.execFile('node', ['-e', 'process.stdout.write("abc")'], { encoding: 'buffer' }, function (err, stdout) {
    console.log('encoding buffer: ' + err + ' ' + Buffer.isBuffer(stdout) + ' ' + stdout.toString('hex'));
    done();
  });
});

step(function (done) {
  cp.exec('node -e "setTimeout(() => {}, 10000)"', { timeout: 300 }, function (err) {
    console.log('exec timeout: killed=' + err.killed + ' signal=' + err.signal + ' code=' + err.code);
    done();
  });
});

step(function (done) {
  cp.exec('node -e "process.stdout.write(\'y\'.repeat(50))"', { maxBuffer: 8 }, function (err, stdout) {
    console.log('exec maxBuffer: ' + err.code + ': ' + err.message + ' (' + stdout.length + ' bytes kept)');
    done();
  });
});

step(function (done) {
  cp.exec('echo out; echo err >&2; exit 7', function (err, stdout, stderr) {
    console.log('exec failed: code=' + err.code + ' killed=' + err.killed + ' signal=' + err.signal + ' cmd=' + err.cmd);
    console.log('exec output: ' + JSON.stringify(stdout) + ' ' + JSON.stringify(stderr));
    done();
  });
});

step(function (done) {
  const child = cp.spawn('node', ['-e', 'process.exit(9)'], { stdio: 'ignore' });
  child.on('close', function (code) {
    console.log('ignore: ' + child.stdout + ' ' + child.stderr + ' code=' + code);
    done();
  });
});

step(function (done) {
  const child = cp.spawn('node', ['-e', ''], { cwd: 'no-such-dir' });
  child.on('error', function (e) {
    console.log('missing cwd: ' + e.code + ' ' + e.errno + ' ' + e.syscall + ' ' + child.pid);
  });
  child.on('close', function (code) {
    console.log('missing cwd close: ' + code);
    done();
  });
});

step(function (done) {
  const child = cp.spawn('node', ['-e', 'setTimeout(() => {}, 10000)'], { timeout: 300 });
  child.on('exit', function (code, signal) {
    console.log('spawn timeout: code=' + code + ' signal=' + signal + ' killed=' + child.killed);
  });
  child.on('close', function () {
    done();
  });
});

step(function (done) {
  cp.exec('echo through a named shell', { shell: '/bin/sh' }, function (err, stdout) {
    console.log('exec shell: ' + err + ' ' + JSON.stringify(stdout));
    done();
  });
});

step(function (done) {
  // 589 kB of text, decoded (by the engine's TextDecoder, not a JS loop),
  // and the same bytes as a Buffer.
  cp.exec('seq 1 100000', function (err, stdout) {
    const buf = Buffer.from(stdout);
    console.log('exec large: ' + err + ' ' + stdout.length + ' ' + JSON.stringify(stdout.slice(-7)) + ' ' + JSON.stringify(buf.toString('utf8', 0, 6)));
    done();
  });
});

step(function (done) {
  const run = require('util').promisify(cp.exec);
  const promise = run('echo promised; echo warned >&2');
  console.log('promisify exec: child ' + (typeof promise.child.on));
  promise.then(function (r) {
    console.log('promisify exec: ' + JSON.stringify(r));
    return require('util').promisify(cp.execFile)('node', ['-e', 'console.error("no"); process.exit(3)']);
  }).catch(function (e) {
    console.log('promisify execFile rejected: code=' + e.code + ' stdout=' + JSON.stringify(e.stdout) + ' stderr=' + JSON.stringify(e.stderr));
    done();
  });
});

step(function (done) {
  setTimeout(function () {
    console.log('timers run in the loop');
    process.exitCode = 2;
    done();
  }, 20);
});

next();
