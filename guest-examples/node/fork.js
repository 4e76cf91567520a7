// The classic child_process tutorial's fork example: three support.js
// workers (under wasmproc, the worker component built from support.js),
// each sent a message it answers.
const fs = require('fs');
const child_process = require('child_process');

for (var i = 0; i < 3; i++) {
  var worker_process = child_process.fork('support.js', [i]);

  worker_process.on('message', function (message) {
    console.log('message from child: ' + JSON.stringify(message));
  });

  worker_process.on('close', function (code) {
    console.log('child process exited with code ' + code);
  });

  worker_process.send({ hello: i });
}
