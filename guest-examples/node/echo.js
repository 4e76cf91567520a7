// Forked by disconnect.js (under wasmproc, the worker component built from
// this file): answers each message with { echo: message }; when the parent
// disconnects, sets exit code 4 and ends (nothing else keeps it alive).
// wasmproc: worker
process.on('message', function (message) {
  process.send({ echo: message });
});
process.on('disconnect', function () {
  process.exitCode = 4;
});
