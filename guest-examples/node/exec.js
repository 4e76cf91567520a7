// The classic child_process tutorial's exec example: three `node
// support.js i` through the shell, each child's output given to a callback.
// Run by node and, built with wasmproc-componentize-node, by `wasmproc run`
// (tests/node_compat.rs compares them).
const fs = require('fs');
const child_process = require('child_process');

for (var i = 0; i < 3; i++) {
  var workerProcess = child_process.exec('node support.js ' + i, function (error, stdout, stderr) {
    if (error) {
      console.log('Error code: ' + error.code);
      console.log('Signal received: ' + error.signal);
    }
    console.log('stdout: ' + stdout);
    console.log('stderr: ' + stderr);
  });

  workerProcess.on('exit', function (code) {
    console.log('Child process exited with exit code ' + code);
  });
}
