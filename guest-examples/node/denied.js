// What a Node program sees when wasmproc's policy refuses a child: run only
// by `wasmproc run` without `cat` or a shell granted (tests/node_compat.rs).
const cp = require('child_process');

const child = cp.spawn('cat', ['/etc/passwd']);
child.on('error', function (e) {
  console.log('spawn error: ' + e.code + ' ' + e.errno + ' ' + e.syscall + ' | ' + e.message);
  console.log('spawn spawnargs: ' + JSON.stringify(e.spawnargs));
});
child.on('close', function (code) {
  console.log('spawn close: ' + code);
});

try {
  cp.execFileSync('cat', ['/etc/passwd']);
} catch (e) {
  console.log('execFileSync error: ' + e.code + ' ' + e.wasmproc.code);
}

cp.execFile('cat', ['/etc/passwd'], function (err) {
  console.log('execFile error: ' + err.code);
});

cp.exec('cat /etc/passwd', function (err) {
  console.log('exec error: ' + err.code);
});

// fs is not provided yet: requiring it works, using it throws.
const fs = require('fs');
try {
  fs.readFileSync('/etc/passwd');
} catch (e) {
  console.log('fs error: ' + e.code);
}

// util.promisify(execFile) as Node gives it: a promise with the child,
// rejected with the error.
const run = require('util').promisify(cp.execFile);
const promise = run('cat', ['/etc/passwd']);
const hasChild = promise.child !== undefined;
promise.catch(function (e) {
  console.log('promisified execFile: ' + e.code + ' child ' + hasChild);
});

// A fork that is refused, with silent: true: its streams exist, and the
// refusal is an 'error' event (not a TypeError on child.stdout).
const silent = cp.fork('./not-granted.js', [], { silent: true });
silent.stdout.on('data', function () {});
silent.on('error', function (e) {
  console.log('fork error: ' + e.code + ' ' + e.syscall + ' stdout ' + (silent.stdout !== null));
});
