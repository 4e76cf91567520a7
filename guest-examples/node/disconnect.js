// fork's disconnect() from the parent's side: the worker (echo.js) answers
// each message; after the first answer the parent disconnects, so the
// worker's channel ends too, its 'disconnect' handler sets its exit code 4
// and, nothing else keeping it alive, it exits.
const child_process = require('child_process');

const worker = child_process.fork('./echo.js'); // as Node resolves it: from the cwd
worker.on('message', function (message) {
  console.log('parent got ' + JSON.stringify(message));
  worker.disconnect();
  console.log('connected after disconnect(): ' + worker.connected);
  worker.send({ late: true }, function (err) {
    console.log('send after disconnect: ' + (err && err.code));
  });
});
worker.on('disconnect', function () {
  console.log('parent disconnect event');
});
worker.on('exit', function (code, signal) {
  console.log('worker exited: ' + code + ' ' + signal);
});
worker.send({ n: 1 });
