// The tutorial's support.js: run by node (exec.js, spawn.js) and, built as
// a wasmproc worker component, forked by fork.js (a forked worker answers
// the message it gets and disconnects). Child 2 complains on stderr and
// exits with 3.
// wasmproc: worker
const i = Number(process.argv[2]);
console.log('Child Process ' + i + ' executed.');
if (i === 2) {
  console.error('Child Process ' + i + ' complains.');
  process.exitCode = 3;
}
if (process.send) {
  process.on('message', function (message) {
    process.send({ child: i, got: message });
    process.disconnect();
  });
}
